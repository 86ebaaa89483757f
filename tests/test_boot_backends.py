"""One behavioural suite for every boot-control backend, with the real GRUB and U-Boot tools.

The bootloader itself cannot run here, so ``emulate_reboot`` plays it: it reads the
environment with the real tool, applies the boot rule and writes back with the real tool.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ota_client.boot import rules
from ota_client.boot.control import BootControl, GrubBoot, SimulatedBoot, UBootBoot
from ota_client.boot.rules import BootError, BootFacts

BACKENDS = ["simulated", "grub", "uboot"]
BOARD_ENV = "bootcmd=run ota_boot\nbootdelay=2\nbaudrate=115200\n"


def make(kind: str, tmp: Path) -> BootControl:
    tmp.mkdir(parents=True, exist_ok=True)
    if kind == "simulated":
        boot: BootControl = SimulatedBoot(tmp / "boot.json")
    elif kind == "grub":
        if not shutil.which("grub-editenv"):
            pytest.fail("grub-editenv is missing: install grub-common (make test does)")
        grub = GrubBoot(tmp, tmp / "cmdline")
        grub.ensure()
        boot = grub
    else:
        if not shutil.which("fw_setenv"):
            pytest.fail("fw_setenv is missing: install libubootenv-tool (make test does)")
        for name in ("env1", "env2"):
            (tmp / name).write_bytes(bytes(0x4000))  # a blank redundant pair
        (tmp / "fw_env.config").write_text(f"{tmp}/env1 0x0 0x4000\n{tmp}/env2 0x0 0x4000\n")
        (tmp / "board.env").write_text(BOARD_ENV)
        uboot = UBootBoot(
            tmp / "fw_env.config", tmp / "cmdline", tmp / "board.env", tmp / "defaults.env"
        )
        uboot.ensure()
        boot = uboot
    boot.emulate_reboot()  # power on
    return boot


@pytest.fixture(params=BACKENDS)
def boot(request: pytest.FixtureRequest, tmp_path: Path) -> BootControl:
    return make(request.param, tmp_path / request.param)


def test_starts_on_a(boot: BootControl) -> None:
    assert boot.facts() == BootFacts("a", "a", None, 0)


def test_trial_then_commit(boot: BootControl) -> None:
    boot.mark_bad("b")
    assert boot.emulate_reboot() == "a"  # a bad slot is never booted
    boot.arm_trial("b", 3)
    assert boot.emulate_reboot() == "b"
    assert (boot.facts().trial, boot.facts().tries) == ("b", 2)
    boot.mark_good("b")
    assert (boot.active_slot(), boot.facts().trial) == ("b", None)
    assert boot.emulate_reboot() == "b"
    assert boot.emulate_reboot() == "b"


def test_trial_attempts_run_out_then_fall_back(boot: BootControl) -> None:
    boot.arm_trial("b", 2)
    assert [boot.emulate_reboot() for _ in range(4)] == ["b", "b", "a", "a"]
    assert boot.facts().trial is None and boot.active_slot() == "a"


def test_rollback_marks_bad_and_falls_back(boot: BootControl) -> None:
    boot.arm_trial("b", 3)
    assert boot.emulate_reboot() == "b"
    boot.mark_bad("b")  # health checks failed
    assert boot.facts().trial is None
    assert boot.emulate_reboot() == "a"


def test_the_active_slot_is_protected(boot: BootControl) -> None:
    with pytest.raises(BootError, match="active"):
        boot.mark_bad("a")
    with pytest.raises(BootError, match="active"):
        boot.arm_trial("a", 3)
    with pytest.raises(BootError, match="unknown slot"):
        boot.arm_trial("c", 3)
    assert boot.emulate_reboot() == "a"


VERBS = st.lists(st.sampled_from(["arm", "good", "bad", "reboot"]), max_size=25)


@pytest.mark.parametrize("kind", BACKENDS)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(verbs=VERBS)
def test_any_sequence_keeps_the_invariants(kind: str, tmp_path: Path, verbs: list[str]) -> None:
    """Whatever the client does, a bad slot never boots and the active slot stays bootable."""
    boot = make(kind, Path(tempfile.mkdtemp(dir=tmp_path)))
    for verb in verbs:
        active = boot.active_slot()
        spare = rules.other(active)
        if verb == "arm":
            boot.arm_trial(spare, 2)
        elif verb == "good":
            booted = boot.booted_slot()
            boot.mark_good(booted)  # the client commits only the slot it booted
        elif verb == "bad":
            boot.mark_bad(spare)
        else:
            env = boot.read_env()
            slot = boot.emulate_reboot()
            assert env.get(f"ota_state_{slot}") != "bad", (verbs, env)
            trial = env.get("ota_trial")
            assert slot == boot.active_slot() or (slot == trial), (verbs, env)
        tries = boot.read_env().get("ota_tries") or "0"
        assert int(tries) >= 0


def test_the_grub_snippet_is_valid_grub_script() -> None:
    snippet = Path(__file__).parent.parent / "contrib/grub/ota.cfg"
    result = subprocess.run(["grub-script-check", str(snippet)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reading_never_writes_the_environment(tmp_path: Path) -> None:
    """check and status read boot control; only commands that change the vehicle ensure()."""
    grub = GrubBoot(tmp_path, tmp_path / "cmdline")
    assert rules.active(grub.read_env()) == "a" and not (tmp_path / "ota-env.0").exists()
    for name in ("env1", "env2"):
        (tmp_path / name).write_bytes(bytes(0x4000))
    (tmp_path / "fw.config").write_text(f"{tmp_path}/env1 0x0 0x4000\n{tmp_path}/env2 0x0 0x4000\n")
    (tmp_path / "board.env").write_text(BOARD_ENV)
    uboot = UBootBoot(
        tmp_path / "fw.config", tmp_path / "cmdline", tmp_path / "board.env", tmp_path / "d.env"
    )
    assert rules.active(uboot.read_env()) == "a"
    assert (tmp_path / "env1").read_bytes() == bytes(0x4000) and not (tmp_path / "d.env").exists()
    simulated = SimulatedBoot(tmp_path / "boot.json")
    assert (
        simulated.facts() == BootFacts("a", "a", None, 0) and not (tmp_path / "boot.json").exists()
    )


@pytest.mark.parametrize(
    "text",
    [
        "[1]",
        '{"ota_active": 7}',
        '{"ota_active": "c"}',
        "{" * 100,
        "",
        '{"x": "' + "y" * 100 + '"}',
    ],
)
def test_class3_damaged_simulated_boot_state_is_one_device_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "boot.json").write_text(text)
    with pytest.raises(BootError):
        SimulatedBoot(tmp_path / "boot.json").facts()


# -- GRUB: a power cut in the middle of any write -----------------------------------------------


def _torn(path: Path, rnd: random.Random) -> None:
    """What a power cut can leave of a file being rewritten: empty, cut short, zeroed, gone."""
    data = path.read_bytes() if path.exists() else b""
    kind = rnd.randrange(4)
    if kind == 0:
        path.write_bytes(b"")
    elif kind == 1:
        path.write_bytes(data[: rnd.randrange(max(len(data), 1))])
    elif kind == 2:
        path.write_bytes(bytes(1024))
    else:
        path.unlink(missing_ok=True)


def _changes(boot: BootControl, verb: str) -> dict[str, str]:
    env = boot.read_env()
    spare = rules.other(rules.active(env))
    if verb == "arm":
        return rules.arm(env, spare, 3)
    if verb == "good":
        return rules.commit(boot.booted_slot())
    if verb == "bad":
        return rules.mark_bad(env, spare)
    return rules.next_boot(env)[0]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(verbs=VERBS, seed=st.integers(0, 1 << 30))
def test_grub_a_torn_write_never_changes_the_decision(
    tmp_path: Path, verbs: list[str], seed: int
) -> None:
    """Whichever write is cut, the slot that boots next is the one of the decision before the
    write or after it, never anything else (the issue: an emptied grubenv booted slot a with no
    trial although b was committed)."""
    rnd = random.Random(seed)
    boot = make("grub", Path(tempfile.mkdtemp(dir=tmp_path)))
    assert isinstance(boot, GrubBoot)
    for verb in verbs:
        before = boot.read_env()
        changes = _changes(boot, verb)
        after = {**before, **changes}
        index, _env = boot._in_force()
        target = boot.copies[0 if index is None else 1 - index]
        boot.write_env(changes)
        done = {copy: copy.read_bytes() for copy in boot.copies}
        _torn(target, rnd)  # the power failed while this copy was being replaced
        decision = rules.next_boot(boot.read_env())[1]
        assert decision in (rules.next_boot(before)[1], rules.next_boot(after)[1]), (verb, before)
        for copy, data in done.items():
            copy.write_bytes(data)  # power back, and the write completed after all


def test_grub_an_emptied_environment_file_is_no_downgrade(tmp_path: Path) -> None:
    """The regression the issue found: a cut while b is committed left grubenv empty, and GRUB
    booted slot a with no trial. Now the cut can only hit the copy not in force."""
    boot = make("grub", tmp_path)
    assert isinstance(boot, GrubBoot)
    boot.arm_trial("b", 3)
    assert boot.emulate_reboot() == "b"
    index, _env = boot._in_force()
    assert index is not None
    written = boot.copies[1 - index]
    boot.mark_good("b")
    written.write_bytes(b"")  # the commit's write was cut: its copy is empty
    assert rules.next_boot(boot.read_env())[1] == "b"  # still the trial of b, not a downgrade
    boot.mark_good("b")  # the client commits again after the power cut
    assert boot.active_slot() == "b" and rules.next_boot(boot.read_env())[1] == "b"


# -- U-Boot: the first write to a blank environment ---------------------------------------------


def test_uboot_first_write_keeps_the_boards_environment(tmp_path: Path) -> None:
    make("uboot", tmp_path)
    out = subprocess.run(
        ["fw_printenv", "-c", str(tmp_path / "fw_env.config")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "bootcmd=run ota_boot" in out and "ota_active=a" in out and "baudrate=115200" in out


@pytest.mark.parametrize("board", ["", "bootdelay=2\n", "bootcmd=\n"])
def test_uboot_refuses_an_environment_the_board_cannot_boot(tmp_path: Path, board: str) -> None:
    for name in ("env1", "env2"):
        (tmp_path / name).write_bytes(bytes(0x4000))
    config = tmp_path / "fw.config"
    config.write_text(f"{tmp_path}/env1 0x0 0x4000\n{tmp_path}/env2 0x0 0x4000\n")
    (tmp_path / "board.env").write_text(board)
    uboot = UBootBoot(config, tmp_path / "c", tmp_path / "board.env", tmp_path / "d")
    with pytest.raises(BootError, match="bootcmd"):
        uboot.ensure()
    with pytest.raises(BootError, match="bootcmd"):
        uboot.write_env(rules.initial_env())
    assert (tmp_path / "env1").read_bytes() == bytes(0x4000)  # nothing written


def test_grub_copies_start_from_an_older_clients_grubenv(tmp_path: Path) -> None:
    """A vehicle moving from the one-file layout keeps its committed slot and its trial."""
    legacy = tmp_path / "grubenv"
    subprocess.run(["grub-editenv", str(legacy), "create"], check=True)
    subprocess.run(
        ["grub-editenv", str(legacy), "set", "ota_active=b", "ota_state_b=good", "other=x"],
        check=True,
    )
    boot = GrubBoot(tmp_path, tmp_path / "cmdline")
    boot.ensure()
    env = boot.read_env()
    assert env["ota_active"] == "b" and env["ota_state_b"] == "good" and "other" not in env
