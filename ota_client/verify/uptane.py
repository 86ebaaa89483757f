"""Uptane full verification, step 10: every Director target against the Image repository. Pure.

Both repositories' TUF chains are verified before this runs (python-tuf, one ``Updater``
each). What remains is Uptane's own rule (2.1 §"Full verification"), for **every** ECU the
Director lists, not only the ones that change:

* the assignment names this vehicle, and every ECU it lists is one of the vehicle's ECUs;
* the Image repository (through its delegations) holds a target of exactly the same name,
  a full image, with identical length and hashes, and identical "SHALL match" fields —
  ``hardware_ids`` (which must contain the ECU's own) and ``release_counter``;
* the release counter never goes below what the ECU already had;
* the payload to fetch is the image itself or a delta the Image repository signs as made for
  exactly that image, with identical length and sha256.

A compromise of the Director's keys alone therefore installs nothing a release manager did
not sign, and a compromise of the Image repository's online keys alone assigns nothing.
Any failure is a ``SecurityError`` naming the ECU and the reason; nothing is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ota_client.errors import SecurityError
from ota_client.metadata import TargetCustom
from ota_client.metadata.assignment import Assignment, EcuAssignment
from ota_client.strict import show


@dataclass(frozen=True)
class ImageTarget:
    """What the Image repository signs for one target name (delegations resolved)."""

    path: str
    length: int
    hashes: Mapping[str, str]
    custom: TargetCustom


ImageLookup = Callable[[str], ImageTarget | None]


def check_assignment(
    assignment: Assignment,
    vehicle: str,
    ecus: Mapping[str, str],
    image: ImageLookup,
    floors: Mapping[str, int],
) -> None:
    """Refuse the assignment unless every ECU's entry matches the Image repository.

    ``ecus`` maps the vehicle's ECU serials to their hardware ids; ``floors`` gives each ECU's
    highest release counter so far (installed or once accepted).
    """
    check_addressee(assignment, vehicle, ecus)
    for ecu in assignment.ecus:
        _check_ecu(ecu, ecus[ecu.serial], image, floors)


def check_addressee(assignment: Assignment, vehicle: str, ecus: Mapping[str, str]) -> None:
    """The assignment is for this vehicle and names only its ECUs (needs no Image metadata)."""
    if assignment.vehicle != vehicle:
        raise SecurityError(
            f"the Director metadata is for vehicle {show(assignment.vehicle)}, not {vehicle}"
        )
    for ecu in assignment.ecus:
        if ecu.serial not in ecus:
            raise SecurityError(
                f"the Director assigns {ecu.target} to {ecu.serial}, not an ECU here"
            )


def _check_ecu(
    ecu: EcuAssignment, hardware_id: str, image: ImageLookup, floors: Mapping[str, int]
) -> None:
    where = f"ECU {ecu.serial}: {ecu.target}"
    signed = image(ecu.target)
    if signed is None:
        raise SecurityError(f"{where} is not in the Image repository")
    if signed.custom.kind != "full":
        raise SecurityError(f"{where} is a delta in the Image repository, not an image")
    if signed.length != ecu.length or dict(signed.hashes) != dict(ecu.hashes):
        raise SecurityError(f"{where}: length or hashes differ from the Image repository's")
    if signed.custom.hardware_ids != ecu.hardware_ids:
        raise SecurityError(f"{where}: hardware ids differ from the Image repository's")
    if hardware_id not in ecu.hardware_ids:
        raise SecurityError(f"{where} is not for hardware {hardware_id}")
    if signed.custom.release_counter != ecu.release_counter:
        raise SecurityError(f"{where}: release counter differs from the Image repository's")
    floor = floors.get(ecu.serial, 0)
    if ecu.release_counter < floor:
        raise SecurityError(
            f"{where}: release counter {ecu.release_counter} is below {floor} (a rollback)"
        )
    payload = ecu.payload
    if payload.kind == "full":
        return  # the assignment's own check: a full payload is the image itself
    delta = image(payload.path)
    if (
        delta is None
        or delta.custom.kind != "delta"
        or delta.custom.image != ecu.target
        or delta.length != payload.length
        or delta.hashes.get("sha256") != payload.sha256
    ):
        raise SecurityError(
            f"{where}: the delta {payload.path} is not the Image repository's delta for it"
        )
