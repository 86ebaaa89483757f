"""A BIOS GRUB disk for QEMU, built without loop devices or mounts, and ways to boot it.

The disk: an MBR (GRUB's ``boot.img``), ``core.img`` in the gap after it, one FAT partition
at 1 MiB holding ``/boot/grub/grub.cfg``, the project's ``contrib/grub/ota.cfg`` unmodified,
and the client's two environment copies. The test ``grub.cfg`` sources ``ota.cfg``, prints
its decision on the serial port and halts — GRUB reaches it in well under a second under TCG.
The host reads and writes the copies inside the image with mtools.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parent.parent
OTA_CFG = REPO / "contrib/grub/ota.cfg"
MODULES = "biosdisk part_msdos fat normal configfile loadenv test echo linux serial terminal halt"
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "grub-mkimage": "grub-common",
    "mcopy": "mtools",
    "mkfs.vfat": "dosfstools",
    "sfdisk": "fdisk",
}
PARTITION = 1 << 20  # the FAT partition starts at 1 MiB
FAT_KIB = 7168
COPIES = ("ota-env.0", "ota-env.1")
DECIDE = """serial --unit=0 --speed=115200
terminal_output serial
terminal_input serial
source ${prefix}/ota.cfg
echo "OTA-DECISION slot=${ota_slot}"
halt
"""


def missing_tools() -> list[str]:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if not Path("/usr/lib/grub/i386-pc/boot.img").exists():
        missing.append("grub-pc-bin")
    return missing


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=60)


@dataclass
class GrubDisk:
    path: Path
    fat: str  # mtools image spec of the partition: "<disk>@@<offset>"

    @classmethod
    def build(
        cls,
        work: Path,
        grub_cfg: str = DECIDE,
        *,
        files: dict[str, Path] | None = None,
        fat_kib: int = FAT_KIB,
    ) -> Self:
        """The disk, with ``files`` (partition path -> host file) added to the partition."""
        work.mkdir(parents=True, exist_ok=True)
        core, fat, disk = work / "core.img", work / "fat.img", work / "disk.img"
        _run("grub-mkimage", "-O", "i386-pc", "-p", "(hd0,msdos1)/boot/grub", "-o", core,
             *MODULES.split())  # fmt: skip
        fat.unlink(missing_ok=True)
        _run("mkfs.vfat", "-C", fat, str(fat_kib))
        extra = files or {}
        folders = {"boot", "boot/grub"} | {str(Path(name).parent) for name in extra}
        _run("mmd", "-i", fat, *(f"::/{d}" for d in sorted(folders - {"."})))
        (work / "grub.cfg").write_text(grub_cfg)
        _run("mcopy", "-i", fat, work / "grub.cfg", "::/boot/grub/grub.cfg")
        _run("mcopy", "-i", fat, OTA_CFG, "::/boot/grub/ota.cfg")
        for name, source in extra.items():
            _run("mcopy", "-i", fat, source, f"::/{name}")
        with open(disk, "wb") as f:
            f.truncate(PARTITION + (fat_kib << 10))
        subprocess.run(["sfdisk", "-q", str(disk)], input="start=2048, type=c, bootable\n",
                       text=True, check=True, capture_output=True, timeout=60)  # fmt: skip
        _run("dd", f"if={fat}", f"of={disk}", "bs=512", "seek=2048", "conv=notrunc", "status=none")
        _run("dd", "if=/usr/lib/grub/i386-pc/boot.img", f"of={disk}", "bs=446", "count=1",
             "conv=notrunc", "status=none")  # fmt: skip
        _run("dd", f"if={core}", f"of={disk}", "bs=512", "seek=1", "conv=notrunc", "status=none")
        fat.unlink()
        return cls(disk, f"{disk}@@{PARTITION}")

    def put(self, name: str, data: bytes | None, work: Path) -> None:
        """Write (or, with None, delete) ``/boot/grub/<name>`` in the partition."""
        subprocess.run(["mdel", "-i", self.fat, f"::/boot/grub/{name}"], capture_output=True)
        if data is not None:
            src = work / f".put-{name}"
            src.write_bytes(data)
            _run("mcopy", "-o", "-i", self.fat, src, f"::/boot/grub/{name}")
            src.unlink()

    def get(self, name: str, work: Path) -> bytes | None:
        out = work / f".get-{name}"
        out.unlink(missing_ok=True)
        done = subprocess.run(["mcopy", "-n", "-i", self.fat, f"::/boot/grub/{name}", str(out)],
                              capture_output=True, timeout=60)  # fmt: skip
        if done.returncode != 0:
            return None
        data = out.read_bytes()
        out.unlink()
        return data

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        log.unlink(missing_ok=True)
        return subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-m", "64", "-display", "none",
             "-serial", f"file:{log}", "-no-reboot", "-monitor", "none",
             "-drive", f"file={self.path},format=raw,if=ide"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def boot(self, log: Path, timeout: float = 60) -> str:
        """Boot until GRUB halts; the serial output."""
        proc = self.start(log)
        try:
            proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return serial_text(log)


def serial_text(log: Path) -> str:
    import re

    raw = log.read_bytes().decode("utf-8", "replace") if log.exists() else ""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).replace("\r", "")


def decision(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("OTA-DECISION slot="):
            return line.split("=", 1)[1].strip()
    return None


def wait_until(predicate: object, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():  # type: ignore[operator]
        time.sleep(0.01)
