"""Signed version manifests (Uptane §"Vehicle version manifest"): one schema, both sides. Pure.

Each ECU signs its version report with its own ed25519 key: its serial, the image it runs
(name, length, hashes), whether it detected an attack, the latest time it trusts, and a
counter that grows every cycle (the server refuses a counter it has seen: no replay). The
primary signs the vehicle manifest that carries every ECU's signed report. The server checks
every signature against the keys its inventory recorded at provisioning, and only then
believes what a vehicle says it runs — the evidence a rollout counts as success.

Signatures are over the canonical JSON of ``signed`` (sorted keys, no spaces, UTF-8): every
value here is a checked identifier, a hex digest or an integer, so the encoding is exact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from securesystemslib.signer import Key, Signature, Signer

from ota_client.metadata.errors import MetadataFormatError, show
from ota_client.metadata.fields import check_hashes, check_length
from ota_client.metadata.names import check_identifier, check_target_path

MAX_ATTACK = 256
MAX_COUNTER = 2**63 - 1
MAX_MANIFEST_BYTES = 256 << 10  # 64 ECUs' reports with room to spare


def canonical(signed: Mapping[str, Any]) -> bytes:
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class InstalledImage:
    path: str
    length: int
    sha256: str


@dataclass(frozen=True)
class EcuReport:
    serial: str
    installed: InstalledImage | None  # None: the ECU does not know (never installed by us)
    attack: str  # "" when none was detected
    time: int  # the latest time the ECU trusts, seconds since the epoch
    counter: int

    def signed(self) -> dict[str, Any]:
        image = self.installed
        return {
            "ecu_serial": self.serial,
            "installed_image": None
            if image is None
            else {
                "filepath": image.path,
                "length": image.length,
                "hashes": {"sha256": image.sha256},
            },
            "attacks_detected": self.attack,
            "latest_time": self.time,
            "report_counter": self.counter,
        }


def sign(signed: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    signature = signer.sign(canonical(signed))
    return {"signed": dict(signed), "signatures": [signature.to_dict()]}


def verify(envelope: Mapping[str, Any], key: Key, what: str) -> Mapping[str, Any]:
    """``signed`` of an envelope that ``key`` signed; MetadataFormatError otherwise."""
    signed = envelope.get("signed")
    sigs = envelope.get("signatures")
    if set(envelope) != {"signed", "signatures"} or not isinstance(signed, Mapping):
        raise MetadataFormatError(f"{what} must hold exactly signed and signatures")
    if not isinstance(sigs, list) or not 1 <= len(sigs) <= 4:
        raise MetadataFormatError(f"{what}: signatures must list 1-4 signatures")
    data = canonical(signed)
    for entry in sigs:
        try:
            signature = Signature.from_dict(dict(entry))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MetadataFormatError(f"{what}: a malformed signature") from None
        if signature.keyid != key.keyid:
            continue
        try:
            key.verify_signature(signature, data)
        except Exception:  # securesystemslib raises its own families, and others on junk
            raise MetadataFormatError(f"{what}: the signature does not verify") from None
        return signed
    raise MetadataFormatError(f"{what} is not signed by its key")


def _fields(value: Mapping[str, Any], what: str, keys: set[str]) -> None:
    if set(value) != keys:
        raise MetadataFormatError(f"{what} must hold exactly {', '.join(sorted(keys))}")


def _int(value: object, what: str, high: int = MAX_COUNTER) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise MetadataFormatError(f"{what} must be an integer 0-{high}, not {show(value)}")
    return value


def parse_ecu_report(signed: Mapping[str, Any]) -> EcuReport:
    _fields(
        signed,
        "an ECU version report",
        {"ecu_serial", "installed_image", "attacks_detected", "latest_time", "report_counter"},
    )
    serial = check_identifier("ECU serial", signed["ecu_serial"])
    image = signed["installed_image"]
    installed = None
    if image is not None:
        if not isinstance(image, Mapping):
            raise MetadataFormatError(f"{serial}: installed_image must be an object")
        _fields(image, f"{serial}: installed_image", {"filepath", "length", "hashes"})
        hashes = check_hashes(image["hashes"])
        if set(hashes) != {"sha256"}:
            raise MetadataFormatError(f"{serial}: installed_image hashes must be sha256")
        installed = InstalledImage(
            check_target_path(image["filepath"]), check_length(image["length"]), hashes["sha256"]
        )
    attack = signed["attacks_detected"]
    if not isinstance(attack, str) or len(attack) > MAX_ATTACK or not attack.isprintable():
        raise MetadataFormatError(f"{serial}: attacks_detected must be printable text")
    return EcuReport(
        serial,
        installed,
        attack,
        _int(signed["latest_time"], "latest_time", 10**11),
        _int(signed["report_counter"], "report_counter"),
    )


@dataclass(frozen=True)
class VehicleManifest:
    vin: str
    primary: str
    reports: Mapping[str, Mapping[str, Any]]  # serial -> signed envelope, not yet verified


def vehicle_manifest(vin: str, primary: str, reports: Mapping[str, Any]) -> dict[str, Any]:
    return {"vin": vin, "primary_ecu_serial": primary, "ecu_version_reports": dict(reports)}


def parse_vehicle_manifest(signed: Mapping[str, Any]) -> VehicleManifest:
    _fields(signed, "a vehicle manifest", {"vin", "primary_ecu_serial", "ecu_version_reports"})
    reports = signed["ecu_version_reports"]
    if not isinstance(reports, Mapping) or not 1 <= len(reports) <= 64:
        raise MetadataFormatError("ecu_version_reports must map 1-64 ECU serials to reports")
    for serial, envelope in reports.items():
        check_identifier("ECU serial", serial)
        if not isinstance(envelope, Mapping):
            raise MetadataFormatError(f"the report of {serial} must be an object")
    return VehicleManifest(
        check_identifier("vehicle id", signed["vin"]),
        check_identifier("ECU serial", signed["primary_ecu_serial"]),
        reports,
    )
