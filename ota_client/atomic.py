"""Crash-safe file writes: temp file, fsync, rename, fsync of the file and of the directory.

Every persistent file in the product (repository metadata, the client's state file, the GRUB
environment copies) goes through here, so a power cut leaves either the old or the new content,
never a torn file. The file is synced again *after* the rename because on FAT — a boot
partition — a file's directory entry is its inode: a rename reaches the disk only when the
renamed file is written back, not when its folder is synced (found by killing a guest in
QEMU right after such a write).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


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


def replace_durably(tmp: Path, path: Path) -> None:
    """Rename the finished file ``tmp`` over ``path`` so that the new content survives a power
    cut: the data synced, the rename made, the renamed file and its folder synced."""
    _fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_path(path)
    fsync_dir(path.parent)


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
