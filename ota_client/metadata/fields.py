"""The ``custom`` fields of Image- and Director-repository targets (DESIGN §3).

python-tuf signs ``TargetFile.custom`` but never reads it; this module is the single schema for
it. The server builds ``TargetCustom`` and calls ``to_dict``; the client calls ``from_dict`` on
signed metadata and trusts nothing it did not check here. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ota_client.metadata.errors import MetadataFormatError, show
from ota_client.metadata.names import check_identifier, check_target_path

__all__ = ["MATCH_FIELDS", "MetadataFormatError", "SourceInfo", "TargetCustom"]

# Uptane's "SHALL match" fields: a Director target must carry the same values.
MATCH_FIELDS = ("hardware_ids", "release_counter")

MAX_HARDWARE_IDS = 32
MAX_RELEASE_COUNTER = 2**63 - 1
HASH_LENGTHS = {"sha256": 64, "sha512": 128}
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}")
_HEX = re.compile(r"[0-9a-f]+")

Kind = Literal["full", "delta"]


def check_version(value: object) -> str:
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise MetadataFormatError(
            f"invalid version {show(value)}: use 1-64 ASCII letters, digits and . + _ -"
        )
    return value


def check_hashes(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise MetadataFormatError("hashes must be a non-empty table of algorithm = hex digest")
    out: dict[str, str] = {}
    for algo, digest in value.items():
        want = HASH_LENGTHS.get(algo)
        if want is None:
            raise MetadataFormatError(f"unsupported hash algorithm {show(algo)}")
        if not isinstance(digest, str) or len(digest) != want or not _HEX.fullmatch(digest):
            raise MetadataFormatError(f"malformed {algo} digest {show(digest)}")
        out[algo] = digest
    return out


def check_length(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MetadataFormatError(f"length must be a non-negative integer, not {show(value)}")
    return value


def check_match_fields(hardware_ids: tuple[str, ...], release_counter: object) -> None:
    """Uptane's "SHALL match" fields, as both repositories must carry them."""
    if not hardware_ids or len(hardware_ids) > MAX_HARDWARE_IDS:
        raise MetadataFormatError(f"hardware_ids must list 1-{MAX_HARDWARE_IDS} ids")
    if len(set(hardware_ids)) != len(hardware_ids):
        raise MetadataFormatError("hardware_ids lists an id twice")
    for hwid in hardware_ids:
        check_identifier("hardware id", hwid)
    rc = release_counter
    if not isinstance(rc, int) or isinstance(rc, bool) or not 0 <= rc <= MAX_RELEASE_COUNTER:
        raise MetadataFormatError(f"release_counter must be an integer >= 0, not {show(rc)}")


@dataclass(frozen=True)
class SourceInfo:
    """The exact image a delta applies to."""

    length: int
    hashes: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"length": self.length, "hashes": dict(self.hashes)}

    @classmethod
    def from_dict(cls, data: object) -> SourceInfo:
        if not isinstance(data, Mapping) or set(data) != {"length", "hashes"}:
            raise MetadataFormatError("source must hold exactly length and hashes")
        return cls(check_length(data["length"]), check_hashes(data["hashes"]))


@dataclass(frozen=True)
class TargetCustom:
    """What a target is, for whom, and in which order releases come."""

    hardware_ids: tuple[str, ...]
    release_counter: int
    version: str
    bundle: str
    ecu: str
    kind: Kind = "full"
    image: str | None = None  # delta only: the full image it produces
    source: SourceInfo | None = None  # delta only: the image it applies to

    def __post_init__(self) -> None:
        check_match_fields(self.hardware_ids, self.release_counter)
        check_version(self.version)
        check_identifier("bundle", self.bundle)
        check_identifier("ECU role", self.ecu)
        if self.kind == "full":
            if self.image is not None or self.source is not None:
                raise MetadataFormatError("a full image carries no image or source field")
        elif self.kind == "delta":
            if self.image is None or self.source is None:
                raise MetadataFormatError("a delta must name its image and its source")
            check_target_path(self.image)
        else:
            raise MetadataFormatError(f"kind must be 'full' or 'delta', not {show(self.kind)}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hardware_ids": list(self.hardware_ids),
            "release_counter": self.release_counter,
            "version": self.version,
            "bundle": self.bundle,
            "ecu": self.ecu,
            "kind": self.kind,
        }
        if self.image is not None:
            out["image"] = self.image
        if self.source is not None:
            out["source"] = self.source.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: object) -> TargetCustom:
        """Parse signed custom data strictly: unknown or missing fields are errors."""
        if not isinstance(data, Mapping):
            raise MetadataFormatError("custom must be an object")
        required = {"hardware_ids", "release_counter", "version", "bundle", "ecu", "kind"}
        allowed = required | {"image", "source"}
        if missing := required - set(data):
            raise MetadataFormatError(f"custom lacks {', '.join(sorted(missing))}")
        if unknown := set(data) - allowed:
            raise MetadataFormatError(f"custom has unknown fields {', '.join(sorted(unknown))}")
        hwids = data["hardware_ids"]
        if not isinstance(hwids, list) or not all(isinstance(h, str) for h in hwids):
            raise MetadataFormatError("hardware_ids must be a list of strings")
        source = data.get("source")
        return cls(
            hardware_ids=tuple(hwids),
            release_counter=data["release_counter"],
            version=data["version"],
            bundle=data["bundle"],
            ecu=data["ecu"],
            kind=data["kind"],
            image=data.get("image"),
            source=None if source is None else SourceInfo.from_dict(source),
        )
