"""Apply a payload as a stream: bounded memory, every byte checked.

The payload is read front to back (it may come straight from the network); the source image
is read by seeking; output is written sequentially. Memory is one operation's data plus its
source window and output — never the image. Each operation's source bytes are checked against
their sha256 before use (a wrong or bit-rotted source raises ``SourceMismatchError``, so the
caller can fall back to the full image), and its output after; the whole output is checked
against the header's sha256 at the end. On any error nothing claims the output is complete:
callers write to a slot marked bad, or to a temporary file they discard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO, Protocol

from ota_client.payload import bsdiff_data
from ota_client.payload.codecs import decompress
from ota_client.payload.format import (
    HEADER,
    OP,
    Header,
    Op,
    OpType,
    PayloadFormatError,
    SourceMismatchError,
    parse_header,
    parse_op,
)

Progress = Callable[[int, int], None]  # (bytes written, total)


class Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


def read_exact(stream: BinaryIO, length: int, what: str) -> bytes:
    chunks = []
    remaining = length
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise PayloadFormatError(f"truncated payload (in {what})")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_header(payload: BinaryIO) -> Header:
    return parse_header(read_exact(payload, HEADER.size, "the header"))


def _source_bytes(source: BinaryIO, op: Op) -> bytes:
    source.seek(op.src_offset)
    data = source.read(op.src_length)
    if len(data) != op.src_length:
        raise SourceMismatchError("the source image is shorter than the payload expects")
    if hashlib.sha256(data).digest() != op.src_sha256:
        raise SourceMismatchError(
            f"source bytes at {op.src_offset} differ from what the delta was made from"
        )
    return data


def run_op(op: Op, data: bytes, source: BinaryIO | None) -> bytes:
    """The bytes one operation writes (its output hash is checked by the caller)."""
    if op.type is OpType.ZERO:
        return bytes(op.dst_length)
    if op.type is OpType.REPLACE:
        return decompress(op.codec, data, op.dst_length)
    assert source is not None  # parse_op refuses source ops in full payloads
    window = _source_bytes(source, op)
    if op.type is OpType.SOURCE_COPY:
        return window
    return bsdiff_data.patch(
        window, bsdiff_data.unpack(op.codec, data, op.dst_length), op.dst_length
    )


def apply_payload(
    payload: BinaryIO,
    output: Writer,
    source: BinaryIO | None = None,
    *,
    expect_size: int | None = None,
    expect_sha256: bytes | None = None,
    progress: Progress | None = None,
) -> Header:
    """Apply ``payload`` to ``output`` (and ``source`` for a delta). Returns the header."""
    header = read_header(payload)
    if expect_size is not None and header.target_size != expect_size:
        raise PayloadFormatError(
            f"payload builds a {header.target_size}-byte image, expected {expect_size}"
        )
    if expect_sha256 is not None and header.target_sha256 != expect_sha256:
        raise PayloadFormatError("payload builds a different image than expected")
    if header.is_delta:
        if source is None:
            raise SourceMismatchError("this payload is a delta and needs a source image")
        size = source.seek(0, 2)
        if size != header.source_size:
            raise SourceMismatchError(
                f"the source image is {size} bytes, the delta was made from {header.source_size}"
            )
    whole = hashlib.sha256()
    offset = 0
    for index in range(header.op_count):
        op = parse_op(read_exact(payload, OP.size, f"operation {index}"), header, offset)
        data = read_exact(payload, op.data_length, f"the data of operation {index}")
        out = run_op(op, data, source if header.is_delta else None)
        # A copy whose source hash is its output hash was checked when it was read.
        copied = op.type is OpType.SOURCE_COPY and op.src_sha256 == op.dst_sha256
        if not copied and hashlib.sha256(out).digest() != op.dst_sha256:
            raise PayloadFormatError(f"operation {index} produced the wrong bytes")
        output.write(out)
        whole.update(out)
        offset += op.dst_length
        if progress is not None:
            progress(offset, header.target_size)
    if offset != header.target_size:
        raise PayloadFormatError("operations do not cover the whole image")
    if payload.read(1):
        raise PayloadFormatError("unexpected data after the last operation")
    if whole.digest() != header.target_sha256:
        raise PayloadFormatError("the image built does not match the payload's hash")
    return header
