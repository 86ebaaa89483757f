"""Decompression with hard limits: output never exceeds what the operation declares, and the
decoder's memory is capped (xz dictionaries, zstd windows), whatever the data claims."""

from __future__ import annotations

import lzma

import zstandard

from ota_client.payload.format import Codec, PayloadFormatError

MAX_WINDOW = 1 << 24  # zstd window / xz dictionary a payload may ask for (16 MiB)
XZ_MEMLIMIT = MAX_WINDOW + (8 << 20)


def decompress(codec: Codec, data: bytes, length: int) -> bytes:
    """Decode ``data`` to exactly ``length`` bytes, or raise PayloadFormatError."""
    if codec is Codec.NONE:
        out = data
    elif codec is Codec.ZSTD:
        try:
            dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
            out = dctx.decompress(data, max_output_size=length)
        except zstandard.ZstdError as e:
            raise PayloadFormatError(f"corrupt zstd data: {e}") from None
    elif codec is Codec.XZ:
        decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
        try:
            out = decoder.decompress(data, max_length=length + 1)
        except lzma.LZMAError as e:
            raise PayloadFormatError(f"corrupt xz data: {e}") from None
        if not decoder.eof or decoder.unused_data:
            raise PayloadFormatError("xz data does not end where the operation says")
    else:  # pragma: no cover - Codec is closed
        raise PayloadFormatError(f"unknown codec {codec}")
    if len(out) != length:
        raise PayloadFormatError(f"data decodes to {len(out)} bytes, expected {length}")
    return out
