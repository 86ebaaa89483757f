"""What the vehicle installs next, as an immutable plan. Pure.

In director mode (the default) the plan is the Director's assignment, fully verified
(``verify.director``): ``plan_assigned``. In "track latest" mode a vehicle follows the newest
release *bundle*
that fits it: every image of the bundle goes to an ECU whose hardware id it lists (and whose
role it names, when the ECU has one), no ECU gets two images, and every image it would
install is above that ECU's release-counter floor and was never rejected. An ECU that already
runs its image of the bundle gets no job. Bundles are tried by name; each bundle newest first.

Per job, the download is a delta made from exactly the image the ECU runs (same length and
sha256) when one exists and is smaller, else the full image; directory slots always take the
full image. The slot written is the one the ECU did *not* boot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ota_client.agent.machine import full_fetch
from ota_client.agent.records import EcuRecord, Fetch, Image, Job
from ota_client.boot.rules import other
from ota_client.errors import DeviceError
from ota_client.metadata import TargetCustom
from ota_client.metadata.assignment import Assignment


@dataclass(frozen=True)
class Candidate:
    """A verified target of the Image repository."""

    path: str
    length: int
    sha256: str
    custom: TargetCustom

    @property
    def image(self) -> Image:
        return Image(
            self.path, self.length, self.sha256, self.custom.version, self.custom.release_counter
        )


@dataclass(frozen=True)
class EcuFacts:
    """What planning needs to know about one ECU, gathered by the shell."""

    serial: str
    hardware_id: str
    role: str | None
    directory: bool  # a directory slot (bundles are extracted, never patched)
    booted: str
    capacity: int | None  # bytes the slot that would be written holds (None: unknown)
    installed: Image | None
    record: EcuRecord


@dataclass(frozen=True)
class InstallPlan:
    bundle: str
    version: str
    jobs: tuple[Job, ...]


def _matches(ecu: EcuFacts, c: Candidate) -> bool:
    return ecu.hardware_id in c.custom.hardware_ids and ecu.role in (None, c.custom.ecu)


def _floor(ecu: EcuFacts) -> int:
    installed = ecu.installed.release_counter if ecu.installed else 0
    return max(ecu.record.max_counter, installed)


def _delta(pool: Iterable[Candidate], full: Candidate, installed: Image | None) -> Fetch | None:
    deltas = [
        c
        for c in pool
        if installed is not None
        and c.custom.kind == "delta"
        and c.custom.image == full.path
        and c.custom.source is not None
        and c.custom.source.length == installed.length
        and c.custom.source.hashes.get("sha256") == installed.sha256
        and c.length < full.length
    ]
    if not deltas:
        return None
    d = min(deltas, key=lambda c: (c.length, c.path))
    return Fetch(d.path, d.length, d.sha256, "delta", source_length=installed.length)  # type: ignore[union-attr]


def _check_room(ecu: EcuFacts, image: Candidate) -> None:
    if ecu.capacity is not None and image.length > ecu.capacity:
        raise DeviceError(
            f"{ecu.serial}: slot {other(ecu.booted)} holds {ecu.capacity} bytes; "
            f"{image.path} needs {image.length}"
        )


def _jobs(
    images: Sequence[Candidate], ecus: Sequence[EcuFacts], pool: Sequence[Candidate]
) -> tuple[Job, ...] | None:
    """The jobs that install this bundle version, or None if it does not fit the vehicle."""
    given: dict[str, Candidate] = {}
    for image in images:
        matched = [e for e in ecus if _matches(e, image)]
        if not matched:
            return None
        for ecu in matched:
            if ecu.serial in given:
                return None  # two images for one ECU: ambiguous
            given[ecu.serial] = image
    jobs = []
    for ecu in ecus:
        mine = given.get(ecu.serial)
        if mine is None or (ecu.installed is not None and ecu.installed.sha256 == mine.sha256):
            continue
        image = mine
        if image.custom.release_counter <= _floor(ecu) or image.sha256 in ecu.record.rejected:
            return None
        _check_room(ecu, image)
        full = full_fetch(image.image)
        delta = None if ecu.directory else _delta(pool, image, ecu.installed)
        jobs.append(
            Job(ecu.serial, image.image, delta or full, full, other(ecu.booted), ecu.booted)
        )
    return tuple(jobs)


def plan_install(pool: Sequence[Candidate], ecus: Sequence[EcuFacts]) -> InstallPlan | None:
    """The next plan, or None when the vehicle runs the newest bundle that fits it.

    Raises DeviceError when the chosen images do not fit their slots.
    """
    versions: dict[str, dict[str, list[Candidate]]] = defaultdict(lambda: defaultdict(list))
    for c in pool:
        if c.custom.kind == "full":
            versions[c.custom.bundle][c.custom.version].append(c)
    for bundle in sorted(versions):
        newest_first = sorted(
            versions[bundle].items(),
            key=lambda kv: (max(c.custom.release_counter for c in kv[1]), kv[0]),
            reverse=True,
        )
        for version, images in newest_first:
            jobs = _jobs(images, ecus, pool)
            if jobs is None:
                continue  # does not fit (or rejected, or a downgrade): try an older version
            if jobs:
                return InstallPlan(bundle, version, jobs)
            break  # the vehicle runs this version: the bundle is up to date
    return None


def plan_assigned(
    assignment: Assignment, images: Mapping[str, Candidate], ecus: Sequence[EcuFacts]
) -> InstallPlan | None:
    """The jobs that bring every assigned ECU to its image; None when all run theirs.

    ``images`` holds the Image repository's verified entries the assignment names (images and
    deltas), already matched against it. An image the vehicle gave up on (rejected after a
    failed trial) is not tried again until the Director assigns something else. The payload
    is the assigned delta when it was made from exactly what the ECU runs, else the image.
    """
    facts = {e.serial: e for e in ecus}
    jobs = []
    for assigned in assignment.ecus:
        ecu = facts[assigned.serial]
        if ecu.installed is not None and ecu.installed.sha256 == assigned.sha256:
            continue
        image = images[assigned.target]
        if image.sha256 in ecu.record.rejected:
            return None
        _check_room(ecu, image)
        full = full_fetch(image.image)
        fetch = full
        payload = images.get(assigned.payload.path)
        if assigned.payload.kind == "delta" and payload is not None and not ecu.directory:
            fetch = _delta([payload], image, ecu.installed) or full
        jobs.append(Job(ecu.serial, image.image, fetch, full, other(ecu.booted), ecu.booted))
    if not jobs:
        return None
    bundle, _, version = (assignment.release or "").partition("@")
    first = images[assignment.ecus[0].target].custom
    return InstallPlan(bundle or first.bundle, version or first.version, tuple(jobs))
