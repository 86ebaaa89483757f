"""A bsdiff patch without the search, for chunks whose content moved in a few big blocks.

Most releases change little: a chunk is then the source at one or two offsets (content after
an insertion shifts) with a few bytes changed. Given the candidate offsets the matcher found,
each 64-byte block of the chunk takes the offset that matches it best, block boundaries are
moved to the exact byte where the next offset starts matching, and the result is a patch of a
few triples whose diff block is almost all zeros. If too many bytes still differ, the caller
runs the real bsdiff search instead. Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ota_client.payload.bsdiff_data import Triple

BLOCK = 64
MAX_CHANGED = 1 / 256  # at most this share of bytes may differ for the shortcut to apply
MAX_WINDOW_FACTOR = 4  # the source window may span at most this many chunk lengths

U8 = npt.NDArray[np.uint8]


def _matches(chunk: U8, source: U8, start: int, delta: int) -> npt.NDArray[np.bool_]:
    """Per byte of the chunk: does the source at the same position + delta hold it?"""
    n = len(chunk)
    out = np.zeros(n, bool)
    lo, hi = max(0, -(start + delta)), min(n, len(source) - start - delta)
    if hi > lo:
        s = start + delta
        out[lo:hi] = chunk[lo:hi] == source[s + lo : s + hi]
    return out


def aligned_patch(
    chunk: U8, source: U8, start: int, deltas: list[int]
) -> tuple[tuple[int, int], list[Triple], bytes] | None:
    """(source window, triples, diff block) if the chunk is a few shifted source blocks."""
    n = len(chunk)
    if not deltas or n == 0:
        return None
    eq = np.stack([_matches(chunk, source, start, d) for d in deltas])
    blocks = -(-n // BLOCK)
    padded = np.zeros((len(deltas), blocks * BLOCK), bool)
    padded[:, :n] = eq
    choice = padded.reshape(len(deltas), blocks, BLOCK).sum(2).argmax(0)
    # Segments of equal choice; each boundary moves to the best split byte.
    cuts = np.flatnonzero(np.diff(choice)) + 1
    bounds = [0]
    for cut in cuts.tolist():
        a, b = max(bounds[-1], (cut - 1) * BLOCK), min(n, (cut + 1) * BLOCK)
        left, right = eq[choice[cut - 1], a:b], eq[choice[cut], a:b]
        score = np.concatenate([[0], np.cumsum(left)]) + np.concatenate(
            [np.cumsum(right[::-1])[::-1], [0]]
        )
        bounds.append(a + int(np.argmax(score)))
    bounds.append(n)
    picks = [int(choice[0]), *(int(choice[cut]) for cut in cuts.tolist())]
    segments = [
        (bounds[i], bounds[i + 1], deltas[picks[i]])
        for i in range(len(picks))
        if bounds[i + 1] > bounds[i]
    ]
    changed = sum(int((~eq[deltas.index(d), a:b]).sum()) for a, b, d in segments)
    if changed > n * MAX_CHANGED:
        return None
    w0 = min(start + a + d for a, _b, d in segments)
    w1 = max(start + b + d for _a, b, d in segments)
    if w0 < 0 or w1 > len(source) or w1 - w0 > MAX_WINDOW_FACTOR * n:
        return None
    triples: list[Triple] = []
    diffs = []
    position = 0  # in the window, after the previous segment
    for i, (a, b, d) in enumerate(segments):
        src = start + a + d - w0
        if i == 0 and src:
            triples.append((0, 0, src))
        elif i:
            x, y, _ = triples[-1]
            triples[-1] = (x, y, src - position)
        triples.append((b - a, 0, 0))
        position = src + (b - a)
        old = source[start + a + d : start + b + d]
        diffs.append((chunk[a:b] - old).tobytes())
    return (w0, w1), triples, b"".join(diffs)
