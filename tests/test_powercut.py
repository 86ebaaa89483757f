"""Power-cut campaign: SIGKILL the client at random moments of an update, power-cycle, resume.

Each run starts a real ``ota-client update`` process against the real server and kills it
somewhere in its life (state file writes, downloads, slot writes, boot-control writes), then
plays the power cycle: the bootloader boots (``reboot``), start-up finishes what it can
(``boot``), and updates are retried until the vehicle is idle. Invariants, every run:

* the state file is always readable;
* after the power cycle, the booted slot holds a complete image that was published;
* the update ends committed (healthy image) or rolled back (failing health check).

CI runs OTA_POWERCUT_RUNS (default 200); ``make bench-powercut`` runs 1,000 and prints the
tally by the state the client was killed in.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import EXAMPLES, make_home, serve
from tests.vehicle import Vehicle

RUNS = int(os.environ.get("OTA_POWERCUT_RUNS", "200"))
V1 = (EXAMPLES / "images/bcm-1.0.0.bin").read_bytes()
V2 = (EXAMPLES / "images/bcm-1.1.0.bin").read_bytes()


def _state(car: Vehicle) -> dict[str, object]:
    path = car.root / "data/state-BCM-1.json"
    if not path.exists():
        return {"state": "none"}
    return json.loads(path.read_bytes())  # must never fail: atomic writes


def _booted_image(car: Vehicle) -> bytes:
    boot = json.loads((car.root / "data/boot-BCM-1.json").read_text())
    data = car.slot(boot.get("booted", "a")).read_bytes()
    for image in (V1, V2):
        if data[: len(image)] == image:
            return image
    raise AssertionError(f"the booted slot {boot.get('booted')} holds no published image")


def _fresh(template: Path, root: Path) -> Path:
    shutil.copytree(template, root)
    return root


def _start(car: Vehicle) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ota_client", "-c", str(car.config), "update"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_start(car: Vehicle) -> float:
    """When the client wrote its first state (interpreter start-up is not worth killing)."""
    path = car.root / "data/state-BCM-1.json"
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    return time.monotonic()


@pytest.mark.slow
def test_power_cut_anywhere(tmp_path: Path) -> None:
    home = make_home(
        tmp_path, EXAMPLES / "body-control-1.0.0.toml", EXAMPLES / "body-control-1.1.0.toml"
    )
    rng = random.Random(int(os.environ.get("OTA_POWERCUT_SEED", "2026")))
    tally: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    with serve(home) as url:
        server = url.removesuffix("/repo")
        template = tmp_path / "template"
        template.mkdir()
        shutil.copy(home / "repo/metadata/1.root.json", template / "root.json")
        Vehicle(template, server)
        # How long an uninterrupted update works once started, to spread the kills over it.
        probe = Vehicle(_fresh(template, tmp_path / "probe"), server)
        proc = _start(probe)
        started = _wait_for_start(probe)
        while _state(probe).get("state") != "IDLE" and proc.poll() is None:
            time.sleep(0.001)
        active = time.monotonic() - started
        proc.wait()
        for run in range(RUNS):
            root = _fresh(template, tmp_path / f"run{run}")
            failing = run % 4 == 3  # every fourth vehicle's new image fails its health check
            car = Vehicle(
                root, server, health='command = ["false"]' if failing else 'command = ["true"]'
            )
            proc = _start(car)
            _wait_for_start(car)
            time.sleep(rng.uniform(0, active))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_in = str(_state(car).get("state"))
            tally[killed_in] += 1
            # Power cycle: the bootloader boots, then start-up and update until idle.
            assert car.client("reboot").exit_code == 0
            _booted_image(car)  # a complete, published image — whatever was interrupted
            for _attempt in range(4):
                car.client("boot")
                car.update()
                st = _state(car)
                if st["state"] == "IDLE" and not st.get("error"):
                    break
            st = _state(car)
            running = _booted_image(car)
            if failing:
                assert running == V1 and st["state"] == "IDLE", (run, killed_in, st)
                outcomes["rolled back"] += 1
            else:
                assert running == V2 and st["installed"]["version"] == "1.1.0", (run, killed_in, st)  # type: ignore[index]
                outcomes["committed"] += 1
            shutil.rmtree(root)
    if RUNS >= 100:  # the campaign must actually land in the middle of updates
        assert len({"CHECK", "DOWNLOAD", "INSTALL", "ARM", "COMMIT"} & set(tally)) >= 4, tally
    print(
        f"\npower cuts: {RUNS} runs; killed in state: {dict(sorted(tally.items()))}; "
        f"outcomes: {dict(outcomes)}"
    )
