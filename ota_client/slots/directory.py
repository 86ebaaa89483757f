"""Directory slots: application bundles (tar images) installed into A/B folders.

The slot is emptied, the (verified) archive extracted with tarfile's "data" filter (absolute
names, ``..``, links leaving the slot, devices and set-uid bits are refused), every file read
back and compared with its archive member, and only then the marker naming the image written
(atomically) — so a half-written slot has no marker and is never taken for an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import asdict
from pathlib import Path
from typing import IO

from ota_client.agent.records import Image, parse_image
from ota_client.atomic import write_atomic
from ota_client.errors import DeviceError
from ota_client.slots.raw import READ_CHUNK
from ota_client.strict import FormatError, parse_json, read_bounded

MARKER = ".ota-image.json"
MAX_MARKER = 16 << 10
MAX_MEMBERS = 200_000


def _file_digest(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(READ_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def install_bundle(archive: Path, slot_dir: Path, marker: bytes) -> None:
    """Replace ``slot_dir``'s content with ``archive``, read it back, then write ``marker``."""
    try:
        slot_dir.mkdir(parents=True, exist_ok=True)
        for child in slot_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        with tarfile.open(archive, "r:") as tar:
            members = []
            for member in tar:
                members.append(member)
                if len(members) > MAX_MEMBERS:
                    raise DeviceError(f"the bundle holds more than {MAX_MEMBERS} entries")
            tar.extractall(slot_dir, members=members, filter="data")
            for member in members:
                if not member.isfile():
                    continue
                source = tar.extractfile(member)
                assert source is not None
                with open(slot_dir / member.name, "rb") as written:
                    if _file_digest(source) != _file_digest(written):
                        raise DeviceError(f"{member.name} in slot {slot_dir} differs after writing")
        os.sync()
    except (tarfile.TarError, OSError) as e:
        raise DeviceError(f"cannot install the bundle into {slot_dir}: {e}") from None
    write_atomic(slot_dir / MARKER, marker)


def read_marker(slot_dir: Path) -> bytes | None:
    """The marker of a completely installed slot, or None."""
    try:
        return read_bounded(slot_dir / MARKER, MAX_MARKER)
    except (FileNotFoundError, FormatError):
        return None


class DirectorySlot:
    """A folder holding an extracted bundle and a marker naming the image it holds."""

    streams_full_images = False

    def __init__(self, path: Path) -> None:
        self.path = path

    def capacity(self) -> int | None:
        return None

    def running(self, images: list[Image]) -> Image | None:
        marker = read_marker(self.path)
        try:
            return None if marker is None else parse_image(parse_json(marker, "marker"), "marker")
        except FormatError:
            return None  # a marker that does not parse names nothing

    def install(self, staged: Path, target: Image, source: Path, source_length: int | None) -> None:
        install_bundle(staged, self.path, json.dumps(asdict(target)).encode())
