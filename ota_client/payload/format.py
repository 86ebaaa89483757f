"""Payload format, version 1: a header, then operations each followed by its data (pure).

    header  128 bytes  magic "OTAPAYLD", version, chunk size, op count, target size and sha256,
                       source size and sha256 (zero for a full-image payload)
    op      96 bytes   type, codec, data length, destination extent, source extent,
                       sha256 of the source bytes it reads, sha256 of the bytes it writes
    data    op.data_length bytes, then the next op

Operations cover the target from offset 0 to its end, in order, without gaps — so a payload
streams straight from the network into a slot with memory bounded by one operation. Every
field is checked against hard caps *before* anything is allocated or read: a hostile or
corrupted payload gets a ``PayloadFormatError``, never a huge allocation or a write outside
the image. This module only parses and encodes; ``apply`` does the I/O.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = b"OTAPAYLD"
VERSION = 1
HEADER = struct.Struct(">8sHHIIIQ32sQ32s24s")
OP = struct.Struct(">BBHIQIIQ32s32s")
assert HEADER.size == 128 and OP.size == 96

ZERO_HASH = bytes(32)
MAX_TARGET_SIZE = 1 << 40  # 1 TiB
MAX_OP_LENGTH = 64 << 20  # bytes one operation may write
MAX_SOURCE_WINDOW = 64 << 20  # bytes one operation may read from the source
MAX_OP_DATA = MAX_OP_LENGTH + (1 << 20)  # encoded data of one op (incompressible + framing)


class PayloadError(Exception):
    """A payload cannot be applied."""


class PayloadFormatError(PayloadError, ValueError):
    """The payload is malformed, truncated, hostile or from an unknown version (bad data)."""


class SourceMismatchError(PayloadError):
    """The source image is not the one the delta was made from: fall back to the full image."""


class OpType(enum.IntEnum):
    ZERO = 0
    REPLACE = 1
    SOURCE_COPY = 2
    SOURCE_BSDIFF = 3


class Codec(enum.IntEnum):
    NONE = 0
    ZSTD = 1
    XZ = 2


NEEDS_SOURCE = {OpType.SOURCE_COPY, OpType.SOURCE_BSDIFF}


@dataclass(frozen=True)
class Header:
    chunk_size: int
    op_count: int
    target_size: int
    target_sha256: bytes
    source_size: int = 0
    source_sha256: bytes = ZERO_HASH
    version: int = VERSION

    @property
    def is_delta(self) -> bool:
        return self.source_sha256 != ZERO_HASH

    def encode(self) -> bytes:
        return HEADER.pack(
            MAGIC,
            self.version,
            0,
            self.chunk_size,
            self.op_count,
            0,
            self.target_size,
            self.target_sha256,
            self.source_size,
            self.source_sha256,
            bytes(24),
        )


@dataclass(frozen=True)
class Op:
    type: OpType
    dst_offset: int
    dst_length: int
    dst_sha256: bytes
    codec: Codec = Codec.NONE
    data_length: int = 0
    src_offset: int = 0
    src_length: int = 0
    src_sha256: bytes = ZERO_HASH

    def encode(self) -> bytes:
        return OP.pack(
            self.type,
            self.codec,
            0,
            self.data_length,
            self.dst_offset,
            self.dst_length,
            self.src_length,
            self.src_offset,
            self.src_sha256,
            self.dst_sha256,
        )


def parse_header(raw: bytes) -> Header:
    if len(raw) != HEADER.size:
        raise PayloadFormatError("truncated payload header")
    magic, version, flags, chunk, count, reserved, tsize, thash, ssize, shash, tail = HEADER.unpack(
        raw
    )
    if magic != MAGIC:
        raise PayloadFormatError("not a payload (bad magic)")
    if version > VERSION:
        raise PayloadFormatError(
            f"payload format version {version} is newer than this client supports ({VERSION})"
        )
    if version < 1 or flags or reserved or any(tail):
        raise PayloadFormatError("malformed payload header (reserved fields are set)")
    if tsize > MAX_TARGET_SIZE or ssize > MAX_TARGET_SIZE:
        raise PayloadFormatError("payload declares an absurd image size")
    if not 0 < chunk <= MAX_OP_LENGTH:
        raise PayloadFormatError(f"payload chunk size {chunk} is out of range")
    if (tsize == 0) != (count == 0) or count > tsize:
        raise PayloadFormatError(f"{count} operations cannot cover a {tsize}-byte image")
    if (shash == ZERO_HASH) != (ssize == 0):
        raise PayloadFormatError("payload source size and hash disagree")
    return Header(chunk, count, tsize, thash, ssize, shash, version)


def parse_op(raw: bytes, header: Header, offset: int) -> Op:
    """Decode and check one op record; ``offset`` is where the previous op ended."""
    if len(raw) != OP.size:
        raise PayloadFormatError("truncated payload (in an operation record)")
    kind, codec, reserved, dlen, doff, dst_len, src_len, src_off, src_hash, dst_hash = OP.unpack(
        raw
    )
    try:
        op_type, op_codec = OpType(kind), Codec(codec)
    except ValueError:
        raise PayloadFormatError(f"unknown operation {kind} or codec {codec}") from None
    if reserved:
        raise PayloadFormatError("malformed operation (reserved field set)")
    if doff != offset:
        raise PayloadFormatError(f"operation writes at {doff}, expected {offset}")
    if not 0 < dst_len <= min(header.chunk_size, MAX_OP_LENGTH):
        raise PayloadFormatError(f"operation length {dst_len} is out of range")
    if doff + dst_len > header.target_size:
        raise PayloadFormatError("operation writes past the end of the image")
    if dlen > MAX_OP_DATA:
        raise PayloadFormatError(f"operation data of {dlen} bytes is out of range")
    if op_type in NEEDS_SOURCE:
        if not header.is_delta:
            raise PayloadFormatError("a full-image payload cannot read a source")
        if not 0 < src_len <= MAX_SOURCE_WINDOW or src_off + src_len > header.source_size:
            raise PayloadFormatError("operation reads outside the source image")
    elif src_len or src_off or src_hash != ZERO_HASH:
        raise PayloadFormatError("operation has a source extent it cannot use")
    if op_type in (OpType.ZERO, OpType.SOURCE_COPY) and (dlen or codec):
        raise PayloadFormatError(f"{op_type.name} carries no data")
    if op_type is OpType.SOURCE_COPY and src_len != dst_len:
        raise PayloadFormatError("SOURCE_COPY must copy exactly what it writes")
    if op_type is OpType.REPLACE and op_codec is Codec.NONE and dlen != dst_len:
        raise PayloadFormatError("uncompressed REPLACE data must be as long as it writes")
    if op_type in (OpType.REPLACE, OpType.SOURCE_BSDIFF) and dlen == 0:
        raise PayloadFormatError(f"{op_type.name} without data")
    return Op(op_type, doff, dst_len, dst_hash, op_codec, dlen, src_off, src_len, src_hash)
