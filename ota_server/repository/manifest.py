"""Release manifests (TOML): what a release manager writes to publish a bundle.

    bundle = "body-control"          # the release (bundle) name
    version = "1.1.0"                # must be newer than every published version of the bundle

    [[images]]                       # one per ECU in the bundle
    ecu = "bcm"                      # ECU role in the vehicle, unique within the bundle
    file = "images/bcm-1.1.0.bin"    # relative to this manifest (or absolute)
    hardware_ids = ["bcm-s32k"]      # ECU hardware types it may be installed on
    # name = "bcm"                   # optional: names the target (default: the ECU role)
    # release_counter = 7            # optional: default is one above the latest for these ids

Parsing is pure (text in, value or ``InputError`` out) and strict: it goes through the shared
strict reader (``ota_client.strict``: size cap, depth cap, no hostile TOML shapes), and unknown
fields, wrong types, out-of-range numbers and unsafe names are errors that name the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from packaging.version import InvalidVersion, Version

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_client.metadata.fields import MAX_HARDWARE_IDS, MAX_RELEASE_COUNTER, check_version
from ota_client.strict import FormatError, Reader, parse_toml, show
from ota_server.errors import InputError

MAX_MANIFEST_BYTES = 1 << 20
MAX_IMAGES = 1024
MAX_FILE_PATH = 4096
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
            f"version {show(text)} is not a comparable version (e.g. 1.4.0, 2024.11.2, 3.0.0rc1)"
        ) from None


def _parse_image(r: Reader) -> ImageSpec:
    ecu = r.identifier("ecu", "ECU role")
    name = r.identifier("name", "image name", ecu)
    file = r.string("file", max_len=MAX_FILE_PATH)
    if not file:
        raise r.fail("file", "must be a non-empty path")
    hwids = r.strings("hardware_ids", max_items=MAX_HARDWARE_IDS)
    for i, hwid in enumerate(hwids):
        try:
            check_identifier("hardware id", hwid)
        except MetadataFormatError:
            raise r.fail(
                f"hardware_ids[{i}]",
                "is not a valid hardware id: use 1-64 ASCII letters, digits and . _ -, "
                f"starting with a letter or digit (got {show(hwid)})",
            ) from None
    checked = tuple(hwids)
    if len(set(checked)) != len(checked):
        raise r.fail("hardware_ids", "lists an id twice")
    counter = r.integer("release_counter", None, low=0, high=MAX_RELEASE_COUNTER)
    r.done()
    return ImageSpec(ecu, name, file, checked, counter)


def parse_manifest(text: str | bytes) -> ReleaseManifest:
    """A manifest from its text (or bytes), or InputError naming the problem."""
    try:
        data = parse_toml(text, "manifest", limit=MAX_MANIFEST_BYTES)
    except FormatError as e:
        raise InputError(str(e).removeprefix("manifest: ")) from None
    return manifest_from_data(data)


def manifest_from_data(data: Mapping[str, Any]) -> ReleaseManifest:
    """Validate a decoded manifest (a TOML document as a dict)."""
    try:
        r = Reader(data)
        bundle = r.identifier("bundle", "bundle name")
        version = r.string("version", max_len=64, check=check_version)
        images = r.tables("images", max_items=MAX_IMAGES)
        r.done()
    except FormatError as e:
        raise InputError(str(e)) from None
    parse_version(version)
    if not images:
        raise InputError("the bundle is empty: add at least one [[images]] table")
    try:
        specs = tuple(_parse_image(image) for image in images)
    except FormatError as e:
        raise InputError(str(e)) from None
    seen: set[str] = set()
    for spec in specs:
        if spec.ecu in seen:
            raise InputError(f"ECU role {spec.ecu!r} appears twice in the bundle")
        seen.add(spec.ecu)
    return ReleaseManifest(bundle, version, specs)
