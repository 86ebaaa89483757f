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
import time
from pathlib import Path

import pytest

from ota_client.boot import rules
from ota_client.boot.control import GrubBoot
from tests.grub_disk import COPIES, GrubDisk, decision, missing_tools, serial_text

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
