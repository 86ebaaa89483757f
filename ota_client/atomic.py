"""Crash-safe file writes: temp file, fsync, rename, fsync of the file and of the directory.

Every persistent file in the product (repository metadata, the client's state file, the GRUB
environment copies) goes through here, so a power cut leaves either the old or the new content,
never a torn file. The file is synced again *after* the rename because on FAT — a boot
partition — a file's directory entry is its inode: a rename reaches the disk only when the
renamed file is written back, not when its folder is synced; and a FAT partition is synced
whole, because that write-back can land in the device's buffers where no fsync reaches (both
found by killing a guest in QEMU right after such writes: tests/test_real_boot.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if os.name == "posix" else None


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Flush everything of the file system holding ``path`` (Linux ``syncfs``; ``sync``
    elsewhere). FAT needs it: when the kernel wrote a renamed file's directory entry back on
    its own before the fsync, that entry sits in the device's buffers, which neither fsync of
    the file nor of the folder flushes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _LIBC is not None and _LIBC.syncfs(fd) == 0:
            return
    finally:
        os.close(fd)
    os.sync()


def replace_durably(tmp: Path, path: Path, *, whole_fs: bool = False) -> None:
    """Rename the finished file ``tmp`` over ``path`` so that the new content survives a power
    cut: the data synced, the rename made, the renamed file and its folder synced — and, with
    ``whole_fs`` (a FAT boot partition), the file system."""
    _fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_path(path)
    fsync_dir(path.parent)
    if whole_fs:
        sync_filesystem(path)


@contextmanager
def atomic_file(path: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` only if the block completes (then durably)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), mode)
        replace_durably(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_file(path, mode=mode) as f:
        f.write(data)
