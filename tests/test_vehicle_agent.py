"""The vehicle agent in-process against a real published repository (fast tier, no sockets).

A two-ECU bundle (head unit + telematics) on file slots larger than their images, so deltas
apply as on partitions. Commit and rollback are all-or-none; and a kill injected at any
durable operation (state writes, boot-control writes, slot writes, renames, fsyncs), once or
several times, followed by a power cycle or by a restart without reboot, always ends with
every ECU on the new bundle or every ECU on the old — with no write ever reaching a booted
slot, no kill reported as a failure, and each report delivered once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ota_client.agent.records import Phase
from ota_client.agent.vehicle import VehicleAgent
from ota_client.boot.control import BootControl, SimulatedBoot
from ota_client.config import load_config
from ota_client.slots import raw
from tests.helpers import EXAMPLES, make_home
from tests.repo_transport import SERVER, RepoTransport

HU1 = (EXAMPLES / "images/head-unit-2.0.0.img").read_bytes()
HU2 = (EXAMPLES / "images/head-unit-2.1.0.img").read_bytes()
TCU1 = (EXAMPLES / "images/telematics-2.0.0.bin").read_bytes()
TCU2 = (EXAMPLES / "images/telematics-2.1.0.bin").read_bytes()
SLOT = 512 << 10  # larger than every image: the rest is left-over junk, as on a partition
ECUS = {"HU-1": ("hu-imx8", HU1, HU2), "TCU-1": ("tcu-9150", TCU1, TCU2)}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = make_home(
        tmp_path_factory.mktemp("agent"),
        EXAMPLES / "infotainment-2.0.0.toml",
        EXAMPLES / "infotainment-2.1.0.toml",
    )
    return home / "repo"


# Every kill around a trial boot uses a boot attempt, as on a real bootloader, and as many
# kills in a row as attempts would rightly roll a healthy bundle back: more attempts than
# the campaign's kills (at most 3), as in tests/test_powercut.py.
ATTEMPTS = 5


def make_vehicle(root: Path, repo: Path, *, failing: str | None = None) -> Path:
    root.mkdir(parents=True)
    shutil.copy(repo / "metadata/1.root.json", root / "root.json")
    junk = random.Random(7).randbytes(SLOT)
    text = f"""
vehicle_id = "VIN0001"
server = "{SERVER}"
trust_root = "root.json"
mode = "track-latest"
data_dir = "data"
retry_delay = 0
"""
    for serial, (hwid, image, _new) in ECUS.items():
        (root / f"{serial}-a.img").write_bytes(image + junk[len(image) :])
        (root / f"{serial}-b.img").write_bytes(junk[::-1])
        health = '["false"]' if serial == failing else '["true"]'
        text += f"""
[[ecus]]
serial = "{serial}"
hardware_id = "{hwid}"
slots = {{ a = "{serial}-a.img", b = "{serial}-b.img", size = {SLOT} }}
boot = {{ backend = "simulated", attempts = {ATTEMPTS} }}
[[ecus.health]]
command = {health}
"""
    (root / "client.toml").write_text(text)
    return root / "client.toml"


def agent(config: Path, transport: RepoTransport) -> VehicleAgent:
    return VehicleAgent(load_config(config), transport=transport, emulate_reboot=True)


def booted(root: Path, serial: str) -> str:
    path = root / f"data/boot-{serial}.json"
    return json.loads(path.read_text()).get("booted", "a") if path.exists() else "a"


def running(root: Path, serial: str) -> bytes:
    """The published image the booted slot holds; fails if it holds none."""
    data = (root / f"{serial}-{booted(root, serial)}.img").read_bytes()
    _hwid, old, new = ECUS[serial]
    for image in (new, old):
        if data[: len(image)] == image:
            return image
    raise AssertionError(f"{serial}: the booted slot holds no complete published image")


def test_a_two_ecu_bundle_commits_by_delta_onto_slots_larger_than_the_images(
    tmp_path: Path, repo: Path
) -> None:
    config = make_vehicle(tmp_path / "car", repo)
    transport = RepoTransport(repo)
    a = agent(config, transport)
    assert a.cycle() is None
    assert a.state.phase == Phase.IDLE and a.state.error is None, a.state.error
    root = tmp_path / "car"
    assert running(root, "HU-1") == HU2 and running(root, "TCU-1") == TCU2
    assert transport.downloaded < (len(HU2) + len(TCU2)) // 2  # deltas, not full images
    assert sorted(transport.events()) == [("HU-1", "commit"), ("TCU-1", "commit")]
    assert (root / "HU-1-a.img").read_bytes()[: len(HU1)] == HU1  # the good slot untouched
    again = agent(config, transport)
    assert again.cycle() is None and len(transport.reports) == 2  # nothing more to do


def test_one_failing_ecu_rolls_the_whole_bundle_back(tmp_path: Path, repo: Path) -> None:
    config = make_vehicle(tmp_path / "car", repo, failing="TCU-1")
    transport = RepoTransport(repo)
    a = agent(config, transport)
    a.cycle()
    root = tmp_path / "car"
    assert a.state.phase == Phase.IDLE and "TCU-1" in (a.state.error or "")
    assert running(root, "HU-1") == HU1 and running(root, "TCU-1") == TCU1
    assert booted(root, "HU-1") == "a" and booted(root, "TCU-1") == "a"
    assert sorted(transport.events()) == [("HU-1", "rollback"), ("TCU-1", "rollback")]
    assert agent(config, transport).cycle() is None  # the bundle is never retried
    assert len(transport.reports) == 2 and transport.downloaded < len(HU2) + len(TCU2)


def test_an_interrupted_download_resumes(tmp_path: Path, repo: Path) -> None:
    config = make_vehicle(tmp_path / "car", repo)
    transport = RepoTransport(repo, cut_after=8_000, checkpoint_bytes=8 << 10)
    a = agent(config, transport)
    a.cycle()
    assert a.state.phase == Phase.DOWNLOAD and a.state.interrupted
    assert a.state.jobs[0].fetch.received > 0 and not transport.reports
    a = agent(config, transport)
    assert a.cycle(force=True) is None and a.state.error is None
    assert sorted(transport.events()) == [("HU-1", "commit"), ("TCU-1", "commit")]


# -- kills at any durable operation -------------------------------------------------------------


class Killed(BaseException):
    """The process died here: nothing after this point reaches the disk."""


@dataclass
class KillSwitch:
    at: int  # the operation that kills
    count: int = 0
    dead: bool = False

    def tick(self) -> None:
        if self.dead:
            raise Killed()
        self.count += 1
        if self.count == self.at:
            self.dead = True
            raise Killed()


@contextmanager
def kills(switch: KillSwitch, root: Path, writes: list[str]) -> Iterator[None]:
    """Count (and kill at) every durable operation; record and police every slot write."""
    real_replace, real_fsync = os.replace, os.fsync
    real_writer, real_write_env = raw.SlotWriter.__init__, SimulatedBoot.write_env

    def replace(src: object, dst: object) -> None:
        switch.tick()
        real_replace(src, dst)  # type: ignore[arg-type]

    def fsync(fd: int) -> None:
        switch.tick()
        real_fsync(fd)

    def writer(self: raw.SlotWriter, path: Path, offset: int = 0) -> None:
        name = Path(path).name
        if name.endswith(".img"):
            serial, slot = name.removesuffix(".img").rsplit("-", 1)
            assert slot != booted(root, serial), f"a write reached the booted slot {name}"
            writes.append(name)
        switch.tick()
        real_writer(self, path, offset)

    def write_env(self: BootControl, changes: object) -> None:
        switch.tick()
        real_write_env(self, changes)  # type: ignore[arg-type]

    patches = [
        (os, "replace", replace),
        (os, "fsync", fsync),
        (raw.SlotWriter, "__init__", writer),
        (SimulatedBoot, "write_env", write_env),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, new in patches:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)


def power_cycle(config: Path, root: Path) -> None:
    """The bootloader runs once for every ECU (what a power-on does)."""
    for serial in ECUS:
        SimulatedBoot(root / f"data/boot-{serial}.json").emulate_reboot()


@settings(
    max_examples=int(os.environ.get("OTA_AGENT_KILLS", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kill_at=st.lists(st.integers(1, 120), min_size=1, max_size=3),
    reboot=st.lists(st.booleans(), min_size=3, max_size=3),
    failing=st.sampled_from([None, "TCU-1"]),
)
@example(kill_at=[78, 5, 5], reboot=[False, False, False], failing=None)  # found in CI
def test_kill_anywhere_ends_all_new_or_all_old(
    tmp_path_factory: pytest.TempPathFactory,
    repo: Path,
    kill_at: list[int],
    reboot: list[bool],
    failing: str | None,
) -> None:
    root = tmp_path_factory.mktemp("kill") / "car"
    config = make_vehicle(root, repo, failing=failing)
    transport = RepoTransport(repo, checkpoint_bytes=32 << 10)
    writes: list[str] = []
    for at, power_cut in zip(kill_at, reboot, strict=False):
        switch = KillSwitch(at)
        with kills(switch, root, writes):
            try:
                a = agent(config, transport)
                a.boot()
                a.cycle()
            except Killed:
                pass
        if power_cut:
            power_cycle(config, root)
        for serial in ECUS:
            running(root, serial)  # after every kill: a complete, published image boots
    with kills(KillSwitch(0), root, writes):
        for _ in range(3):
            a = agent(config, transport)
            a.boot()
            a.cycle()
            if a.state.phase == Phase.IDLE and not a.state.interrupted:
                break
    assert a.state.phase == Phase.IDLE, a.state
    images = {serial: running(root, serial) for serial in ECUS}
    events = transport.events()
    assert len(events) == len(set(events)), events  # each report once
    if failing:
        assert images == {"HU-1": HU1, "TCU-1": TCU1}
        assert sorted(events) == [("HU-1", "rollback"), ("TCU-1", "rollback")]
    else:
        assert images == {"HU-1": HU2, "TCU-1": TCU2}, (kill_at, reboot, a.state.error)
        assert sorted(events) == [("HU-1", "commit"), ("TCU-1", "commit")]
