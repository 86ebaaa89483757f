"""Power-cut campaign: SIGKILL the client's whole session anywhere in a two-ECU bundle update.

Every run is a vehicle with two ECUs on bundle 1.0 — ECU-A takes a full image large enough to
cross several durable resume checkpoints, ECU-B a delta — on file slots larger than their
images, so the delta applies as on a partition. The real ``ota-client`` talks to the real
``ota serve``. Each run kills the client 1-3 times, in ``update``, ``boot``, ``reboot`` and
``run``: at a random moment, or the instant an atomic write creates its temporary file (seen
with inotify). After a kill the vehicle either loses power (the bootloader runs: ``reboot``,
then ``boot`` and ``run``) or is restarted without a reboot (systemd ``Restart=``: ``run``).
Every fourth vehicle's ECU-B fails its health check, so its bundle must roll back.

Checked on every run:

* after every kill and every command, each ECU's booted slot holds a complete published image;
* no write ever reaches a booted slot — every slot write is observed with inotify as it
  happens and compared with the slot the (simulated) bootloader booted at that moment;
* the bundle ends with both ECUs on 2.0 or both on 1.0, as the health checks decide;
* a kill is never reported as a failure; the server holds each report exactly once;
* a rolled-back release is never tried again.

CI runs OTA_POWERCUT_KILLS (default 200); ``make bench-powercut`` runs 1,000 and prints the
tally by the phase the vehicle was in when it was killed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from inotify_simple import INotify, flags

from tests.helpers import EXAMPLES, make_home, ok, ota, serve, write_manifest

KILLS = int(os.environ.get("OTA_POWERCUT_KILLS", "200"))
SEED = int(os.environ.get("OTA_POWERCUT_SEED", "2026"))
BIG = 3 << 20  # ECU-A's image: crosses several checkpoints
CHECKPOINT = 256 << 10
SLOT = 4 << 20
# Every power cut during a trial uses one boot attempt, as on a real bootloader: three cuts
# there exhaust the default three and the bundle rightly rolls back. One more attempt than a
# run has kills keeps the outcome decided by the health checks alone.
ATTEMPTS = 5
B1 = (EXAMPLES / "images/bcm-1.0.0.bin").read_bytes()
B2 = (EXAMPLES / "images/bcm-1.1.0.bin").read_bytes()
rng0 = random.Random(SEED)
A1, A2 = rng0.randbytes(BIG), rng0.randbytes(BIG)
IMAGES = {"ECU-A": (A1, A2), "ECU-B": (B1, B2)}


def publish(home: Path, tmp: Path, version: str, a: bytes, b: bytes) -> None:
    manifest = write_manifest(
        tmp / f"m-{version}",
        f'bundle = "car"\nversion = "{version}"\n'
        '[[images]]\necu = "a"\nfile = "a.bin"\nhardware_ids = ["ecu-a"]\n'
        '[[images]]\necu = "b"\nfile = "b.bin"\nhardware_ids = ["ecu-b"]\n',
        {"a.bin": a, "b.bin": b},
    )
    ok(ota(home, "release", "publish", "-q", manifest))


@dataclass
class Car:
    root: Path
    vin: str
    server: str
    failing: bool

    def write(self, template: Path) -> None:
        shutil.copytree(template, self.root)
        (self.root / "data").mkdir()
        health_b = '["sh", "-c", "sleep 0.05; exit 3"]' if self.failing else '["true"]'
        text = f"""
vehicle_id = "{self.vin}"
server = "{self.server}"
trust_root = "root.json"
mode = "track-latest"
data_dir = "data"
retry_delay = 0
[network]
allow_insecure_http = true
stall_timeout = 10
checkpoint_interval = {CHECKPOINT}
"""
        for serial, hwid, health in (
            ("ECU-A", "ecu-a", '["sh", "-c", "sleep 0.05"]'),
            ("ECU-B", "ecu-b", health_b),
        ):
            text += f"""
[[ecus]]
serial = "{serial}"
hardware_id = "{hwid}"
slots = {{ a = "{serial}-a.img", b = "{serial}-b.img", size = {SLOT} }}
boot = {{ backend = "simulated", attempts = {ATTEMPTS} }}
trial_deadline = 30
[[ecus.health]]
command = {health}
"""
        (self.root / "client.toml").write_text(text)

    def booted(self, serial: str) -> str:
        path = self.root / f"data/boot-{serial}.json"
        try:
            return json.loads(path.read_text()).get("booted", "a")  # type: ignore[no-any-return]
        except FileNotFoundError:
            return "a"

    def image(self, serial: str) -> bytes:
        """The published image the booted slot holds; fails if none (a bricked ECU)."""
        data = (self.root / f"{serial}-{self.booted(serial)}.img").read_bytes()
        for image in IMAGES[serial]:
            if data[: len(image)] == image:
                return image
        raise AssertionError(f"{self.vin} {serial}: the booted slot holds no complete image")

    def phase(self) -> str:
        try:
            return json.loads((self.root / "data/state.json").read_text())["phase"]  # type: ignore[no-any-return]
        except FileNotFoundError:
            return "none"

    def events(self) -> list[tuple[str, str, str]]:
        import urllib.request

        with urllib.request.urlopen(f"{self.server}/api/v1/vehicles/{self.vin}/events") as r:
            return [(e["ecu"], e["event"], e.get("version")) for e in json.loads(r.read())]


@dataclass
class Watcher:
    """Sees every slot write and every atomic write of one car as it happens (inotify)."""

    car: Car
    violations: list[str] = field(default_factory=list)
    atomic: int = 0  # atomic writes begun (temporary files created)
    _stop: bool = False

    def run(self) -> None:
        try:
            self._watch()
        except BaseException as e:  # a blind watcher must fail the run, not pass it
            self.violations.append(f"the watcher failed: {e!r}")

    def _watch(self) -> None:
        inotify = INotify()
        inotify.add_watch(self.car.root, flags.MODIFY)
        inotify.add_watch(self.car.root / "data", flags.CREATE | flags.MOVED_TO)
        booted = {serial: self.car.booted(serial) for serial in IMAGES}
        while not self._stop:
            for event in inotify.read(timeout=50):
                name = event.name
                if event.mask & flags.CREATE and name.startswith(".") and name.endswith(".tmp"):
                    self.atomic += 1
                elif event.mask & flags.MOVED_TO and name.startswith("boot-"):
                    serial = name.removeprefix("boot-").removesuffix(".json")
                    booted[serial] = self.car.booted(serial)
                elif event.mask & flags.MODIFY and name.endswith(".img"):
                    serial, slot = name.removesuffix(".img").rsplit("-", 1)
                    if booted.get(serial) == slot:
                        self.violations.append(f"{self.car.vin}: a write reached booted {name}")
        inotify.close()

    @contextmanager
    def watching(self) -> Iterator[Watcher]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        time.sleep(0.02)
        try:
            yield self
        finally:
            self._stop = True
            thread.join(5)


def kill_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL everything in the client's session: the client and its health checks."""
    sid = proc.pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # the session id
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass
    proc.wait()


COMMANDS = {
    "update": ["update"],
    "boot": ["boot"],
    "reboot": ["reboot"],
    "run": ["run", "--once"],
}


def command(car: Car, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ota_client", "-c", str(car.root / "client.toml"), *COMMANDS[name]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.slow
def test_power_cut_anywhere_in_a_two_ecu_bundle(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    (home / "config.toml").write_text("[deltas]\nmax_ratio = 0.9\n")
    publish(home, tmp_path, "1.0", A1, B1)
    publish(home, tmp_path, "2.0", A2, B2)
    rng = random.Random(SEED)
    tally: Counter[str] = Counter()
    where: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    kills = runs = 0
    with serve(home) as url:
        server = url.removesuffix("/repo")
        template = tmp_path / "template"
        template.mkdir()
        shutil.copy(home / "repo/metadata/1.root.json", template / "root.json")
        junk = rng.randbytes(SLOT)
        for serial, (old, _new) in IMAGES.items():
            (template / f"{serial}-a.img").write_bytes(old + junk[len(old) :])
            (template / f"{serial}-b.img").write_bytes(junk)
        # How long an uninterrupted update works, to spread the kills over it.
        probe = Car(tmp_path / "probe", "PROBE", server, False)
        probe.write(template)
        watcher = Watcher(probe)
        with watcher.watching():
            proc = command(probe, "update")
            while watcher.atomic == 0 and proc.poll() is None:
                time.sleep(0.0005)
            started = time.monotonic()  # the interpreter is up: the work begins
            assert proc.wait() == 0
            duration = time.monotonic() - started
        assert probe.image("ECU-A") == A2 and probe.image("ECU-B") == B2
        while kills < KILLS:
            car = Car(tmp_path / f"run{runs}", f"RUN{runs:05d}", server, runs % 4 == 3)
            car.write(template)
            budget = rng.randint(1, 3)
            queue = ["update"]
            watcher = Watcher(car)
            with watcher.watching():
                for _step in range(40):
                    if not queue:
                        if car.phase() == "IDLE":
                            break
                        queue = ["run"]
                    name = queue.pop(0)
                    proc = command(car, name)
                    killed = False
                    if budget:
                        # Kill inside the k-th atomic write, or at a random moment after
                        # the interpreter started (the first atomic write).
                        at_atomic = rng.random() < 0.5
                        first = watcher.atomic + 1
                        target = first + (rng.randint(0, 40) if at_atomic else 0)
                        while proc.poll() is None and watcher.atomic < target:
                            time.sleep(0.0005)
                        deadline = time.monotonic() + (0 if at_atomic else rng.uniform(0, duration))
                        while proc.poll() is None and time.monotonic() < deadline:
                            time.sleep(0.002)
                        if proc.poll() is None:
                            kill_session(proc)
                            killed = True
                            budget -= 1
                            kills += 1
                            tally[car.phase()] += 1
                            where[f"{name}{' (atomic write)' if at_atomic else ''}"] += 1
                    proc.wait()
                    for serial in IMAGES:
                        car.image(serial)  # a complete image boots, whatever happened
                    if killed:
                        power_cut = rng.random() < 0.6
                        queue = ["reboot", "boot", "run"] if power_cut else ["run"]
                assert car.phase() == "IDLE", (car.vin, car.phase())
            assert not watcher.violations, watcher.violations
            images = {serial: car.image(serial) for serial in IMAGES}
            events = car.events()
            assert len(events) == len(set(events)), (car.vin, events)  # each report once
            assert not [e for e in events if e[1] == "update_failed"], (car.vin, events)
            if car.failing:
                assert images == {"ECU-A": A1, "ECU-B": B1}, car.vin
                assert sorted(events) == [
                    ("ECU-A", "rollback", "2.0"),
                    ("ECU-B", "rollback", "2.0"),
                ]
                assert command(car, "run").wait() == 0 and car.events() == events  # never again
                outcomes["rolled back"] += 1
            else:
                assert images == {"ECU-A": A2, "ECU-B": B2}, car.vin
                assert sorted(events) == [("ECU-A", "commit", "2.0"), ("ECU-B", "commit", "2.0")]
                outcomes["committed"] += 1
            shutil.rmtree(car.root)
            runs += 1
    if KILLS >= 100:  # the campaign must actually land everywhere
        assert len({"DOWNLOAD", "INSTALL", "REBOOT", "TRIAL", "ROLLBACK"} & set(tally)) >= 4, tally
    print(
        f"\npower cuts: {kills} kills over {runs} runs; phase when killed: "
        f"{dict(sorted(tally.items()))}; command killed: {dict(sorted(where.items()))}; "
        f"outcomes: {dict(outcomes)}"
    )
