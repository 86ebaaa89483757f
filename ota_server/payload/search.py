"""The bsdiff search, with a faster suffix array than bsdiff4's.

bsdiff4 builds its suffix array with qsufsort; detools runs the same bsdiff search over
libdivsufsort's, about twice as fast for the same triples. Its output (a list of packed sizes
and blocks) is turned into the triples, diff and extra blocks of ``bsdiff_data``, which the
vehicle applies with bsdiff4 as before: this changes how patches are found, not what they are.
"""

from __future__ import annotations

from detools import bsdiff as detools_bsdiff
from detools.suffix_array import divsufsort

from ota_client.payload.bsdiff_data import Triple


def _size(packed: bytes) -> int:
    """detools' packed size: 6 bits and a sign in the first byte, then 7 bits per byte."""
    value, shift = packed[0] & 0x3F, 6
    for byte in packed[1:]:
        value |= (byte & 0x7F) << shift
        shift += 7
    return -value if packed[0] & 0x40 else value


def bsdiff(source: bytes, target: bytes) -> tuple[list[Triple], bytes, bytes]:
    """bsdiff's triples, diff block and extra block turning ``source`` into ``target``."""
    suffixes = bytearray(4 * (len(source) + 1))
    divsufsort(source, suffixes)
    parts = detools_bsdiff.create_patch(suffixes, source, target, bytearray(len(target) + 1))
    if len(parts) % 5:
        raise ValueError("unexpected bsdiff output")
    triples: list[Triple] = []
    diffs: list[bytes] = []
    extras: list[bytes] = []
    for i in range(0, len(parts), 5):
        _, diff, _, extra, adjust = parts[i : i + 5]
        triples.append((len(diff), len(extra), _size(adjust)))
        diffs.append(diff)
        extras.append(extra)
    return triples, b"".join(diffs), b"".join(extras)
