"""The data of a SOURCE_BSDIFF operation: a bsdiff patch in a compact, checked encoding.

bsdiff describes the output as triples (x, y, z): add ``x`` bytes of the diff block to the
source at the current position, copy ``y`` bytes of the extra block, then move the source
position by ``z``. bsdiff4 stores each triple as three 8-byte integers and compresses with
bzip2; here the triples are varints and the whole op is compressed with zstd or xz, which is
both smaller and faster to decode. The patch itself is applied by bsdiff4's C code, which
bounds-checks every triple; this module checks sizes first so nothing large is allocated
on a lie.

Op data: a 4-byte big-endian decoded length (at most ``max_decoded(length)``), then the
compressed encoding: varint n, n × (varint x, varint y, zigzag varint z), the diff block
(sum of x bytes), the extra block (sum of y bytes). n is at most ``max_triples(length)``
(one per 16 output bytes; real patches have about one per 100 or fewer), so the control block
handed to bsdiff4 (24 bytes a triple) stays within 1.5 × the output: a hostile op cannot turn
a few bytes per triple into gigabytes of Python objects.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import bsdiff4.core

from ota_client.payload.codecs import decompress
from ota_client.payload.format import Codec, PayloadFormatError

Triple = tuple[int, int, int]
_I64 = struct.Struct("<Q")
_LENGTH = struct.Struct(">I")


def max_decoded(length: int) -> int:
    """The most decoded data an op writing ``length`` bytes may carry: the blocks plus a
    control part no larger than the output (a generator that needs more uses REPLACE)."""
    return 2 * length + 16


def max_triples(length: int) -> int:
    """The most triples an op writing ``length`` bytes may carry."""
    return length // 16 + 16


def pack(compressed: bytes, decoded_length: int) -> bytes:
    return _LENGTH.pack(decoded_length) + compressed


def unpack(codec: Codec, data: bytes, length: int) -> bytes:
    """Decompress op data, refusing to decode more than ``max_decoded(length)`` bytes."""
    if len(data) < _LENGTH.size:
        raise PayloadFormatError("corrupt bsdiff data (no length)")
    (decoded,) = _LENGTH.unpack_from(data)
    if decoded > max_decoded(length):
        raise PayloadFormatError("corrupt bsdiff data (declared size is out of range)")
    return decompress(codec, data[_LENGTH.size :], decoded)


_SIGN = 1 << 63


def _varint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode(triples: Sequence[Triple], diff: bytes, extra: bytes) -> bytes:
    out = bytearray()
    _varint(len(triples), out)
    for x, y, z in triples:
        _varint(x, out)
        _varint(y, out)
        _varint((z << 1) ^ (z >> 63) if z < 0 else z << 1, out)
    return bytes(out) + diff + extra


def _offtin(value: int) -> bytes:
    return _I64.pack(-value | _SIGN if value < 0 else value)


def decode(data: bytes, length: int) -> tuple[bytes, bytes, bytes]:
    """Split decoded op data into bsdiff4's control block (the triples, 24 bytes each), the
    diff and the extra block, checking every size."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise PayloadFormatError("corrupt bsdiff data (varint)")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    count = varint()
    if count > max_triples(length):
        raise PayloadFormatError("corrupt bsdiff data (too many triples)")
    control = bytearray()
    total_x = total_y = 0
    for _ in range(count):
        x, y, zz = varint(), varint(), varint()
        z = (zz >> 1) ^ -(zz & 1)
        total_x += x
        total_y += y
        if total_x + total_y > length or abs(z) >= 1 << 62:
            raise PayloadFormatError("corrupt bsdiff data (triples exceed the output)")
        control += _offtin(x) + _offtin(y) + _offtin(z)
    if total_x + total_y != length or pos + length != len(data):
        raise PayloadFormatError("corrupt bsdiff data (block sizes do not add up)")
    return bytes(control), data[pos : pos + total_x], data[pos + total_x :]


def patch(window: bytes, data: bytes, length: int) -> bytes:
    """Apply encoded bsdiff ``data`` to a source ``window``, producing ``length`` bytes."""
    control, diff, extra = decode(data, length)
    try:
        out: bytes = bsdiff4.core.patch(window, length, control, diff, extra)
    except ValueError as e:
        raise PayloadFormatError(f"corrupt bsdiff data: {e}") from None
    return out
