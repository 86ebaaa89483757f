"""Booted for real: the project's GRUB script, unmodified, in QEMU (TCG), against the rules.

Environments are written on the host by the client's own GRUB backend (``GrubBoot``, the real
``grub-editenv``), sometimes with the copy being written torn as a power cut would leave it,
and copied into a BIOS GRUB disk (``tests/grub_disk.py``). GRUB must choose what
``boot/rules.py`` chooses for every state, and save what the rules save. QEMU is also killed at
random moments while GRUB saves its attempt counter: afterwards the environment is the old or
the new one, and the next boot chooses what the rules say.

CI runs OTA_REALBOOT_STATES (default 40) states and OTA_REALBOOT_KILLS (default 30) kills;
``make bench-boot`` runs the full campaign.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ota_client.boot import rules
from ota_client.boot.control import GrubBoot, UBootBoot
from ota_client.boot.rules import BootError
from tests import guest_ops
from tests.grub_disk import (
    COPIES,
    PARTITION,
    REPO,
    GrubDisk,
    decision,
    missing_tools,
    serial_text,
)
from tests.guest import KernelDisk, cmdline, guest_dir

STATES = int(os.environ.get("OTA_REALBOOT_STATES", "40"))
KILLS = int(os.environ.get("OTA_REALBOOT_KILLS", "30"))
SEED = int(os.environ.get("OTA_REALBOOT_SEED", "13"))

pytestmark = pytest.mark.realboot


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> GrubDisk:
    if missing := missing_tools():
        message = f"real boots need {', '.join(sorted(set(missing)))} (make test installs them)"
        if os.environ.get("OTA_REQUIRE_REALBOOT"):
            pytest.fail(message)
        pytest.skip(message)
    return GrubDisk.build(tmp_path_factory.mktemp("grub-disk"))


class Host:
    """The client's GRUB backend on host files, mirrored into the disk image."""

    def __init__(self, work: Path, disk: GrubDisk) -> None:
        self.dir, self.disk, self.work = work / "env", disk, work
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "cmdline").write_text("ota.slot=a\n")
        self.boot = GrubBoot(self.dir, self.dir / "cmdline")
        self.boot.ensure()

    def to_disk(self) -> None:
        for name in COPIES:
            path = self.dir / name
            self.disk.put(name, path.read_bytes() if path.exists() else None, self.work)

    def from_disk(self) -> None:
        for name in COPIES:
            data = self.disk.get(name, self.work)
            path = self.dir / name
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)

    def booted(self, slot: str) -> None:
        (self.dir / "cmdline").write_text(f"ota.slot={slot}\n")


def tear(path: Path, rnd: random.Random) -> None:
    """What a power cut can leave of a copy being replaced."""
    data = path.read_bytes() if path.exists() else b""
    cut = rnd.randrange(4)
    if cut == 0:
        path.write_bytes(b"")
    elif cut == 1:
        path.write_bytes(data[: rnd.randrange(max(1, len(data)))])
    elif cut == 2:
        path.write_bytes(bytes(1024))
    else:
        path.unlink(missing_ok=True)


def random_state(host: Host, rnd: random.Random) -> None:
    """A few client verbs, each write possibly cut short (the copy it was replacing torn)."""
    boot = host.boot
    for _ in range(rnd.randrange(1, 6)):
        env = boot.read_env()
        active = rules.active(env)
        spare = rules.other(active)
        verb = rnd.choice(["arm", "commit", "bad", "boot"])
        if verb == "arm":
            changes = rules.arm(env, spare, rnd.randint(1, 9))
        elif verb == "commit":
            changes = rules.commit(rnd.choice([active, spare]))
        elif verb == "bad":
            changes = rules.mark_bad(env, spare)
        else:
            changes = rules.next_boot(env)[0]
        index, _env = boot._in_force()
        target = boot.copies[0 if index is None else 1 - index]
        boot.write_env(changes)
        if rnd.random() < 0.3:
            tear(target, rnd)


def test_grub_decides_what_the_rules_say(disk: GrubDisk, tmp_path: Path) -> None:
    rnd = random.Random(SEED)
    agreed = 0
    for n in range(STATES):
        host = Host(tmp_path / f"s{n}", disk)
        random_state(host, rnd)
        env = host.boot.read_env()
        changes, expected = rules.next_boot(env)
        host.to_disk()
        out = disk.boot(tmp_path / "serial.log")
        assert decision(out) == expected, (n, env, out[-500:])
        host.from_disk()  # what GRUB saved: exactly the rule's changes
        assert host.boot.read_env() == {**env, **changes}, (n, env, changes)
        agreed += 1
    assert agreed == STATES


def test_grub_an_emptied_copy_still_boots_the_committed_slot(
    disk: GrubDisk, tmp_path: Path
) -> None:
    """The regression: a cut during the client's write emptied grubenv and GRUB booted slot a
    with no trial although b was committed. Only the copy being replaced can be emptied now."""
    host = Host(tmp_path, disk)
    host.boot.arm_trial("b", 3)
    host.boot.mark_good("b")  # committed b
    index, _env = host.boot._in_force()
    assert index is not None
    host.boot.mark_bad("a")
    (host.boot.copies[index]).write_bytes(b"")  # ... and the next write was cut: empty copy
    host.to_disk()
    assert decision(disk.boot(tmp_path / "serial.log")) == "b"
    for name in COPIES:  # and with no environment at all GRUB takes a, the rules' default
        disk.put(name, None, tmp_path)
    assert decision(disk.boot(tmp_path / "serial.log")) == rules.next_boot({})[1] == "a"


def test_grub_killed_while_saving_its_counter(disk: GrubDisk, tmp_path: Path) -> None:
    """SIGKILL of QEMU at random moments while GRUB saves the decremented attempt count:
    the environment is then the old or the new one, and the next boot follows the rules."""
    rnd = random.Random(SEED + 1)
    seen = {"old": 0, "new": 0}
    log = tmp_path / "serial.log"
    for n in range(KILLS):
        host = Host(tmp_path / f"k{n}", disk)
        host.boot.arm_trial("b", rnd.randint(1, 9))
        before = host.boot.read_env()
        changes, _slot = rules.next_boot(before)
        host.to_disk()
        proc = disk.start(log)
        time.sleep(rnd.uniform(0.05, 0.6))
        proc.kill()
        proc.wait()
        host.from_disk()
        now = host.boot.read_env()
        assert now in (before, {**before, **changes}), (n, before, now)
        seen["old" if now == before else "new"] += 1
        host.to_disk()
        out = disk.boot(log)
        assert decision(out) == rules.next_boot(now)[1], (n, now, serial_text(log)[-300:])
    if KILLS >= 20:
        assert seen["old"] and seen["new"], seen  # the kills landed before and after the save


# -- a Linux guest: the kernel command line, and the client writing inside it ----------------

GUEST_KILLS = int(os.environ.get("OTA_REALBOOT_GUEST_KILLS", "3"))
OPS = 40


@pytest.fixture(scope="module")
def kernel_disk(tmp_path_factory: pytest.TempPathFactory, disk: GrubDisk) -> KernelDisk:
    root = guest_dir()
    if root is None:
        message = "no guest kernel in .guest/ (make guest fetches it; make test runs it)"
        if os.environ.get("OTA_REQUIRE_REALBOOT"):
            pytest.fail(message)
        pytest.skip(message)
    return KernelDisk.build_kernel(tmp_path_factory.mktemp("kernel-disk"), root / "root")


@pytest.mark.parametrize(
    ("arm", "commit", "slot"), [(False, False, "a"), (True, False, "b"), (True, True, "b")]
)
def test_the_booted_kernel_carries_the_slot_grub_chose(
    kernel_disk: KernelDisk, tmp_path: Path, arm: bool, commit: bool, slot: str
) -> None:
    """Full boots: GRUB's menu entry from ota.cfg hands the kernel ota.slot= of its choice."""
    host = Host(tmp_path, kernel_disk)
    if arm:
        host.boot.arm_trial("b", 3)
    if commit:
        host.boot.mark_good("b")
    host.to_disk()
    kernel_disk.put_root("ota-test.sh", b"", tmp_path)
    out = kernel_disk.boot(tmp_path / "serial.log")
    assert decision(out) == slot, out[-2000:]
    line = cmdline(out)
    assert line is not None and f"ota.slot={slot}" in line.split(), out[-2000:]


GUEST_SCRIPT = """mount --bind /mnt /host/mnt
mount -t proc proc /host/proc
mount -t devtmpfs dev /host/dev
ops="-m tests.guest_ops --dir /mnt/boot/grub --seed {seed} --count {count}"
chroot /host /bin/sh -c "cd {repo} && PYTHONDONTWRITEBYTECODE=1 exec {python} $ops"
"""


def guest_kill(n: int, kernel_disk: KernelDisk, disk: GrubDisk, work: Path) -> str:
    """One kill of a guest whose client is rewriting the environment; the phase it hit."""
    rnd = random.Random(f"{SEED}:{n}")
    host = Host(work, kernel_disk)
    if rnd.random() < 0.5:
        host.boot.arm_trial("b", 3)
    start = host.boot.read_env()
    seed = rnd.randrange(1 << 30)
    host.to_disk()
    script = GUEST_SCRIPT.format(repo=REPO, python=sys.executable, seed=seed, count=OPS)
    kernel_disk.put_root("ota-test.sh", script.encode(), work)
    booted_env = {**start, **rules.next_boot(start)[0]}  # GRUB saved its count first
    expected = guest_ops.states(booted_env, seed, OPS)
    log = work / "serial.log"
    proc = kernel_disk.start(log)
    deadline = time.monotonic() + 180
    while "OTA-OPS start" not in serial_text(log) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert "OTA-OPS start" in serial_text(log), serial_text(log)[-3000:]
    time.sleep(rnd.uniform(0, 8))
    proc.kill()
    proc.wait()
    done = serial_text(log).count(" done\n")
    host.from_disk()
    env = host.boot.read_env()
    assert env in expected[done:], (n, done, env, expected[: done + 2], start)
    for name in COPIES:  # the next boot, on a disk holding the same copies
        path = host.dir / name
        disk.put(name, path.read_bytes() if path.exists() else None, work)
    chosen = decision(disk.boot(work / "check.log"))
    assert chosen == rules.next_boot(env)[1], (n, env, chosen)
    assert chosen in (env["ota_active"], env["ota_trial"]), (n, env, chosen)  # no other slot
    return "mid-ops" if done < OPS else "after the ops"


def test_the_client_killed_inside_the_guest_while_it_writes(
    kernel_disk: KernelDisk, disk: GrubDisk, tmp_path: Path
) -> None:
    """The real GRUB backend runs inside the guest (over 9p) and rewrites the environment op
    after op — arm, commit, mark bad; QEMU is killed in the middle, losing whatever the guest
    had not made durable. Every time, the environment is one the ops passed through (not
    before the last op the guest reported durable), and the next boot picks the slot the rules
    say for it: the committed slot or the armed trial slot, nothing else. (Run in parallel
    workers with OTA_REALBOOT_JOBS, each on its own copies of the disks.)"""
    jobs = max(1, min(int(os.environ.get("OTA_REALBOOT_JOBS", "1")), GUEST_KILLS))
    copies = []
    for j in range(jobs):
        mine = tmp_path / f"worker{j}"
        mine.mkdir()
        for src, name in ((kernel_disk, "kernel.img"), (disk, "check.img")):
            shutil.copy(src.path, mine / name)
        copies.append(
            (
                KernelDisk(mine / "kernel.img", f"{mine / 'kernel.img'}@@{PARTITION}"),
                GrubDisk(mine / "check.img", f"{mine / 'check.img'}@@{PARTITION}"),
            )
        )

    def worker(j: int) -> list[str]:
        kdisk, cdisk = copies[j]
        return [
            guest_kill(n, kdisk, cdisk, tmp_path / f"g{n}") for n in range(j, GUEST_KILLS, jobs)
        ]

    with ThreadPoolExecutor(jobs) as pool:
        phases = [p for result in pool.map(worker, range(jobs)) for p in result]
    print(f"\nin-guest kills: {len(phases)}, 0 wrong boots; {Counter(phases)}")


# -- U-Boot (AArch64) ------------------------------------------------------------------------

UBOOT_BIN = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
UBOOT_STATES = int(os.environ.get("OTA_REALBOOT_UBOOT_STATES", "12"))
FLASH = 64 << 20


def uboot_script() -> str:
    """contrib/u-boot/ota-boot.txt as one line, the way it is stored in an environment variable."""
    script = ""
    for raw in (REPO / "contrib/u-boot/ota-boot.txt").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        joiner = " " if script.endswith(("then", "else", "do")) else "; "
        script = f"{script}{joiner}{line}" if script else line
    return script


class Board:
    """qemu-system-aarch64 -M virt with Debian's U-Boot in flash bank 0 and its environment in
    flash bank 1, written by the client's U-Boot backend through the real fw_setenv."""

    def __init__(self, work: Path, board_env: str) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.flash0, self.flash1 = work / "flash0.img", work / "flash1.img"
        with open(self.flash0, "wb") as f:
            f.write(UBOOT_BIN.read_bytes())
            f.truncate(FLASH)
        self.flash1.write_bytes(b"\xff" * FLASH)  # erased flash: a blank environment
        (work / "fw_env.config").write_text(f"{self.flash1} 0x0 0x40000\n")
        (work / "board.env").write_text(board_env)
        (work / "cmdline").write_text("ota.slot=a\n")
        self.boot = UBootBoot(
            work / "fw_env.config", work / "cmdline", work / "board.env", work / "defaults.env"
        )

    def power_on(self) -> str:
        """Boot U-Boot on a copy of the environment (its saveenv erases the sectors here)."""
        saved = self.flash1.read_bytes()
        log = self.work / "serial.log"
        log.unlink(missing_ok=True)
        proc = subprocess.Popen(
            ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-m", "128",
             "-display", "none", "-no-reboot", "-monitor", "none", "-serial", f"file:{log}",
             "-drive", f"if=pflash,format=raw,file={self.flash0}",
             "-drive", f"if=pflash,format=raw,file={self.flash1}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            if "\n=> " in serial_text(log):  # U-Boot's prompt: it will not boot by itself
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        self.flash1.write_bytes(saved)
        return serial_text(log)


BOARD_ENV = (
    "bootcmd=run ota_boot\nbootdelay=0\nota_boot={script}\n"
    "boot_a=echo OTA-DECISION slot=a; poweroff\nboot_b=echo OTA-DECISION slot=b; poweroff\n"
)


@pytest.fixture
def board(tmp_path: Path) -> Board:
    if shutil.which("qemu-system-aarch64") is None or not UBOOT_BIN.exists():
        message = "U-Boot boots need qemu-system-arm and u-boot-qemu (make test installs them)"
        if os.environ.get("OTA_REQUIRE_REALBOOT"):
            pytest.fail(message)
        pytest.skip(message)
    return Board(tmp_path, BOARD_ENV.format(script=uboot_script()))


def test_uboot_first_write_to_a_blank_environment_boots(board: Board) -> None:
    """The regression: the first write to a blank environment used the OTA variables alone
    as defaults, and U-Boot stopped at its prompt. It now starts from the board's defaults."""
    board.boot.ensure()
    out = board.power_on()
    assert decision(out) == "a", out[-1500:]


def test_uboot_with_the_ota_variables_alone_stops_at_its_prompt(board: Board) -> None:
    """What the old first write did, shown on the real board (and now refused by the client)."""
    env = "".join(f"{k}={v}\n" for k, v in rules.initial_env().items())
    (board.work / "ota-only.env").write_text(env)
    subprocess.run(
        ["fw_setenv", "-c", str(board.work / "fw_env.config"), "-f",
         str(board.work / "ota-only.env"), "-s", "/dev/null"],
        check=True, capture_output=True,
    )  # fmt: skip
    out = board.power_on()
    assert decision(out) is None and "=>" in out, out[-800:]
    (board.work / "board.env").write_text(env)
    with pytest.raises(BootError, match="bootcmd"):
        board.boot.write_env(rules.arm(rules.initial_env(), "b", 3))


def test_uboot_decides_what_the_rules_say(board: Board) -> None:
    """Environments written by the client's U-Boot backend: U-Boot boots what the rules say."""
    rnd = random.Random(SEED + 3)
    board.boot.ensure()
    for n in range(UBOOT_STATES):
        env = board.boot.read_env()
        spare = rules.other(rules.active(env))
        verb = rnd.choice(["arm", "commit", "bad", "boot"])
        if verb == "arm":
            changes = rules.arm(env, spare, rnd.randint(1, 9))
        elif verb == "commit":
            changes = rules.commit(rules.trial(env) or rules.active(env))
        elif verb == "bad":
            changes = rules.mark_bad(env, spare)
        else:
            changes = rules.next_boot(env)[0]
        board.boot.write_env(changes)
        env = board.boot.read_env()
        out = board.power_on()
        assert decision(out) == rules.next_boot(env)[1], (n, env, out[-1200:])


def test_uboot_saves_its_counter(board: Board) -> None:
    board.boot.ensure()
    board.boot.arm_trial("b", 3)
    out = board.power_on()
    if "Flash buffer write timeout" in out:
        pytest.skip(
            "U-Boot's saveenv cannot write flash on this QEMU/U-Boot pair ('Flash buffer write "
            "timeout', after erasing the sectors); its decisions are checked from host writes"
        )
    assert decision(out) == "b"
