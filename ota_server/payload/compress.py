"""Compression candidates for operation data, sized so the client's decoder stays small."""

from __future__ import annotations

import lzma

import zstandard

from ota_client.payload.codecs import MAX_WINDOW
from ota_client.payload.format import Codec

_MIN_DICT = 1 << 16
NEGLIGIBLE = 256  # zstd output below 1/256 of the input: xz cannot save anything that matters


def _dict_size(length: int) -> int:
    size = _MIN_DICT
    while size < length and size < MAX_WINDOW:
        size <<= 1
    return size


def xz(data: bytes, *, x86: bool = False) -> bytes:
    lzma2 = {
        "id": lzma.FILTER_LZMA2,
        "preset": 9 | lzma.PRESET_EXTREME,
        "dict_size": _dict_size(len(data)),
    }
    filters = [{"id": lzma.FILTER_X86}, lzma2] if x86 else [lzma2]
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=filters)


def zstd(data: bytes, level: int = 19) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_checksum=False).compress(data)


def smallest(data: bytes, *, effort: str, code: bool = False) -> tuple[Codec, bytes]:
    """The best encoding of ``data``: xz at "best" (with the x86 filter tried for code),
    zstd -19 at "fast"; stored as is when that is smaller. Data that a quick zstd pass
    already shrinks to almost nothing (a near-identical chunk) keeps that result: the slow
    encoders could not save anything that matters on it."""
    quick = zstd(data, level=3)
    candidates = [(Codec.NONE, data), (Codec.ZSTD, quick)]
    if len(quick) * NEGLIGIBLE > len(data):
        if effort == "best":
            candidates.append((Codec.XZ, xz(data)))
            if code:
                candidates.append((Codec.XZ, xz(data, x86=True)))
        else:
            candidates.append((Codec.ZSTD, zstd(data)))
    return min(candidates, key=lambda c: len(c[1]))
