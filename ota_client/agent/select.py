"""Which image to install next, and what to download to build it ("track latest" mode), pure.

Until the Director assigns images per vehicle, an ECU follows the newest release for its
hardware id: the full image with the highest release counter above everything it ever
committed, skipping images that already failed a trial. It downloads a delta when one was
made from exactly the image it runs (same length and sha256), else the full image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ota_client.agent.machine import Fetch, Image
from ota_client.metadata import TargetCustom


@dataclass(frozen=True)
class Candidate:
    path: str
    length: int
    sha256: str
    custom: TargetCustom


@dataclass(frozen=True)
class Choice:
    target: Image
    fetch: Fetch
    full: Fetch  # the fallback when a delta does not fit the installed image


def image_of(c: Candidate) -> Image:
    return Image(c.path, c.length, c.sha256, c.custom.version, c.custom.release_counter)


def full_fetch(c: Candidate) -> Fetch:
    return Fetch(c.path, c.length, c.sha256, "full")


def choose(
    candidates: Iterable[Candidate],
    hardware_id: str,
    installed: Image | None,
    max_counter: int,
    rejected: Iterable[str] = (),
) -> Choice | None:
    pool = list(candidates)
    floor = max(max_counter, installed.release_counter if installed else 0)
    rejected = set(rejected)
    fulls = [
        c
        for c in pool
        if c.custom.kind == "full"
        and hardware_id in c.custom.hardware_ids
        and c.custom.release_counter > floor
        and c.sha256 not in rejected
    ]
    if not fulls:
        return None
    best = max(fulls, key=lambda c: (c.custom.release_counter, c.path))
    full = full_fetch(best)
    deltas = [
        c
        for c in pool
        if installed is not None
        and c.custom.kind == "delta"
        and c.custom.image == best.path
        and c.custom.source is not None
        and c.custom.source.length == installed.length
        and c.custom.source.hashes.get("sha256") == installed.sha256
        and c.length < best.length
    ]
    fetch = full
    if deltas:
        d = min(deltas, key=lambda c: c.length)
        fetch = Fetch(d.path, d.length, d.sha256, "delta")
    return Choice(image_of(best), fetch, full)


def installed_lengths(
    candidates: Iterable[Candidate], hardware_id: str, limit: int = 8
) -> list[int]:
    """Lengths worth hashing the active slot at, to learn which published image it holds."""
    fulls = sorted(
        (c for c in candidates if c.custom.kind == "full" and hardware_id in c.custom.hardware_ids),
        key=lambda c: -c.custom.release_counter,
    )
    lengths: list[int] = []
    for c in fulls:
        if c.length not in lengths:
            lengths.append(c.length)
    return lengths[:limit]


def identify(
    candidates: Iterable[Candidate], hardware_id: str, digests: Mapping[int, str]
) -> Image | None:
    """The published image whose length and hash match the active slot's, if any."""
    for c in candidates:
        if (
            c.custom.kind == "full"
            and hardware_id in c.custom.hardware_ids
            and digests.get(c.length) == c.sha256
        ):
            return image_of(c)
    return None
