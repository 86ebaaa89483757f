"""Find where each target chunk's content lives in the source image (pure, numpy).

Content-defined anchors: a position is an anchor when the hash of the 16 bytes starting there
falls in a 1/64 slice of the hash space, so the same content yields the same anchors whatever
its offset. Matching anchors of the target against those of the source gives, per chunk,
votes for "this content moved by d bytes". The densest cluster of votes picks the source
window that bsdiff then works on, and the leading offsets are tried as exact copies. This is
what lets a chunked delta follow code that moved — an equal-offset window would not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

WINDOW = 16  # bytes hashed per anchor
ANCHOR_BITS = 6  # one position in 2**6 is an anchor
_BLOCK = 8 << 20  # hash in blocks to bound memory
CONCENTRATED = 0.15  # share of a chunk's votes on one delta that marks content moved as a block
WIDE_PAD = 1 << 20  # window margin for chunks whose content comes from many places
MAX_WIDE = 12 << 20
_TABLE = np.random.default_rng(0x07A).integers(0, 2**63, 256, dtype=np.uint64) * np.uint64(
    2
) + np.uint64(1)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(64 - ANCHOR_BITS)

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


def anchors(data: U8) -> tuple[I64, U64]:
    """Anchor positions and their keys, in position order."""
    positions: list[I64] = []
    keys: list[U64] = []
    n = len(data)
    for start in range(0, max(n - WINDOW + 1, 0), _BLOCK):
        block = data[start : min(start + _BLOCK + WINDOW - 1, n)]
        sums = np.cumsum(_TABLE[block], dtype=np.uint64)
        h = sums[WINDOW - 1 :].copy()
        h[1:] -= sums[:-WINDOW]
        h *= _MIX
        sel = np.flatnonzero((h >> _SHIFT) == 0)
        positions.append(sel.astype(np.int64) + start)
        keys.append(h[sel])
    if not positions:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    return np.concatenate(positions), np.concatenate(keys)


@dataclass(frozen=True)
class SourceIndex:
    keys: U64  # sorted
    positions: I64

    @classmethod
    def build(cls, source: U8) -> SourceIndex:
        pos, keys = anchors(source)
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], pos[order])

    def match(self, positions: I64, keys: U64) -> tuple[I64, I64]:
        """(target position, delta) for each target anchor whose key is unique in the source:
        repeated content (padding, tables) would only add votes for wrong offsets."""
        lo = np.searchsorted(self.keys, keys, "left")
        hi = np.searchsorted(self.keys, keys, "right")
        unique = (hi - lo) == 1
        src = self.positions[lo[unique]]
        return positions[unique], src - positions[unique]


@dataclass(frozen=True)
class ChunkPlan:
    start: int
    end: int
    window: tuple[int, int] | None  # source range for bsdiff
    copies: tuple[int, ...]  # source offsets to try as an exact copy


def plan_chunks(
    target_size: int, source_size: int, chunk_size: int, matches: tuple[I64, I64], pad: int
) -> list[ChunkPlan]:
    """For each chunk, the source window for bsdiff and the offsets worth trying as copies."""
    tpos, delta = matches
    order = np.argsort(tpos, kind="stable")
    tpos, delta = tpos[order], delta[order]
    max_window = 2 * chunk_size + 2 * pad
    plans = []
    for start in range(0, target_size, chunk_size):
        end = min(start + chunk_size, target_size)
        if source_size == 0:
            plans.append(ChunkPlan(start, end, None, ()))
            continue
        lo, hi = np.searchsorted(tpos, [start, end])
        d = delta[lo:hi]
        copies: list[int] = []
        if len(d):
            values, votes = np.unique(d, return_counts=True)
            ranked = values[np.argsort(-votes, kind="stable")]
            copies = [
                start + int(v) for v in ranked[:4] if 0 <= start + v <= source_size - (end - start)
            ]
            if votes.max() >= CONCENTRATED * len(d):
                # Content moved as a block: deltas with a real share of the votes (not stray
                # matches) span a tight window.
                strong = values[votes >= max(2, votes.max() // 10)]
                if not len(strong):
                    strong = ranked[:1]
                lo_d, hi_d = int(strong.min()), int(strong.max())
                if hi_d - lo_d > max_window - (end - start) - 2 * pad:
                    lo_d = hi_d = int(ranked[0])
                w0, w1 = start + lo_d - pad, end + hi_d + pad
            else:
                # Scattered origins (a reorganised section): a wide window around both the
                # same offset and the leading delta, so bsdiff can find what it needs.
                top = int(ranked[0])
                w0 = start + min(0, top) - WIDE_PAD
                w1 = end + max(0, top) + WIDE_PAD
                if w1 - w0 > MAX_WIDE:
                    w0, w1 = start - WIDE_PAD, end + WIDE_PAD
        else:
            w0, w1 = start - pad, end + pad
        if start <= source_size - (end - start) and start not in copies:
            copies.append(start)
        w0, w1 = max(w0, 0), min(w1, source_size)
        plans.append(ChunkPlan(start, end, (w0, w1) if w1 > w0 else None, tuple(copies)))
    return plans
