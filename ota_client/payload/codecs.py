"""Decompression with hard limits: output never exceeds what the operation declares, and the
decoder's memory is capped (xz dictionaries, zstd windows), whatever the data claims.

Every codec decodes as a stream into at most ``length + 1`` bytes and then stops: the data
cannot make us allocate more than the operation declares, however large the frame is or
claims to be. (python-zstandard's one-shot ``decompress`` trusts a frame header's content
size over ``max_output_size``, so it is not used.) Trailing bytes after the data, a second
frame or a truncated one are errors: an operation's data is exactly one encoding.
"""

from __future__ import annotations

import lzma

import zstandard

from ota_client.payload.format import Codec, PayloadFormatError

MAX_WINDOW = 1 << 24  # zstd window / xz dictionary a payload may ask for (16 MiB)
XZ_MEMLIMIT = MAX_WINDOW + (8 << 20)
_READ = 1 << 20  # zstd output per read call


def _zstd(data: bytes, length: int) -> bytes:
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    chunks: list[bytes] = []
    size = 0
    try:
        with dctx.stream_reader(data, read_across_frames=True, closefd=False) as reader:
            while size <= length:
                chunk = reader.read(min(_READ, length + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except zstandard.ZstdError as e:
        raise PayloadFormatError(f"corrupt zstd data: {str(e)[:200]}") from None
    if size > length:
        raise PayloadFormatError(f"zstd data decodes to more than the {length} bytes declared")
    return b"".join(chunks)


def _xz(data: bytes, length: int) -> bytes:
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
    try:
        out = decoder.decompress(data, max_length=length + 1)
    except lzma.LZMAError as e:
        raise PayloadFormatError(f"corrupt xz data: {str(e)[:200]}") from None
    if len(out) > length:
        raise PayloadFormatError(f"xz data decodes to more than the {length} bytes declared")
    if not decoder.eof or decoder.unused_data:
        raise PayloadFormatError("xz data does not end where the operation says")
    return out


def decompress(codec: Codec, data: bytes, length: int) -> bytes:
    """Decode ``data`` to exactly ``length`` bytes, or raise PayloadFormatError."""
    if codec is Codec.NONE:
        out = data
    elif codec is Codec.ZSTD:
        out = _zstd(data, length)
    elif codec is Codec.XZ:
        out = _xz(data, length)
    else:  # pragma: no cover - Codec is closed
        raise PayloadFormatError(f"unknown codec {codec}")
    if len(out) != length:
        raise PayloadFormatError(f"data decodes to {len(out)} bytes, expected {length}")
    return out
