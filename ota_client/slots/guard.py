"""Which slot may be written: never the booted one, never the running root device.

A slot is compared by what it *is* (``st_rdev`` of a block device, ``st_dev``/``st_ino`` of a
file or folder), not by its name: a symlink, a hard link, ``data/../slot-a.img`` or two
``/dev/disk/by-*`` links to one partition are the same slot. Checked again right before every
write, because names can change between the config check and the write.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ota_client.errors import DeviceError

Identity = tuple[str, int, int]


def identity(path: Path) -> Identity | None:
    """What ``path`` is, or None if it does not exist (yet)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DeviceError(f"cannot inspect {path}: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISBLK(st.st_mode):
        return ("block", st.st_rdev, 0)
    return ("file", st.st_dev, st.st_ino)


def _root_devices() -> set[int]:
    """The device holding ``/`` and, when it is a partition, the whole disk around it."""
    dev = os.stat("/").st_dev
    devices = {dev}
    try:
        sysfs = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
        with open(os.path.join(os.path.dirname(sysfs), "dev")) as f:
            major, minor = f.read(32).strip().split(":")
        devices.add(os.makedev(int(major), int(minor)))
    except (OSError, ValueError):
        pass
    return devices


def check_writable(target: Path, booted: Path) -> None:
    """Refuse to write ``target`` if it is the booted slot or the running root device."""
    ident = identity(target)
    if ident is None:
        return  # a file slot that does not exist yet is nothing that runs
    if ident == identity(booted):
        raise DeviceError(f"refusing to write {target}: it is the booted slot ({booted})")
    if ident[0] == "block" and ident[1] in _root_devices():
        raise DeviceError(f"refusing to write {target}: it holds the running root file system")
