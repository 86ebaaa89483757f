"""Release manifests (TOML): what a release manager writes to publish a bundle.

    bundle = "body-control"          # the release (bundle) name
    version = "1.1.0"                # must be newer than every published version of the bundle

    [[images]]                       # one per ECU in the bundle
    ecu = "bcm"                      # ECU role in the vehicle, unique within the bundle
    file = "images/bcm-1.1.0.bin"    # relative to this manifest (or absolute)
    hardware_ids = ["bcm-s32k"]      # ECU hardware types it may be installed on
    # name = "bcm"                   # optional: names the target (default: the ECU role)
    # release_counter = 7            # optional: default is one above the latest for these ids

Parsing is pure (text in, value or ``InputError`` out) and strict: unknown fields, wrong types
and unsafe names are errors that name the offending field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from packaging.version import InvalidVersion, Version

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_client.metadata.fields import MAX_HARDWARE_IDS, check_version
from ota_server.errors import InputError

MAX_MANIFEST_BYTES = 1 << 20
MAX_IMAGES = 1024
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


@dataclass(frozen=True)
class ImageSpec:
    ecu: str
    name: str
    file: str
    hardware_ids: tuple[str, ...]
    release_counter: int | None = None

    @property
    def suffix(self) -> str:
        """The file's extension if it is a plain one, else ``.img``."""
        suffix = PurePosixPath(self.file).suffix
        return suffix if _SUFFIX.fullmatch(suffix) else ".img"


@dataclass(frozen=True)
class ReleaseManifest:
    bundle: str
    version: str
    images: tuple[ImageSpec, ...]

    @property
    def parsed_version(self) -> Version:
        return parse_version(self.version)


def parse_version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise InputError(
            f"version {text!r} is not a comparable version (e.g. 1.4.0, 2024.11.2, 3.0.0rc1)"
        ) from None


def _check(where: str, kind: str, value: object) -> str:
    try:
        return check_identifier(kind, value)
    except MetadataFormatError as e:
        raise InputError(f"{where}: {e}") from None


def _parse_image(i: int, data: object) -> ImageSpec:
    where = f"images[{i}]"
    if not isinstance(data, Mapping):
        raise InputError(f"{where} must be a table")
    allowed = {"ecu", "name", "file", "hardware_ids", "release_counter"}
    if unknown := set(data) - allowed:
        raise InputError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    for key in ("ecu", "file", "hardware_ids"):
        if key not in data:
            raise InputError(f"{where}: missing field {key!r}")
    ecu = _check(f"{where}.ecu", "ECU role", data["ecu"])
    name = _check(f"{where}.name", "image name", data.get("name", ecu))
    file = data["file"]
    if not isinstance(file, str) or not file or "\0" in file:
        raise InputError(f"{where}.file must be a non-empty path")
    hwids = data["hardware_ids"]
    if not isinstance(hwids, list) or not 1 <= len(hwids) <= MAX_HARDWARE_IDS:
        raise InputError(f"{where}.hardware_ids must list 1-{MAX_HARDWARE_IDS} hardware ids")
    checked = tuple(_check(f"{where}.hardware_ids", "hardware id", h) for h in hwids)
    if len(set(checked)) != len(checked):
        raise InputError(f"{where}.hardware_ids lists an id twice")
    counter = data.get("release_counter")
    if counter is not None and (
        isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter < 2**63
    ):
        raise InputError(f"{where}.release_counter must be an integer >= 0")
    return ImageSpec(ecu, name, file, checked, counter)


def parse_manifest(text: str) -> ReleaseManifest:
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"malformed TOML: {e}") from None
    return manifest_from_data(data)


def manifest_from_data(data: Mapping[str, Any]) -> ReleaseManifest:
    """Validate a decoded manifest (a TOML document as a dict)."""
    if unknown := set(data) - {"bundle", "version", "images"}:
        raise InputError(f"unknown field {sorted(unknown)[0]!r}")
    for key in ("bundle", "version"):
        if key not in data:
            raise InputError(f"missing field {key!r}")
    bundle = _check("bundle", "bundle name", data["bundle"])
    try:
        version = check_version(data["version"])
    except MetadataFormatError as e:
        raise InputError(f"version: {e}") from None
    parse_version(version)
    images = data.get("images", [])
    if not isinstance(images, list) or not images:
        raise InputError("the bundle is empty: add at least one [[images]] table")
    if len(images) > MAX_IMAGES:
        raise InputError(f"a bundle holds at most {MAX_IMAGES} images")
    specs = tuple(_parse_image(i, image) for i, image in enumerate(images))
    seen: set[str] = set()
    for spec in specs:
        if spec.ecu in seen:
            raise InputError(f"ECU role {spec.ecu!r} appears twice in the bundle")
        seen.add(spec.ecu)
    return ReleaseManifest(bundle, version, specs)
