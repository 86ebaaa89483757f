"""Which image and payload each ECU of a vehicle gets from a release. Pure.

The primitive every rollout uses: ``plan_assignment`` turns a published release and a
vehicle's inventory into the ``Assignment`` its Director metadata will carry, or refuses with
one line that says why. The rules are the vehicle's own (``ota_client.agent.plan``), applied
before anything is signed, so the Director never assigns what a vehicle would refuse:

* every image of the release goes to the ECUs whose hardware id it lists; an image that fits
  no ECU of the vehicle, or an ECU that two images fit, means the release does not fit it;
* no ECU's release counter goes backwards;
* the payload is the smallest delta of the Image repository made from exactly the image the
  ECU last reported installed (same length and sha256), else the full image.

ECUs the release does not cover are not named: they keep what they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ota_client.metadata.assignment import Assignment, EcuAssignment, Payload
from ota_server.errors import InputError
from ota_server.repository.catalog import CatalogEntry, Release


@dataclass(frozen=True)
class Installed:
    """What an ECU last reported running (from its signed version report)."""

    target: str
    length: int
    sha256: str
    release_counter: int


@dataclass(frozen=True)
class EcuInventory:
    serial: str
    hardware_id: str
    installed: Installed | None = None


def plan_assignment(vin: str, ecus: Sequence[EcuInventory], release: Release) -> Assignment:
    label = f"{release.bundle}@{release.version}"
    given: dict[str, CatalogEntry] = {}
    for image in release.images:
        fits = [e for e in ecus if e.hardware_id in image.custom.hardware_ids]
        if not fits:
            raise InputError(
                f"{label} does not fit {vin}: no ECU has hardware "
                f"{' or '.join(image.custom.hardware_ids)} for {image.path}"
            )
        for ecu in fits:
            if ecu.serial in given:
                raise InputError(
                    f"{label} does not fit {vin}: ECU {ecu.serial} fits both "
                    f"{given[ecu.serial].path} and {image.path}"
                )
            given[ecu.serial] = image
    assigned = []
    for ecu in sorted(ecus, key=lambda e: e.serial):
        if ecu.serial not in given:
            continue
        image = given[ecu.serial]
        counter = image.custom.release_counter
        if ecu.installed is not None and counter < ecu.installed.release_counter:
            raise InputError(
                f"{label} would move ECU {ecu.serial} of {vin} back from release counter "
                f"{ecu.installed.release_counter} to {counter}"
            )
        assigned.append(
            EcuAssignment(
                serial=ecu.serial,
                target=image.path,
                length=image.length,
                hashes=dict(image.hashes),
                hardware_ids=image.custom.hardware_ids,
                release_counter=counter,
                payload=_payload(image, release.deltas, ecu.installed),
            )
        )
    return Assignment(vin, tuple(assigned), label)


def _payload(
    image: CatalogEntry, deltas: Sequence[CatalogEntry], installed: Installed | None
) -> Payload:
    sha256 = image.hashes["sha256"]
    if installed is not None and installed.sha256 != sha256:
        fitting = [
            d
            for d in deltas
            if d.custom.image == image.path
            and d.custom.source is not None
            and d.custom.source.length == installed.length
            and d.custom.source.hashes.get("sha256") == installed.sha256
            and d.length < image.length
        ]
        if fitting:
            best = min(fitting, key=lambda d: (d.length, d.path))
            return Payload(best.path, best.length, best.hashes["sha256"], "delta")
    return Payload(image.path, image.length, sha256, "full")
