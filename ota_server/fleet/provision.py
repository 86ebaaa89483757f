"""Provisioning: what a vehicle needs to start, and what the inventory records of it.

``ota vehicle provision VIN --ecu SERIAL:HWID[:primary] ... --out DIR`` registers the vehicle
and its ECUs and writes into DIR everything the vehicle needs (Uptane "build-time
provisioning"): both repositories' root metadata, each ECU's ed25519 key (its version
reports are signed with it; the inventory keeps the public half), the vehicle's TLS client
certificate (CN = VIN) with the CA that also signed the server's, and a ``client.toml`` that
runs as is on a simulated vehicle — simulated boot control, file slots under DIR — for
integrators to edit for real hardware.

This module is the pure part: parsing ECU specs and CSV rows, making keys and rendering the
files. ``fleet.inventory`` stores the rows and ``cli/vehicle.py`` writes the folder.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import SSlibKey

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_client.strict import show
from ota_server.errors import InputError

MAX_ECUS = 64  # as the client's config
MAX_CSV_ROWS = 1_000_000


@dataclass(frozen=True)
class EcuSpec:
    serial: str
    hardware_id: str
    primary: bool = False


@dataclass(frozen=True)
class VehicleSpec:
    vin: str
    ecus: tuple[EcuSpec, ...]


def _identifier(what: str, value: str) -> str:
    try:
        return check_identifier(what, value)
    except MetadataFormatError as e:
        raise InputError(str(e)) from None


def parse_ecu(text: str) -> EcuSpec:
    """``SERIAL:HWID`` or ``SERIAL:HWID:primary``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "primary"):
        raise InputError(
            f"ECU {show(text)}: write SERIAL:HARDWARE_ID or SERIAL:HARDWARE_ID:primary"
        )
    return EcuSpec(
        _identifier("ECU serial", parts[0]), _identifier("hardware id", parts[1]), len(parts) == 3
    )


def vehicle_spec(vin: str, ecus: Sequence[EcuSpec]) -> VehicleSpec:
    """A checked vehicle: 1-64 ECUs with distinct serials and exactly one primary (by default
    the first)."""
    _identifier("vehicle id", vin)
    if not 1 <= len(ecus) <= MAX_ECUS:
        raise InputError(f"{vin}: a vehicle has 1-{MAX_ECUS} ECUs (--ecu SERIAL:HWID)")
    serials = [e.serial for e in ecus]
    if len(set(serials)) != len(serials):
        raise InputError(f"{vin}: two ECUs share the serial {_twice(serials)}")
    primaries = sum(e.primary for e in ecus)
    if primaries > 1:
        raise InputError(f"{vin}: only one ECU can be the primary")
    if primaries == 0:
        ecus = [EcuSpec(ecus[0].serial, ecus[0].hardware_id, True), *ecus[1:]]
    return VehicleSpec(vin, tuple(ecus))


def _twice(items: Sequence[str]) -> str:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    raise AssertionError("no item is there twice")


def parse_csv(text: str) -> list[VehicleSpec]:
    """Rows ``vin,serial,hardware_id[,primary]``, one per ECU, a header row first."""
    try:
        return _parse_csv(csv.reader(io.StringIO(text)))
    except csv.Error as e:  # e.g. a field over the csv module's limit, a stray quote
        raise InputError(f"the CSV is malformed: {e}") from None


def _parse_csv(rows: Iterator[list[str]]) -> list[VehicleSpec]:
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:3]] != ["vin", "serial", "hardware_id"]:
        raise InputError("the CSV must start with the header vin,serial,hardware_id[,primary]")
    vehicles: dict[str, list[EcuSpec]] = {}
    for number, row in enumerate(rows, start=2):
        if number > MAX_CSV_ROWS:
            raise InputError(f"the CSV holds more than {MAX_CSV_ROWS} rows")
        if not row:
            continue
        if len(row) not in (3, 4) or (len(row) == 4 and row[3] not in ("", "primary", "true")):
            raise InputError(f"CSV line {number}: write vin,serial,hardware_id[,primary]")
        vin = _identifier(f"CSV line {number}: vehicle id", row[0])
        vehicles.setdefault(vin, []).append(
            EcuSpec(
                _identifier(f"CSV line {number}: ECU serial", row[1]),
                _identifier(f"CSV line {number}: hardware id", row[2]),
                len(row) == 4 and row[3] in ("primary", "true"),
            )
        )
    if not vehicles:
        raise InputError("the CSV lists no vehicle")
    out = [vehicle_spec(vin, ecus) for vin, ecus in vehicles.items()]
    serials = [e.serial for v in out for e in v.ecus]
    if len(set(serials)) != len(serials):
        raise InputError(f"the CSV gives two ECUs the serial {_twice(serials)}")
    return out


@dataclass(frozen=True)
class EcuKey:
    serial: str
    public: dict[str, Any]  # securesystemslib key dict, for the inventory
    keyid: str
    private_pem: bytes  # PKCS#8, for the vehicle only


def ecu_key(serial: str) -> EcuKey:
    private = Ed25519PrivateKey.generate()
    public = SSlibKey.from_crypto(private.public_key())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return EcuKey(serial, public.to_dict(), public.keyid, pem)


def _quoted(value: str) -> str:
    return json.dumps(value)  # our values are checked identifiers and URLs: valid TOML too


def client_toml(vehicle: VehicleSpec, server: str, *, slot_size: int | None = None) -> str:
    """The vehicle's ``client.toml``: a simulated vehicle under its provisioning folder."""
    lines = [
        f"# ota-client configuration for {vehicle.vin}, written by 'ota vehicle provision'.",
        "# It runs as is on a simulated vehicle (simulated boot control, file slots in slots/);",
        "# for real hardware, edit each [[ecus]] section's slots and boot (see the README).",
        f"vehicle_id = {_quoted(vehicle.vin)}",
        f"server = {_quoted(server)}",
        'trust_root = "image-root.json"',
        'director_root = "director-root.json"',
        'data_dir = "data"',
        "",
        "[network]",
        'ca_file = "ca.pem"',
        'client_cert = "vehicle.pem"',
        'client_key = "vehicle.key"',
    ]
    if server.startswith("http:"):
        lines.append("allow_insecure_http = true  # a test or demo server")
    for ecu in vehicle.ecus:
        size = "" if slot_size is None else f", size = {slot_size}"
        lines += [
            "",
            "[[ecus]]",
            f"serial = {_quoted(ecu.serial)}",
            f"hardware_id = {_quoted(ecu.hardware_id)}",
            f"key = {_quoted(f'keys/{ecu.serial}.pem')}",
            *(["primary = true"] if ecu.primary else []),
            f'slots = {{ a = "slots/{ecu.serial}-a.img", b = "slots/{ecu.serial}-b.img"{size} }}',
            'boot = { backend = "simulated" }',
        ]
    return "\n".join(lines) + "\n"


def kit_files(
    vehicle: VehicleSpec,
    keys: Iterable[EcuKey],
    *,
    server: str,
    image_root: bytes,
    director_root: bytes,
    ca_pem: bytes,
    tls_cert: bytes,
    tls_key: bytes,
) -> dict[str, bytes]:
    """Every file of a vehicle's provisioning folder, by relative path."""
    files = {
        "client.toml": client_toml(vehicle, server).encode(),
        "image-root.json": image_root,
        "director-root.json": director_root,
        "ca.pem": ca_pem,
        "vehicle.pem": tls_cert,
        "vehicle.key": tls_key,
    }
    for key in keys:
        files[f"keys/{key.serial}.pem"] = key.private_pem
    return files
