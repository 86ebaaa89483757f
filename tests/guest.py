"""A Linux guest booted by the project's GRUB script: a Debian kernel and a busybox initrd.

``make guest`` fetches the kernel and busybox packages (``apt-get download``, no install) into
``.guest/``. The initrd is built here (cpio ``newc`` in Python, kernel modules with their
dependencies read from each module's ``depends=``): it mounts the disk's FAT partition, the
host's root over 9p (read-only), and runs what ``/ota-test.sh`` on the partition says — print
the kernel command line, or run the real client from the host inside a chroot. Everything it
prints goes to the serial port. Killing QEMU loses the guest's unwritten cache: a power cut.
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.grub_disk import COPIES, GrubDisk, _run, serial_text

MODULES = [
    "virtio_pci", "9pnet_virtio", "9p",  # the host's root over 9p
    "ata_piix", "sd_mod",  # the IDE disk
    "vfat", "nls_cp437", "nls_utf8", "nls_ascii",  # its FAT partition
]  # fmt: skip
FAT_KIB = 40 << 10
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec >/dev/ttyS0 2>&1
for m in $(cat /modules); do insmod /m/$m.ko || echo "OTA-GUEST insmod $m failed"; done
for i in $(seq 50); do [ -e /dev/sda1 ] && break; sleep 0.1; done
echo "OTA-CMDLINE $(cat /proc/cmdline)"
mount -t vfat /dev/sda1 /mnt || echo "OTA-GUEST no FAT partition"
mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host || echo "OTA-GUEST no 9p"
[ -f /mnt/ota-test.sh ] && . /mnt/ota-test.sh
echo "OTA-GUEST done"
poweroff -f
"""


def guest_dir() -> Path | None:
    value = os.environ.get("OTA_GUEST_DIR")
    path = Path(value) if value else Path(__file__).resolve().parent.parent / ".guest"
    return path if (path / ".done").exists() else None


def _depends(module: Path) -> list[str]:
    match = re.search(rb"depends=([^\0]*)\0", module.read_bytes())
    return [d for d in (match.group(1).decode().split(",") if match else []) if d]


def _modules(root: Path) -> list[Path]:
    """The modules to load, each after its dependencies."""
    index = {p.stem: p for p in (root / "lib/modules").rglob("*.ko")}
    order: list[Path] = []

    def visit(name: str) -> None:
        path = index[name.replace("-", "_")] if name not in index else index[name]
        for dep in _depends(path):
            visit(dep)
        if path not in order:
            order.append(path)

    index.update({k.replace("-", "_"): v for k, v in list(index.items())})
    for name in MODULES:
        visit(name)
    return order


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        out += ("070701" + "".join(f"{v:08x}" for v in fields)).encode() + name.encode() + b"\0"
        pad()
        out += data
        pad()
    return bytes(out)


def initrd(root: Path) -> bytes:
    modules = _modules(root)
    entries: list[tuple[str, int, bytes]] = [
        (d, stat.S_IFDIR | 0o755, b"") for d in ("bin", "proc", "sys", "dev", "mnt", "host", "m")
    ]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, (root / "bin/busybox").read_bytes()))
    entries.append(("init", stat.S_IFREG | 0o755, INIT.encode()))
    names = " ".join(p.stem for p in modules)
    entries.append(("modules", stat.S_IFREG | 0o644, names.encode()))
    entries += [(f"m/{p.stem}.ko", stat.S_IFREG | 0o644, p.read_bytes()) for p in modules]
    return gzip.compress(_newc(entries), 1)


KERNEL_GRUB_CFG = """serial --unit=0 --speed=115200
terminal_output serial
terminal_input serial
set timeout=0
source ${prefix}/ota.cfg
echo "OTA-DECISION slot=${ota_slot}"
"""


@dataclass
class KernelDisk(GrubDisk):
    """A GRUB disk whose slots a and b each hold the kernel and the initrd."""

    @classmethod
    def build_kernel(cls, work: Path, root: Path) -> KernelDisk:
        work.mkdir(parents=True, exist_ok=True)
        (work / "initrd.img").write_bytes(initrd(root))
        kernel = next((root / "boot").glob("vmlinuz-*"))
        files = {f"{slot}/vmlinuz": kernel for slot in ("a", "b")}
        files |= {f"{slot}/initrd.img": work / "initrd.img" for slot in ("a", "b")}
        return cls.build(work, KERNEL_GRUB_CFG, files=files, fat_kib=FAT_KIB)

    def put_root(self, name: str, data: bytes, work: Path) -> None:
        """Write ``/<name>`` at the top of the partition (the guest's instructions)."""
        src = work / f".put-{name}"
        src.write_bytes(data)
        _run("mcopy", "-o", "-i", self.fat, src, f"::/{name}")
        src.unlink()

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        log.unlink(missing_ok=True)
        return subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-display", "none",
             "-serial", f"file:{log}", "-no-reboot", "-monitor", "none",
             "-drive", f"file={self.path},format=raw,if=ide",
             "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def boot(self, log: Path, timeout: float = 180) -> str:
        return super().boot(log, timeout)


def cmdline(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("OTA-CMDLINE "):
            return line.removeprefix("OTA-CMDLINE ")
    return None


__all__ = ["COPIES", "KernelDisk", "cmdline", "guest_dir", "initrd", "serial_text"]
