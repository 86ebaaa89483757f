"""Raw image slots: a file or a block device per slot.

Writes go through ``ReadBackWriter``: sequential, fsync'd at checkpoints (so a resume point is
durable), and every durable window read back from the device and hashed, so the hash at the
end covers what the slot holds — not what the network sent. ``SourceWindow`` gives a delta the
first N bytes of the running slot (N the signed source length), so a delta applies to any slot
at least as large as its source image: a partition is always larger than the image in it.

Nothing here decides *when* to write: the agent marks the slot bad first and checks, right
before opening it, that it is not the booted slot (``guard``).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ota_client.agent.records import Image
from ota_client.errors import DeviceError
from ota_client.payload.apply import apply_payload

READ_CHUNK = 1 << 20
MAX_PROBES = 8  # lengths hashed to learn which image a slot holds


def _err(what: str, e: OSError) -> DeviceError:
    return DeviceError(f"{what}: {e.strerror or e}")


def capacity(path: Path, size: int | None) -> int | None:
    """Bytes the slot can hold: a block device's size, else the configured size (or None)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return size
    except OSError as e:
        raise _err(f"slot {path}", e) from None
    if stat.S_ISBLK(st.st_mode):
        try:
            with open(path, "rb") as f:
                return f.seek(0, os.SEEK_END)
        except OSError as e:
            raise _err(f"slot {path}", e) from None
    return size


def digest(path: Path, length: int) -> str:
    """sha256 of the first ``length`` bytes of ``path``."""
    h = hashlib.sha256()
    remaining = length
    try:
        with open(path, "rb") as f:
            while remaining > 0:
                chunk = f.read(min(READ_CHUNK, remaining))
                if not chunk:
                    raise DeviceError(f"{path} is shorter than {length} bytes")
                h.update(chunk)
                remaining -= len(chunk)
    except OSError as e:
        raise _err(f"cannot read {path}", e) from None
    return h.hexdigest()


class SourceWindow(io.RawIOBase):
    """The first ``length`` bytes of a slot, as a seekable read-only file (a delta's source)."""

    def __init__(self, path: Path, length: int) -> None:
        super().__init__()
        try:
            self._f = open(path, "rb")  # noqa: SIM115 - closed with the window
        except OSError as e:
            raise _err(f"cannot read {path}", e) from None
        self.length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        left = self.length - self._pos
        if left <= 0:
            return b""
        size = left if size is None or size < 0 else min(size, left)
        self._f.seek(self._pos)
        data = self._f.read(size)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._f.close()
        super().close()


class SlotWriter:
    """Sequential writer into a slot (or a staged file) from ``offset``, durable on ``sync``."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except (OSError, ValueError) as e:
            raise DeviceError(f"cannot open {path} for writing: {e}") from None
        self._f = os.fdopen(fd, "wb", buffering=0)
        try:
            self._f.seek(offset)
        except OSError as e:
            self._f.close()
            raise _err(f"cannot seek in {path}", e) from None
        self.position = offset

    def write(self, data: bytes | memoryview) -> int:
        try:
            view = memoryview(data)
            while view:
                written = self._f.write(view)
                view = view[written:]
        except OSError as e:
            raise _err(f"writing {self.path} failed", e) from None
        self.position += len(data)
        return len(data)

    def sync(self) -> None:
        try:
            os.fsync(self._f.fileno())
        except OSError as e:
            raise _err(f"syncing {self.path} failed", e) from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SlotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadBackWriter:
    """Sequential writer whose every durable checkpoint is read back and hashed.

    After each ``sync`` the new window is dropped from the page cache and read back from the
    device by a worker thread, while the next window is still downloading. ``restart`` starts
    over from zero (the server sent a different file).
    """

    def __init__(self, path: Path, start: int = 0) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        if start:
            self._hash_range(0, start)
        self.writer = SlotWriter(path, start)
        self.verified = start
        self.restarted = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="read-back")
        self._pending: list[Future[None]] = []

    def write(self, data: bytes) -> int:
        return self.writer.write(data)

    def sync(self) -> None:
        self.writer.sync()
        end = self.writer.position
        if end > self.verified:
            self._pending.append(self._pool.submit(self._hash_range, self.verified, end))
            self.verified = end

    def _hash_range(self, start: int, end: int) -> None:
        try:
            with open(self.path, "rb") as f:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(f.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
                f.seek(start)
                remaining = end - start
                while remaining:
                    chunk = f.read(min(READ_CHUNK, remaining))
                    if not chunk:
                        raise DeviceError(f"{self.path} is shorter than what was written to it")
                    self.hasher.update(chunk)
                    remaining -= len(chunk)
        except OSError as e:
            raise _err(f"reading back {self.path} failed", e) from None

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
        self.restarted = True

    def finish(self) -> str:
        """Sync, wait for the read-back, and return the sha256 of everything written."""
        self.sync()
        self._drain()
        return self.hasher.hexdigest()

    def close(self) -> None:
        try:
            self._drain()
        except DeviceError:
            pass
        finally:
            self.writer.close()
            self._pool.shutdown()


class RawSlot:
    """A file or a block device; a full image streams straight in."""

    streams_full_images = True

    def __init__(self, path: Path, size: int | None) -> None:
        self.path, self.size = path, size

    def capacity(self) -> int | None:
        return capacity(self.path, self.size)

    def running(self, images: list[Image]) -> Image | None:
        digests: dict[int, str | None] = {}
        for image in images:
            if image.length not in digests:
                if len(digests) >= MAX_PROBES:
                    continue
                try:
                    digests[image.length] = digest(self.path, image.length)
                except DeviceError:
                    digests[image.length] = None  # shorter than this image
            if digests[image.length] == image.sha256:
                return image
        return None

    def install(self, staged: Path, target: Image, source: Path, source_length: int | None) -> None:
        """Apply the staged delta to the first ``source_length`` bytes of ``source``."""
        assert source_length is not None, "a raw slot installs deltas only"
        try:
            with (
                open(staged, "rb") as payload,
                SourceWindow(source, source_length) as window,
                SlotWriter(self.path) as out,
            ):
                apply_payload(
                    payload,
                    out,
                    window,  # type: ignore[arg-type]
                    expect_size=target.length,
                    expect_sha256=bytes.fromhex(target.sha256),
                )
                out.sync()
        except OSError as e:
            raise _err(f"applying the delta to {self.path}", e) from None
        if digest(self.path, target.length) != target.sha256:
            raise DeviceError(f"{self.path} does not hold the signed image after writing it")
