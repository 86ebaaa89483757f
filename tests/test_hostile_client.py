"""Hostile input, refused on every surface of ``ota-client`` (issue 7, vehicle side).

Every case starts from a valid vehicle — a client.toml with every setting, the trust root, a
state file mid-download, an outbox with a queued report, the simulated bootloader's file,
slots on v1 — talking to the real ``ota serve`` on loopback, breaks one input the way disks,
careless integrators and attackers do (``tests/mutate.py``), and runs the real ``ota-client``
entry point in-process under a deadline (a subprocess under an address-space limit where
memory is the question). What the server sends is attacked too, through a hostile HTTP
server that alters one response per case.

A case passes when the input is refused cleanly (``tests/hostile.py``) and nothing that must
not change changed: for inputs checked before any work (config, trust root, TLS files, boot
state) the vehicle's whole tree is byte for byte as before; for persisted files that fail
their loader (state, outbox) the file is moved aside intact and the booted slot is untouched;
and the booted slot always holds its image. The regression tests for the classes of issue 7
are named ``test_classN_...``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ota_client.agent.records import VehicleState
from ota_client.cli import main as client_main
from ota_client.config import parse_config
from ota_client.metadata.reports import Report
from ota_client.strict import FormatError, load_toml
from tests import mutate
from tests.helpers import EXAMPLES, REPO_ROOT, make_home, make_tls, serve
from tests.hostile import (
    SPECIALS,
    Content,
    Special,
    campaign_fixture,
    cases,
    changes,
    clean,
    deadline,
    place,
    refused,
    snapshot,
)

SEED = 11
DEADLINE = 30.0
MEMORY_LIMIT = 320 << 20  # address space of a subprocess case
V1 = (EXAMPLES / "images/bcm-1.0.0.bin").read_bytes()
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


_campaign = campaign_fixture("test_hostile_client")


# -- the world: a server and a valid vehicle ----------------------------------------------------


def config_doc(server: str) -> dict[str, Any]:
    """A client.toml using every setting (as a dict, written with mutate.toml_dumps)."""
    return {
        "vehicle_id": "VIN0001",
        "server": server,
        "trust_root": "root.json",
        "mode": "track-latest",
        "data_dir": "data",
        "poll_interval": 3600,
        "poll_jitter": 0.2,
        "max_attempts": 5,
        "retry_delay": 0,
        "reboot_command": ["true"],
        "network": {
            "ca_file": "ca.pem",
            "connect_timeout": 10,
            "stall_timeout": 10,
            "request_deadline": 60,
            "download_deadline": 600,
            "min_speed": 1,
            "speed_window": 60,
            "checkpoint_interval": 1 << 20,
            "allow_insecure_http": True,
        },
        "ecus": [
            {
                "serial": "BCM-1",
                "hardware_id": "bcm-s32k",
                "slots": {"type": "raw", "a": "slot-a.img", "b": "slot-b.img", "size": 1 << 20},
                "boot": {"backend": "simulated", "attempts": 3, "state": "data/boot.json"},
                "trial_deadline": 60,
                "health": [
                    {"command": ["true"], "timeout": 30},
                    {"http": f"{server}/healthz", "timeout": 5, "expect_status": 200},
                ],
            }
        ],
    }


@dataclass(frozen=True)
class World:
    root: Path
    home: Path
    server: str
    template: Path  # a valid vehicle: copied for every case, never changed

    def car(self, where: Path) -> Path:
        shutil.copytree(self.template, where, symlinks=True)
        return where


def _state(server: str, check: dict[str, Any]) -> dict[str, Any]:
    """A valid state in the middle of a download of the next update."""
    ecu = check["ecus"][0]
    target, fetch = ecu["update"]["target"], ecu["update"]["download"]
    full = {**target, "kind": "full", "received": 0, "etag": None, "source_length": None}
    full.pop("version"), full.pop("release_counter")
    job = {
        "serial": "BCM-1",
        "target": target,
        "fetch": {**fetch, "received": 0},
        "full": full,
        "slot": "b",
        "good": "a",
        "step": "pending",
    }
    doc = json.loads(json.dumps(VehicleState().to_json()))
    doc.update(phase="DOWNLOAD", cycle="c" * 32, bundle="body-control", version="1.1.0", jobs=[job])
    doc["ecus"] = {"BCM-1": {"installed": ecu["installed"], "max_counter": 1, "rejected": []}}
    VehicleState.from_json(doc)  # valid, as a vehicle would have written it
    return doc


REPORT = Report("a" * 32, "VIN0001", "BCM-1", "update_failed", 1.0e9, error="x")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile-client")
    home = make_home(
        root, EXAMPLES / "body-control-1.0.0.toml", EXAMPLES / "body-control-1.1.0.toml"
    )
    with serve(home) as url:
        server = url.removesuffix("/repo")
        car = root / "template"
        car.mkdir()
        shutil.copy(home / "repo/metadata/1.root.json", car / "root.json")
        shutil.copy(make_tls(root / "tls").cert, car / "ca.pem")
        (car / "slot-a.img").write_bytes(V1)
        (car / "client.toml").write_text(mutate.toml_dumps(config_doc(server)))
        check = CliRunner().invoke(client_main, ["-c", str(car / "client.toml"), "check", "--json"])
        assert check.exit_code == 0, check.output
        (car / "data").mkdir(exist_ok=True)
        (car / "data/state.json").write_text(json.dumps(_state(server, json.loads(check.stdout))))
        (car / "data/outbox.json").write_text(
            json.dumps({"schema": 1, "reports": [REPORT.to_dict()]})
        )
        boot = {"ota_active": "a", "ota_trial": "", "ota_tries": "0", "ota_state_a": "good",
                "ota_state_b": "", "booted": "a"}  # fmt: skip
        (car / "data/boot.json").write_text(json.dumps(boot))
        shutil.rmtree(car / "data/tuf")  # a fresh vehicle: no metadata cache yet
        yield World(root, home, server, car)


def vehicle(car: Path) -> dict[str, str]:
    """Everything of the vehicle but the TUF metadata cache (refreshed by reading) and the
    lock file (an empty file for flock): what a refusal must leave byte for byte."""
    return {
        k: v
        for k, v in snapshot(car).items()
        if not k.startswith(("data/tuf", "data/downloads")) and k != "data/lock"
    }


def client(car: Path, *args: str) -> Result:
    return CliRunner().invoke(client_main, ["-c", str(car / "client.toml"), *args])


class Cases:
    """Fresh copies of the template vehicle, one per case."""

    def __init__(self, world: World, tmp_path: Path) -> None:
        self.world, self.tmp, self.n = world, tmp_path, 0

    def car(self) -> Path:
        self.n += 1
        where = self.tmp / f"car{self.n}"
        return self.world.car(where)

    def run(
        self,
        damage: Callable[[Path], None],
        args: tuple[str, ...],
        label: str,
        *,
        must_fail: bool = False,
        unchanged_on_refusal: bool = True,
    ) -> tuple[Path, Result]:
        """Run one case. A refusal must leave the vehicle unchanged when nothing could have
        run yet: always for read-only commands, for ``update`` when the refusal is an input
        checked before any work (exit 3, configuration)."""
        car = self.car()
        damage(car)
        before = vehicle(car)
        with deadline(DEADLINE, label):
            result = client(car, *args)
        if must_fail or result.exit_code != 0:
            refused(result, label)
            read_only = args[0] in ("status", "check")
            if unchanged_on_refusal and (read_only or result.exit_code == 3):
                after = vehicle(car)
                assert after == before, f"{label}: a refusal changed {changes(before, after)}"
        else:
            clean(result, label)
        assert (car / "slot-a.img").read_bytes() == V1, f"{label}: the booted slot changed"
        return car, result

    def done(self, car: Path) -> None:
        shutil.rmtree(car, ignore_errors=True)


@pytest.fixture
def run(world: World, tmp_path: Path) -> Cases:
    return Cases(world, tmp_path)


def write_toml(doc: Any) -> Callable[[Path], None]:
    def damage(car: Path) -> None:
        try:
            text = mutate.toml_dumps(doc)
        except (TypeError, AttributeError):
            text = json.dumps(doc)  # not expressible in TOML: nonsense text then
        (car / "client.toml").write_text(text)

    return damage


def put(name: str, content: Content) -> Callable[[Path], None]:
    return lambda car: place(car / name, content)


# == the config: every setting broken every way ==================================================


def test_config_campaign(world: World, run: Cases) -> None:
    """Every value of a complete client.toml swapped for every hostile value, deleted, or given
    an unknown neighbour: refused at load (exit 3) — or, for a path to a bad file, when that
    file is read (5, 6) — or still valid; ``status`` reads it."""
    doc = config_doc(world.server)
    for label, broken in mutate.structural(doc):
        car, result = run.run(write_toml(broken), ("status",), f"config {label}")
        if result.exit_code:
            assert result.exit_code in (3, 5, 6), f"{label}: {result.output}"
        run.done(car)


def test_config_bytes_and_shapes(world: World, run: Cases) -> None:
    text = (world.template / "client.toml").read_bytes()
    rnd = random.Random(SEED)
    for label, data in mutate.byte_level(text, rnd, 120):
        run.done(run.run(put("client.toml", data), ("status",), f"config bytes {label}")[0])
    for label, shape in mutate.toml_shapes():
        car, _ = run.run(
            put("client.toml", shape.encode("utf-8", "surrogatepass")),
            ("status",),
            f"config shape {label}",
            must_fail=True,
        )
        run.done(car)


def test_config_campaign_with_update(world: World, run: Cases) -> None:
    """A sample of the config campaign through ``update``: a refused config writes nothing."""
    rnd = random.Random(SEED)
    mutations = list(mutate.structural(config_doc(world.server)))
    for label, broken in rnd.sample(mutations, 60):
        run.done(run.run(write_toml(broken), ("update",), f"config/update {label}")[0])


# == class 1: two names for one slot =============================================================


def _slot_b(value: str) -> Callable[[Path], None]:
    def damage(car: Path) -> None:
        doc = config_doc("http://127.0.0.1:9")
        doc["ecus"][0]["slots"]["b"] = value
        (car / "client.toml").write_text(mutate.toml_dumps(doc))

    return damage


def test_class1_two_names_for_one_slot_are_refused(world: World, run: Cases) -> None:
    def symlink(car: Path) -> None:
        (car / "alias.img").symlink_to(car / "slot-a.img")
        _slot_b("alias.img")(car)

    def hardlink(car: Path) -> None:
        os.link(car / "slot-a.img", car / "hard.img")
        _slot_b("hard.img")(car)

    def dotdot(car: Path) -> None:
        _slot_b("data/../slot-a.img")(car)

    def second_ecu(car: Path) -> None:
        doc = config_doc("http://127.0.0.1:9")
        other = copy.deepcopy(doc["ecus"][0])
        other.update(serial="BCM-2")
        other["slots"] = {"a": "other-a.img", "b": "./slot-a.img"}
        other["boot"] = {"backend": "simulated"}
        doc["ecus"].append(other)
        (car / "client.toml").write_text(mutate.toml_dumps(doc))

    for name, damage in [
        ("symlink", symlink),
        ("hardlink", hardlink),
        ("..", dotdot),
        ("another ECU's slot", second_ecu),
    ]:
        for args in (("status",), ("update",)):
            car, result = run.run(damage, args, f"class 1 {name}", must_fail=True)
            assert "same file or device" in result.output, result.output
            run.done(car)


def test_class1_two_device_links_to_one_partition(world: World, run: Cases) -> None:
    loop = subprocess.run(["losetup", "-f", "--show", str(world.template / "slot-a.img")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if loop.returncode != 0:
        pytest.skip("no loop devices here (the symlink and hard-link cases cover files)")
    device = loop.stdout.strip()
    try:

        def damage(car: Path) -> None:
            (car / "by-partlabel-a").symlink_to(device)
            (car / "by-uuid-b").symlink_to(device)
            doc = config_doc("http://127.0.0.1:9")
            doc["ecus"][0]["slots"] = {"a": "by-partlabel-a", "b": "by-uuid-b"}
            (car / "client.toml").write_text(mutate.toml_dumps(doc))

        _car, result = run.run(damage, ("update",), "class 1 device links", must_fail=True)
        assert "same file or device" in result.output
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_class1_a_slot_renamed_onto_the_booted_one_after_the_check_is_not_written(
    world: World, run: Cases, tmp_path: Path
) -> None:
    """Names can change between the config check and the write: the write checks again."""
    from ota_client.agent.vehicle import VehicleAgent
    from ota_client.config import load_config
    from ota_client.errors import DeviceError

    car = run.car()
    (car / "data/state.json").unlink()
    doc = config_doc(world.server)
    doc["network"].pop("ca_file")
    (car / "client.toml").write_text(mutate.toml_dumps(doc))
    config = load_config(car / "client.toml")  # slot b does not exist yet: checks pass
    (car / "slot-b.img").symlink_to(car / "slot-a.img")  # ... and now it is the booted slot
    agent = VehicleAgent(config)
    agent.cycle()
    assert agent.state.error_kind == "device" and "booted slot" in (agent.state.error or "")
    assert (car / "slot-a.img").read_bytes() == V1
    with pytest.raises(DeviceError):
        from ota_client.slots.guard import check_writable

        check_writable(car / "slot-b.img", car / "slot-a.img")
    agent.close()


def test_class1_the_running_root_device_is_never_written() -> None:
    from ota_client.errors import DeviceError
    from ota_client.slots.guard import check_writable

    dev = os.stat("/").st_dev
    try:
        uevent = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/uevent").read_text()
    except OSError:
        pytest.skip("/ is not on a block device here")
    name = next(
        line.split("=", 1)[1] for line in uevent.splitlines() if line.startswith("DEVNAME=")
    )
    node = Path("/dev") / name
    if not node.exists():
        pytest.skip(f"{node} is not visible here")
    cases[0] += 1
    with pytest.raises(DeviceError, match="running root file system"):
        check_writable(node, Path("/nonexistent-booted-slot"))


# == classes 2 and 3: persisted state, outbox and boot files ====================================


def test_class2_paths_from_state_content_never_leave_the_data_directory(
    world: World, run: Cases
) -> None:
    state = json.loads((world.template / "data/state.json").read_text())
    for sha in ("../../outside/victim", "/etc/passwd", "a/../../b", "f" * 63 + "/"):
        damaged = copy.deepcopy(state)
        damaged["jobs"][0]["fetch"]["sha256"] = sha

        def damage(car: Path, doc: Any = damaged) -> None:
            (car / "outside").mkdir()
            (car / "outside/victim.delta").write_text("precious")
            (car / "data/state.json").write_text(json.dumps(doc))

        car, _ = run.run(damage, ("update",), f"class 2 {sha}", unchanged_on_refusal=False)
        assert (car / "outside/victim.delta").read_text() == "precious"
        assert list((car / "data").glob("state.json.damaged-*")), "not moved aside"
        run.done(car)


def _state_cases(world: World) -> list[tuple[str, Content]]:
    data = (world.template / "data/state.json").read_bytes()
    doc = json.loads(data)
    rnd = random.Random(SEED)
    out: list[tuple[str, Content]] = [(s.value, s) for s in SPECIALS if s is not Special.MISSING]
    out += [
        (label, json.dumps(d).encode()) for label, d in mutate.structural(doc, json_values=True)
    ]
    out += list(mutate.byte_level(data, rnd, 40))
    out += list(mutate.json_shapes())
    return out


def test_class3_state_file_campaign_status_reads_and_changes_nothing(
    world: World, run: Cases
) -> None:
    """``status`` is read-only: a damaged state file is reported (exit 6) and left in place."""
    for label, content in _state_cases(world):
        car, result = run.run(put("data/state.json", content), ("status",), f"state {label}")
        if result.exit_code:
            assert result.exit_code == 6, f"{label}: {result.output}"
        run.done(car)


def test_class3_state_file_campaign_update_moves_it_aside(world: World, run: Cases) -> None:
    """``update`` moves a damaged state aside (kept intact), reports it, and carries on from the
    committed slot; it never writes the booted slot."""
    rnd = random.Random(SEED)
    sample = rnd.sample(_state_cases(world), 80)
    for label, content in sample:
        car, _ = run.run(
            put("data/state.json", content),
            ("update",),
            f"state/update {label}",
            unchanged_on_refusal=False,
        )
        status = client(car, "status", "--json")
        assert status.exit_code == 0, f"{label}: the state is still unreadable: {status.output}"
        run.done(car)


def test_class3_damaged_outbox_never_stops_an_update(world: World, run: Cases) -> None:
    rnd = random.Random(SEED)
    data = (world.template / "data/outbox.json").read_bytes()
    damages: list[tuple[str, Content]] = [("[[1]]", b"[[1]]")]
    damages += [(s.value, s) for s in SPECIALS if s is not Special.MISSING]
    damages += list(mutate.byte_level(data, rnd, 20))
    doc = json.loads(data)
    damages += [
        (lbl, json.dumps(d).encode()) for lbl, d in mutate.structural(doc, json_values=True)
    ][::7]
    for label, content in damages:
        car, result = run.run(
            put("data/outbox.json", content),
            ("update",),
            f"outbox {label}",
            unchanged_on_refusal=False,
        )
        assert result.exit_code == 0, f"{label}: {result.output}"
        state = json.loads((car / "data/state.json").read_text())
        assert (
            state["phase"] == "IDLE" and state["ecus"]["BCM-1"]["installed"]["version"] == "1.1.0"
        )
        run.done(car)


def test_class3_damaged_boot_state_is_one_device_error(world: World, run: Cases) -> None:
    rnd = random.Random(SEED)
    data = (world.template / "data/boot.json").read_bytes()
    damages: list[tuple[str, Content]] = [
        (s.value, s) for s in SPECIALS if s is not Special.MISSING
    ]
    damages += list(mutate.byte_level(data, rnd, 20))
    damages += [
        (lbl, json.dumps(d).encode())
        for lbl, d in mutate.structural(json.loads(data), json_values=True)
    ][::3]
    for label, content in damages:
        for args in (("status",), ("update",)):
            car, result = run.run(put("data/boot.json", content), args, f"boot {label}")
            if result.exit_code:
                assert result.exit_code == 5, f"{label}: {result.output}"
            run.done(car)


def test_cmdline_of_a_real_bootloader(world: World, run: Cases) -> None:
    """GRUB and U-Boot learn the booted slot from the kernel command line: damage it."""

    def grub(content: Content) -> Callable[[Path], None]:
        def damage(car: Path) -> None:
            doc = config_doc(world.server)
            doc["ecus"][0]["boot"] = {"backend": "grub", "dir": "data", "cmdline": "cmdline"}
            (car / "client.toml").write_text(mutate.toml_dumps(doc))
            (car / "data/state.json").unlink()
            place(car / "cmdline", content)

        return damage

    damages: list[tuple[str, Content]] = [(s.value, s) for s in SPECIALS]
    damages += [
        ("no slot", b"root=/dev/sda ro"),
        ("slot c", b"ota.slot=c"),
        ("binary", os.urandom(500)),
    ]
    for label, content in damages:
        car, _ = run.run(grub(content), ("status",), f"cmdline {label}", must_fail=True)
        run.done(car)


# == classes 4, 10: trust anchors, TLS material, caches ========================================


def test_class10_trust_root_campaign(world: World, run: Cases) -> None:
    """A trust root that fails to parse or verify is one line (exit 3), and nothing is written."""
    data = (world.template / "root.json").read_bytes()
    rnd = random.Random(SEED)
    damages: list[tuple[str, Content]] = [(s.value, s) for s in SPECIALS]
    damages += list(mutate.byte_level(data, rnd, 40))
    damages += list(mutate.json_shapes())
    timestamp = (world.home / "repo/metadata/timestamp.json").read_bytes()
    damages += [
        ("timestamp as root", timestamp),
        ("expired-looking", data.replace(b"20", b"19", 1)),
    ]
    for label, content in damages:
        for args in (("update",), ("check",)):
            car, result = run.run(put("root.json", content), args, f"trust root {label}")
            if result.exit_code:
                assert result.exit_code in (3, 7), f"{label}: {result.output}"
            run.done(car)


def test_class4_tls_files(world: World, run: Cases) -> None:
    rnd = random.Random(SEED)
    data = (world.template / "ca.pem").read_bytes()
    damages: list[tuple[str, Content]] = [(s.value, s) for s in SPECIALS]
    damages += list(mutate.byte_level(data, rnd, 10))
    for label, content in damages:
        car, result = run.run(put("ca.pem", content), ("update",), f"ca_file {label}")
        if result.exit_code:
            assert result.exit_code == 3, f"{label}: {result.output}"
        run.done(car)


def test_class4_damaged_metadata_cache_is_downloaded_again(world: World, run: Cases) -> None:
    """python-tuf reads its cache whole: a special file or garbage there is never trusted."""
    warm = run.car()
    (warm / "data/state.json").unlink()
    assert client(warm, "check").exit_code == 0
    names = [p.name for p in (warm / "data/tuf/metadata").iterdir() if p.is_file()]
    rnd = random.Random(SEED)
    for name in names:
        data = (warm / "data/tuf/metadata" / name).read_bytes()
        damages: list[tuple[str, Content]] = [(s.value, s) for s in SPECIALS]
        damages += list(mutate.byte_level(data, rnd, 6))
        for label, content in damages:

            def damage(car: Path, content: Content = content, name: str = name) -> None:
                shutil.copytree(warm / "data/tuf", car / "data/tuf")
                place(car / "data/tuf/metadata" / name, content)

            car, result = run.run(damage, ("check",), f"cache {name} {label}")
            assert result.exit_code == 0, f"{name} {label}: {result.output}"
            run.done(car)


def _subprocess_case(car: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-m", "ota_client", "-c", str(car / "client.toml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        cwd=REPO_ROOT,
    )


@pytest.mark.parametrize("name", ["client.toml", "root.json", "data/state.json", "data/boot.json",
                                  "data/outbox.json", "ca.pem"])  # fmt: skip
@pytest.mark.parametrize("special", [Special.DEV_ZERO, Special.SPARSE, Special.FIFO])
def test_class4_unbounded_reads_under_a_memory_limit(
    world: World, run: Cases, name: str, special: Special
) -> None:
    car = run.car()
    place(car / name, special)
    before = vehicle(car)
    proc = _subprocess_case(car, ("update",) if name != "client.toml" else ("status",))
    cases[0] += 1
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    if proc.returncode:
        assert len(errors) == 1, proc.stderr
    if name in ("client.toml", "root.json", "data/boot.json", "ca.pem"):
        assert proc.returncode != 0 and vehicle(car) == before, proc.stderr
    assert (car / "slot-a.img").read_bytes() == V1


# == classes 5, 6: numbers and strings ==========================================================


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("network", "download_deadline"), float("inf")),
        (("network", "request_deadline"), float("nan")),
        (("poll_interval",), 1e308),
        (("poll_jitter",), float("nan")),
        (("retry_delay",), -1),
        (("max_attempts",), 2**63 - 1),
        (("network", "min_speed"), float("-inf")),
        (("network", "checkpoint_interval"), 10**40),
        (("ecus", 0, "trial_deadline"), float("inf")),
        (("ecus", 0, "health", 0, "timeout"), float("nan")),
        (("ecus", 0, "slots", "size"), 2**63 - 1),
        (("ecus", 0, "boot", "attempts"), 10**40),
    ],
)
def test_class5_numbers_that_are_not_numbers(
    world: World, run: Cases, where: tuple[Any, ...], value: Any
) -> None:
    doc = config_doc(world.server)
    node = doc
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    for args in (("status",), ("update",)):
        car, result = run.run(write_toml(doc), args, f"class 5 {where}={value}", must_fail=True)
        assert result.exit_code == 3 and where[-1] in result.output, result.output
        run.done(car)


PATHS: list[tuple[Any, ...]] = [
    ("trust_root",),
    ("data_dir",),
    ("network", "ca_file"),
    ("ecus", 0, "slots", "a"),
    ("ecus", 0, "slots", "b"),
    ("ecus", 0, "boot", "state"),
    ("ecus", 0, "health", 0, "command", 0),
    ("reboot_command", 0),
    ("server",),
    ("vehicle_id",),
    ("ecus", 0, "serial"),
]


@pytest.mark.parametrize("bad", ["a\0b", "http://[::1", "x" * 5000, "ftp://host/x", ""])
def test_class6_strings_that_break_later_are_refused_at_load(
    world: World, run: Cases, bad: str
) -> None:
    doc = config_doc(world.server)
    for path in [*PATHS, ("ecus", 0, "health", 1, "http")]:
        broken = copy.deepcopy(doc)
        node = broken
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = bad
        car, result = run.run(write_toml(broken), ("update",), f"class 6 {path}={bad[:20]!r}")
        if result.exit_code:
            line = refused(result, "again")
            assert bad[:300] not in line or len(bad) < 200, "the error echoes the whole value"
        run.done(car)


# == what the server sends ======================================================================


@dataclass
class Hostile:
    """A server that serves the real repository but alters one response."""

    repo: Path
    path: str = ""  # the URL path to alter (suffix match)
    body: bytes | None = None  # replacement body
    status: int = 200
    port: int = 0
    events: list[bytes] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.path
        if request.method == "POST":
            return web.json_response({"stored": True}, status=202)
        if self.path and rel.endswith(self.path):
            if self.status != 200:
                return web.Response(status=self.status, body=self.body or b"")
            return web.Response(body=self.body or b"")
        if not rel.startswith("/repo/"):
            return web.Response(status=404)
        path = self.repo / rel.removeprefix("/repo/")
        if ".." in rel or not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path)

    @contextmanager
    def running(self) -> Iterator[str]:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        ready = threading.Event()

        async def start() -> None:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            ready.set()

        thread = threading.Thread(
            target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
        )
        thread.start()
        ready.wait(10)
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)


def test_hostile_server_responses(world: World, run: Cases) -> None:
    """Every metadata file and target the vehicle fetches, altered: one line, and never a write
    to the booted slot; transport trouble keeps progress, bad data never installs."""
    repo = world.home / "repo"
    names = ["timestamp.json", "2.root.json"]
    names += [p.name for p in (repo / "metadata").glob("*.snapshot.json")][-1:]
    names += [p.name for p in (repo / "metadata").glob("*.targets.json")][-1:]
    rnd = random.Random(SEED)
    hostile = Hostile(repo)
    with hostile.running() as url:
        for name in names:
            real = repo / "metadata" / name
            data = real.read_bytes() if real.exists() else b'{"signed": {}}'
            bodies = list(mutate.byte_level(data, rnd, 14)) + list(mutate.json_shapes())
            bodies.append(("endless", b"x" * (6 << 20)))
            for label, body in bodies:
                hostile.path, hostile.body, hostile.status = f"/metadata/{name}", body, 200

                def damage(car: Path) -> None:
                    doc = config_doc(url)
                    doc["network"].pop("ca_file")
                    doc["ecus"][0]["health"] = [{"command": ["true"]}]
                    (car / "client.toml").write_text(mutate.toml_dumps(doc))
                    (car / "data/state.json").unlink()

                car, result = run.run(
                    damage, ("update",), f"server {name} {label}", unchanged_on_refusal=False
                )
                if label == "endless" and name == "timestamp.json":  # fetched every cycle
                    assert result.exit_code == 7, f"{name} {label}: {result.output}"  # U-149
                elif result.exit_code:
                    assert result.exit_code in (4, 6, 7), f"{name} {label}: {result.output}"
                run.done(car)
        for status in (301, 403, 416, 500, 503):
            hostile.path, hostile.body, hostile.status = "/metadata/timestamp.json", b"no", status
            car, result = run.run(
                damage, ("update",), f"status {status}", unchanged_on_refusal=False
            )
            assert result.exit_code == 4, result.output
            run.done(car)
        for target in [p for p in (repo / "targets/bcm-s32k").iterdir()][:4]:
            data = target.read_bytes()
            for label, body in [*mutate.byte_level(data, rnd, 6), ("endless", data * 3)]:
                hostile.path, hostile.body, hostile.status = target.name, body, 200
                car, result = run.run(
                    damage, ("update",), f"target {label}", unchanged_on_refusal=False
                )
                if result.exit_code:
                    assert result.exit_code in (4, 6, 7), f"{target.name} {label}: {result.output}"
                run.done(car)


# == arguments ==================================================================================


def test_hostile_arguments(world: World, run: Cases, tmp_path: Path) -> None:
    car = run.car()
    (tmp_path / "a-file").write_text("x")
    repo, root = world.server + "/repo", str(car / "root.json")

    def fetch(target: str, *more: str, trust: str = root, url: str = repo) -> tuple[str, ...]:
        return ("fetch", target, "--repo", url, "--trust-root", trust, *more)

    insecure = "--allow-insecure-http"
    cases_: list[tuple[str, ...]] = [
        ("-c", "/dev/zero", "status"),
        ("-c", str(tmp_path), "status"),
        ("-c", str(tmp_path / "missing.toml"), "status"),
        ("-c", "/dev/null", "status"),
        ("status", "--bogus"),
        fetch("../etc/passwd", insecure, "--cache", str(tmp_path / "c1")),
        fetch("x/y", url="ftp://x"),
        fetch("x/y"),  # http:// without --allow-insecure-http
        fetch("x/y", insecure, url="http://[::1"),
        fetch("bcm-s32k/bcm-1.1.0.bin", insecure, "--cache", str(tmp_path / "c2"),
              trust="/dev/zero"),
        fetch("bcm-s32k/bcm-1.1.0.bin", insecure, "--cache", str(tmp_path / "a-file")),
        fetch("bcm-s32k/bcm-1.1.0.bin", insecure, "--cache", str(tmp_path / "c3"),
              "-o", str(tmp_path / "a-file")),
        fetch("nope/missing.bin", insecure, "--cache", str(tmp_path / "c4")),
        fetch("x" * 5000, insecure, "--cache", str(tmp_path / "c5")),
    ]  # fmt: skip
    for args in cases_:
        label = f"args {' '.join(a[:30] for a in args)}"
        with deadline(DEADLINE, label):
            result = CliRunner().invoke(client_main, list(args))
        refused(result, label)
    assert (car / "slot-a.img").read_bytes() == V1


# == property-based: the loaders themselves =====================================================

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@FAST
@given(JSON)
def test_hypothesis_state_loader(doc: Any) -> None:
    cases[0] += 1
    try:
        VehicleState.from_json(doc)
    except FormatError:
        pass


@FAST
@given(st.dictionaries(st.sampled_from(sorted(Report.__dataclass_fields__)), JSON, max_size=12))
def test_hypothesis_report_schema(doc: dict[str, Any]) -> None:
    from ota_client.metadata import MetadataFormatError

    cases[0] += 1
    try:
        Report.from_dict(doc)
    except MetadataFormatError:
        pass


TOML_VALUES = st.recursive(
    st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=20,
)


@FAST
@given(st.dictionaries(st.sampled_from(sorted(config_doc("https://x"))), TOML_VALUES, max_size=12))
def test_hypothesis_config_documents(doc: dict[str, Any]) -> None:
    cases[0] += 1
    try:
        parse_config(doc, Path("/nonexistent"))
    except FormatError:
        pass


def test_the_example_config_parses() -> None:
    example = REPO_ROOT / "contrib/client.example.toml"
    config = parse_config(load_toml(example, str(example)), Path("/etc/ota-client"))
    assert len(config.ecus) == 2 and config.network.client_cert is not None


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["hardware_ids", "release_counter", "version", "bundle", "ecu", "kind",
                         "image", "source", "other"]),
        JSON,
        max_size=9,
    )
)  # fmt: skip
def test_hypothesis_signed_custom_fields(doc: dict[str, Any]) -> None:
    """Signed metadata's custom fields: parsed, or one MetadataFormatError — never TypeError."""
    from ota_client.metadata import MetadataFormatError, TargetCustom

    cases[0] += 1
    try:
        TargetCustom.from_dict(doc)
    except MetadataFormatError:
        pass
