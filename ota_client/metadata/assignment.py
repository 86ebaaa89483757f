"""What the Director assigns one vehicle: per ECU, an image and the payload that produces it.

This is the *content* of a vehicle's Director targets metadata (DESIGN §3, §6), kept apart from
its wire encoding (``director_json``), so that a second encoding can be added without
touching how assignments are made or checked. Values are checked on construction, so an
``Assignment`` that exists is well formed: the server builds them, the client gets them only
from a decoder. Pure: no I/O.

An ECU's image is named as in the Image repository, with the length, hashes and Uptane
"SHALL match" fields (``hardware_ids``, ``release_counter``) the vehicle compares with the
Image repository's entry. The payload is either that image or a delta of the Image repository
made from exactly what the ECU reported installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ota_client.metadata.errors import MetadataFormatError, show
from ota_client.metadata.fields import (
    Kind,
    check_hashes,
    check_length,
    check_match_fields,
    check_version,
)
from ota_client.metadata.names import check_identifier, check_target_path

MAX_ECUS = 64  # ECUs one vehicle's assignment may name


@dataclass(frozen=True)
class Payload:
    """What the ECU downloads: the full image, or a delta from its installed image."""

    path: str
    length: int
    sha256: str
    kind: Kind

    def __post_init__(self) -> None:
        check_target_path(self.path)
        check_length(self.length)
        check_hashes({"sha256": self.sha256})
        if self.kind not in ("full", "delta"):
            raise MetadataFormatError(f"payload kind must be full or delta, not {show(self.kind)}")


@dataclass(frozen=True)
class EcuAssignment:
    serial: str
    target: str  # the full image's name in the Image repository
    length: int
    hashes: Mapping[str, str]
    hardware_ids: tuple[str, ...]
    release_counter: int
    payload: Payload

    def __post_init__(self) -> None:
        check_identifier("ECU serial", self.serial)
        check_target_path(self.target)
        check_length(self.length)
        hashes = check_hashes(self.hashes)
        if "sha256" not in hashes:
            raise MetadataFormatError(f"{self.target}: the hashes lack sha256")
        check_match_fields(self.hardware_ids, self.release_counter)
        if self.payload.kind == "full" and (
            self.payload.path != self.target
            or self.payload.length != self.length
            or self.payload.sha256 != hashes["sha256"]
        ):
            raise MetadataFormatError(f"{self.serial}: a full payload must be the image itself")

    @property
    def sha256(self) -> str:
        return self.hashes["sha256"]


@dataclass(frozen=True)
class Assignment:
    """A vehicle's whole assignment; no ECUs means "install nothing" (still names the VIN)."""

    vehicle: str
    ecus: tuple[EcuAssignment, ...] = ()
    release: str | None = None  # "BUNDLE@VERSION", for reports and operators

    def __post_init__(self) -> None:
        check_identifier("vehicle id", self.vehicle)
        if len(self.ecus) > MAX_ECUS:
            raise MetadataFormatError(f"an assignment names at most {MAX_ECUS} ECUs")
        serials = [e.serial for e in self.ecus]
        if len(set(serials)) != len(serials):
            raise MetadataFormatError("an ECU is assigned twice")
        if list(serials) != sorted(serials):
            raise MetadataFormatError("ECUs must be in serial order")
        if self.release is not None:
            bundle, at, version = self.release.partition("@")
            if not at:
                raise MetadataFormatError(f"release {show(self.release)} is not BUNDLE@VERSION")
            check_identifier("bundle", bundle)
            check_version(version)
