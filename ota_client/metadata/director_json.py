"""The JSON (TUF) wire encoding of a vehicle's Director targets metadata.

One target entry per assigned image, named as in the Image repository, with its length and
hashes; its ``custom`` holds the Uptane "SHALL match" fields and, per ECU serial that installs
it, the payload to fetch (two identical ECUs may share an image). The vehicle id sits in the
targets' own ``custom``, so even an empty assignment names its vehicle (Uptane: no replay of
one vehicle's metadata to another). ``decode`` is strict — unknown fields, delegations, an ECU
named twice are errors — and is the only way the client turns Director metadata into an
``Assignment``. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuf.api.metadata import TargetFile, Targets

from ota_client.metadata.assignment import Assignment, EcuAssignment, Payload
from ota_client.metadata.errors import MetadataFormatError, show
from ota_client.metadata.fields import check_hashes, check_length


def encode_targets(assignment: Assignment, targets: Targets) -> None:
    """Write ``assignment`` into a Director ``targets`` role (its version and expiry untouched)."""
    entries: dict[str, TargetFile] = {}
    for ecu in assignment.ecus:
        entry = entries.get(ecu.target)
        if entry is None:
            entry = TargetFile(ecu.length, dict(ecu.hashes), ecu.target)
            entry.unrecognized_fields["custom"] = {
                "hardware_ids": list(ecu.hardware_ids),
                "release_counter": ecu.release_counter,
                "ecus": {},
            }
            entries[ecu.target] = entry
        elif (
            (entry.length, entry.hashes) != (ecu.length, dict(ecu.hashes))
            or entry.custom["release_counter"] != ecu.release_counter
            or entry.custom["hardware_ids"] != list(ecu.hardware_ids)
        ):
            raise MetadataFormatError(f"{ecu.target} is assigned with two different descriptions")
        p = ecu.payload
        entry.custom["ecus"][ecu.serial] = {
            "payload": {"path": p.path, "length": p.length, "sha256": p.sha256, "kind": p.kind}
        }
    targets.targets = entries
    targets.delegations = None
    custom: dict[str, Any] = {"vehicle": assignment.vehicle}
    if assignment.release is not None:
        custom["release"] = assignment.release
    targets.unrecognized_fields["custom"] = custom


def _table(
    value: object, what: str, keys: set[str], optional: frozenset[str] = frozenset()
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MetadataFormatError(f"{what} must be an object")
    if missing := keys - set(value):
        raise MetadataFormatError(f"{what} lacks {', '.join(sorted(missing))}")
    if unknown := set(value) - keys - optional:
        raise MetadataFormatError(f"{what} has unknown fields {show(sorted(unknown)[0])}")
    return value


def decode_targets(targets: Targets) -> Assignment:
    """The assignment a verified Director ``targets`` role carries; strict."""
    if targets.delegations is not None:
        raise MetadataFormatError("Director targets must not delegate")
    if set(targets.unrecognized_fields) - {"custom"}:
        raise MetadataFormatError("Director targets carry unknown fields")
    top = _table(
        targets.unrecognized_fields.get("custom"),
        "targets custom",
        {"vehicle"},
        frozenset({"release"}),
    )
    ecus: list[EcuAssignment] = []
    for path, info in targets.targets.items():
        where = f"Director target {show(path)}"
        if set(info.unrecognized_fields) != {"custom"}:
            raise MetadataFormatError(f"{where} lacks custom fields or has unknown ones")
        custom = _table(info.custom, f"{where} custom", {"hardware_ids", "release_counter", "ecus"})
        hwids = custom["hardware_ids"]
        if not isinstance(hwids, list) or not all(isinstance(h, str) for h in hwids):
            raise MetadataFormatError(f"{where}: hardware_ids must be a list of strings")
        per_ecu = custom["ecus"]
        if not isinstance(per_ecu, Mapping) or not per_ecu:
            raise MetadataFormatError(f"{where} names no ECU")
        for serial, value in per_ecu.items():
            payload = _table(
                _table(value, f"{where} ECU {show(serial)}", {"payload"})["payload"],
                f"{where} payload",
                {"path", "length", "sha256", "kind"},
            )
            try:
                ecus.append(
                    EcuAssignment(
                        serial=serial,
                        target=path,
                        length=check_length(info.length),
                        hashes=check_hashes(info.hashes),
                        hardware_ids=tuple(hwids),
                        release_counter=custom["release_counter"],
                        payload=Payload(
                            payload["path"], payload["length"], payload["sha256"], payload["kind"]
                        ),
                    )
                )
            except (TypeError, ValueError) as e:  # e.g. a non-string serial
                raise MetadataFormatError(f"{where}: {e}") from None
    serials = [e.serial for e in ecus]
    if len(set(serials)) != len(serials):
        raise MetadataFormatError("the Director assigns an ECU twice")
    return Assignment(
        top["vehicle"], tuple(sorted(ecus, key=lambda e: e.serial)), top.get("release")
    )
