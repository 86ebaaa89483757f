"""A/B raw image slots: a file or a block device per slot.

Writes go through ``SlotWriter`` (sequential, fsync'd at checkpoints so a resume point is
durable); ``digest`` reads a slot back to check it against the signed hash. Nothing here
decides *when* to write: the agent marks the slot bad first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from ota_client.atomic import write_atomic
from ota_client.config import SlotConfig

READ_CHUNK = 1 << 20


class SlotError(Exception):
    """A slot cannot be read or written (a device problem: disk full, too small, missing)."""


def capacity(config: SlotConfig, slot: str) -> int | None:
    """Bytes the slot can hold, or None when unknown (a file without a size, a directory)."""
    if config.type == "directory":
        return None
    path = config.path(slot)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return config.size
    except OSError as e:
        raise SlotError(f"slot {slot} ({path}): {e.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        with open(path, "rb") as f:
            return f.seek(0, os.SEEK_END)
    return config.size


def digest(path: Path, length: int, *, hasher: hashlib._Hash | None = None) -> hashlib._Hash:
    """sha256 of the first ``length`` bytes of ``path`` (continuing ``hasher`` if given)."""
    h = hasher or hashlib.sha256()
    remaining = length
    try:
        with open(path, "rb") as f:
            while remaining > 0:
                chunk = f.read(min(READ_CHUNK, remaining))
                if not chunk:
                    raise SlotError(f"{path} is shorter than {length} bytes")
                h.update(chunk)
                remaining -= len(chunk)
    except OSError as e:
        raise SlotError(f"cannot read {path}: {e.strerror}") from None
    return h


class SlotWriter:
    """Sequential writer into a slot (or a download file) from ``offset``, durable on ``sync``."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as e:
            raise SlotError(f"cannot open {path} for writing: {e.strerror}") from None
        self._f = os.fdopen(fd, "wb", buffering=0)
        self._f.seek(offset)
        self.position = offset

    def write(self, data: bytes | memoryview) -> int:
        try:
            view = memoryview(data)
            while view:
                written = self._f.write(view)
                view = view[written:]
        except OSError as e:
            raise SlotError(f"writing {self.path} failed: {e.strerror}") from None
        self.position += len(data)
        return len(data)

    def sync(self) -> None:
        try:
            os.fsync(self._f.fileno())
        except OSError as e:
            raise SlotError(f"syncing {self.path} failed: {e.strerror}") from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SlotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadBackWriter:
    """Sequential writer whose every durable checkpoint is read back and hashed.

    After each ``sync`` the new window is dropped from the page cache and read back from the
    device by a worker thread, so the hash at the end covers what the slot holds — not what
    the network sent — while the next window is still downloading. ``restart`` starts over
    from zero (the server sent a different file).
    """

    def __init__(self, path: Path, start: int = 0) -> None:
        self.path = path
        self.hasher = digest(path, start) if start else hashlib.sha256()
        self.writer = SlotWriter(path, start)
        self.verified = start
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="read-back")
        self._pending: list[Future[None]] = []

    def write(self, data: bytes) -> int:
        return self.writer.write(data)

    def sync(self) -> None:
        self.writer.sync()
        end = self.writer.position
        if end > self.verified:
            self._pending.append(self._pool.submit(self._read_back, self.verified, end))
            self.verified = end

    def _read_back(self, start: int, end: int) -> None:
        try:
            with open(self.path, "rb") as f:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(f.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
                f.seek(start)
                remaining = end - start
                while remaining:
                    chunk = f.read(min(READ_CHUNK, remaining))
                    if not chunk:
                        raise SlotError(f"{self.path} is shorter than what was written to it")
                    self.hasher.update(chunk)
                    remaining -= len(chunk)
        except OSError as e:
            raise SlotError(f"reading back {self.path} failed: {e.strerror}") from None

    def _drain(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def restart(self) -> None:
        self._drain()
        self.writer.close()
        self.writer = SlotWriter(self.path, 0)
        self.hasher = hashlib.sha256()
        self.verified = 0

    def finish(self) -> str:
        """Sync, wait for the read-back, and return the sha256 of everything written."""
        self.sync()
        self._drain()
        return self.hasher.hexdigest()

    def close(self) -> None:
        try:
            self._drain()
        except SlotError:
            pass
        finally:
            self.writer.close()
            self._pool.shutdown()


# -- directory slots (application bundles) ---------------------------------------------------

MARKER = ".ota-image.json"


def _file_digest(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(READ_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def extract_bundle(archive: Path, slot_dir: Path, image: dict[str, object]) -> None:
    """Replace ``slot_dir``'s content with the (verified) tar ``archive``, then read it back.

    Extraction uses tarfile's "data" filter: absolute names, ``..``, links leaving the slot,
    devices and set-uid bits are refused. Every extracted file is compared with its archive
    member; the marker naming the image is written last, so a half-written slot has none.
    """
    try:
        slot_dir.mkdir(parents=True, exist_ok=True)
        for child in slot_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        with tarfile.open(archive, "r:") as tar:
            tar.extractall(slot_dir, filter="data")
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                source = tar.extractfile(member)
                assert source is not None
                with open(slot_dir / member.name, "rb") as written:
                    if _file_digest(source) != _file_digest(written):
                        raise SlotError(f"{member.name} in slot {slot_dir} differs after writing")
        os.sync()
    except (tarfile.TarError, OSError) as e:
        raise SlotError(f"cannot install the bundle into {slot_dir}: {e}") from None
    write_atomic(slot_dir / MARKER, json.dumps(image).encode())


def bundle_marker(slot_dir: Path) -> dict[str, object] | None:
    """The image a directory slot holds, if it was installed completely."""
    try:
        data = json.loads((slot_dir / MARKER).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
