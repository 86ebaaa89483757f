"""The vehicle client end to end, against the real ``ota serve`` on loopback.

v1 -> v2 committed (by delta, on every boot backend); v3 whose health check fails rolls back
and is reported; an interrupted download resumes with fewer bytes; bad downloads, metadata,
slots, state files and health checks never touch the active slot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ota_server.repository.lifecycle import refresh_repository
from tests.helpers import (
    EXAMPLES,
    image_home,
    make_home,
    ok,
    ota,
    serve,
    use_database,
    write_manifest,
)
from tests.vehicle import CuttingProxy, Ecu, Vehicle

V1 = (EXAMPLES / "images/bcm-1.0.0.bin").read_bytes()
V2 = (EXAMPLES / "images/bcm-1.1.0.bin").read_bytes()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(
        tmp_path, EXAMPLES / "body-control-1.0.0.toml", EXAMPLES / "body-control-1.1.0.toml"
    )


@pytest.fixture
def server(request: pytest.FixtureRequest, home: Path) -> Iterator[str]:
    # Tests that also take ``database_url`` run once per fleet database (SQLite, PostgreSQL).
    if "database_url" in request.fixturenames:
        use_database(home, request.getfixturevalue("database_url"))
    with serve(home) as url:
        yield url.removesuffix("/repo")


def vehicle(tmp_path: Path, home: Path, server: str, **kw: object) -> Vehicle:
    root = tmp_path / "vehicle"
    root.mkdir(exist_ok=True)
    shutil.copy(home / "repo/metadata/1.root.json", root / "root.json")
    return Vehicle(root, server, **kw)  # type: ignore[arg-type]


def publish(home: Path, tmp_path: Path, version: str, image: bytes) -> None:
    manifest = write_manifest(
        tmp_path / f"m-{version}",
        f'bundle = "body-control"\nversion = "{version}"\n[[images]]\necu = "bcm"\n'
        'file = "bcm.bin"\nhardware_ids = ["bcm-s32k"]\n',
        {"bcm.bin": image},
    )
    ok(ota(home, "release", "publish", "-q", manifest))


@pytest.mark.parametrize("backend", ["simulated", "grub", "uboot"])
def test_v1_to_v2_commits(tmp_path: Path, home: Path, server: str, backend: str) -> None:
    car = vehicle(tmp_path, home, server, backend=backend)
    check = car.client("check", "--json")
    assert check.exit_code == 0, check.output
    plan = json.loads(check.stdout)["ecus"][0]
    assert plan["installed"]["version"] == "1.0.0"
    assert plan["update"]["target"]["version"] == "1.1.0"
    assert plan["update"]["download"]["kind"] == "delta"
    result = car.update()
    assert result.exit_code == 0, result.output
    st = car.status()
    assert (st["state"], st["booted_slot"], st["active_slot"]) == ("IDLE", "b", "b")
    assert st["installed"]["version"] == "1.1.0" and st["max_counter"] == 2
    assert car.running() == V2
    assert car.slot("a").read_bytes() == V1  # the old slot is untouched, ready for rollback
    assert [e["event"] for e in car.events()] == ["commit"]
    assert car.update().exit_code == 0 and [e["event"] for e in car.events()] == ["commit"]
    assert not list((car.root / "data").glob("downloads/*"))  # the staged delta is gone


def test_failed_health_check_rolls_back_and_reports(
    tmp_path: Path, home: Path, database_url: str, server: str
) -> None:
    car = vehicle(tmp_path, home, server)
    assert car.update().exit_code == 0  # now on v2
    publish(home, tmp_path, "1.2.0", V2[::-1])
    car.health = 'command = ["sh", "-c", "exit 3"]'
    car.write_config()
    result = car.update()
    assert result.exit_code != 0 and "exit status 3" in result.output
    st = car.status()
    assert (st["state"], st["booted_slot"], st["active_slot"]) == ("IDLE", "b", "b")
    assert st["installed"]["version"] == "1.1.0" and car.running() == V2
    assert [e["event"] for e in car.events()] == ["commit", "rollback"]
    assert car.events()[1]["version"] == "1.2.0"
    # The rejected image is never tried again; the vehicle stays on v2.
    car.health = 'command = ["true"]'
    car.write_config()
    assert car.update().exit_code == 0
    assert car.status()["installed"]["version"] == "1.1.0"


def test_hanging_health_check_rolls_back(tmp_path: Path, home: Path, server: str) -> None:
    car = vehicle(tmp_path, home, server, health='command = ["sleep", "60"]\ntimeout = 1')
    result = car.update()
    assert result.exit_code != 0 and "no answer within 1 s" in result.output
    st = car.status()
    assert (st["booted_slot"], st["active_slot"]) == ("a", "a") and car.running() == V1


def test_interrupted_download_resumes_with_fewer_bytes(
    tmp_path: Path, home: Path, server: str
) -> None:
    big = os.urandom(6 << 20)
    (tmp_path / "cfg").mkdir()
    (home / "config.toml").write_text("[deltas]\nsources = 0\n")  # full image only
    publish(home, tmp_path, "2.0.0", big)
    port = urllib.parse.urlsplit(server).port
    assert port is not None
    proxy = CuttingProxy(port, cut_after=(4 << 20)).start()
    try:
        car = vehicle(tmp_path, home, f"http://127.0.0.1:{proxy.port}", slot_size=8 << 20)
        first = car.update()
        assert first.exit_code == 4 and "will resume" in first.output
        st = car.status()
        received = st["job"]["fetch"]["received"]
        assert st["state"] == "DOWNLOAD" and 0 < received < len(big)
        assert car.slot("a").read_bytes() == V1 and st["booted_slot"] == "a"
        proxy.bytes_sent.clear()
        second = car.update()
        assert second.exit_code == 0, second.output
        assert sum(proxy.bytes_sent) < len(big) - received + (256 << 10)
        assert car.status()["installed"]["version"] == "2.0.0" and car.running() == big
    finally:
        proxy.stop()


def test_tampered_image_is_refused(tmp_path: Path, home: Path, server: str) -> None:
    (home / "config.toml").write_text("[deltas]\nsources = 0\n")
    publish(home, tmp_path, "2.0.0", V2 + b"more")
    victim = next((home / "repo/targets/bcm-s32k").glob("*.bcm-2.0.0.bin"))
    data = bytearray(victim.read_bytes())
    data[50] ^= 0xFF
    victim.write_bytes(bytes(data))
    car = vehicle(tmp_path, home, server)
    # The delta to 1.1.0 is fine, but 2.0.0 is the newest: full image, tampered.
    result = car.update()
    assert result.exit_code == 7 and "does not match its signed hash" in result.output
    st = car.status()
    assert (st["state"], st["booted_slot"], st["active_slot"]) == ("IDLE", "a", "a")
    assert car.slot("a").read_bytes() == V1
    last = car.events()[-1]
    assert (last["event"], last["kind"]) == ("update_failed", "security")
    assert st["vehicle"]["security"] and st["vehicle"]["error_kind"] == "security"
    # A security failure is never retried: the image is given up at once.
    assert "given up" in st["vehicle"]["error"] and len(st["rejected"]) == 1
    # The next cycle takes the newest release not given up (1.1.0), never 2.0.0 again.
    assert car.update().exit_code == 0 and car.status()["installed"]["version"] == "1.1.0"
    assert [(e["event"], e["version"]) for e in car.events()] == [
        ("update_failed", "2.0.0"),
        ("commit", "1.1.0"),
    ]


def test_expired_metadata_is_refused(tmp_path: Path, home: Path) -> None:
    refresh_repository(image_home(home), force=True, now=datetime.now(UTC) - timedelta(days=3))
    with serve(home, "--no-refresh") as url:
        car = vehicle(tmp_path, home, url.removesuffix("/repo"))
        result = car.update()
    assert result.exit_code != 0 and "Expired" in result.output
    assert car.slot("a").read_bytes() == V1 and car.status()["active_slot"] == "a"


def test_slot_too_small(tmp_path: Path, home: Path, server: str) -> None:
    car = vehicle(tmp_path, home, server, slot_size=1000)
    result = car.update()
    assert result.exit_code == 5 and "slot b holds 1000 bytes" in result.output
    assert not car.slot("b").exists() and car.status()["active_slot"] == "a"


def test_disk_full(tmp_path: Path, home: Path, server: str) -> None:
    car = vehicle(tmp_path, home, server, slot_b="/dev/full")
    result = car.update()
    assert result.exit_code != 0 and "No space left" in result.output
    st = car.status()
    assert (st["booted_slot"], st["active_slot"]) == ("a", "a") and car.slot("a").read_bytes() == V1


def test_delta_for_another_source_falls_back_to_the_full_image(
    tmp_path: Path, home: Path, server: str
) -> None:
    car = vehicle(tmp_path, home, server)
    plan = json.loads(car.client("check", "--json").stdout)["ecus"][0]
    assert plan["update"]["download"]["kind"] == "delta"
    # The vehicle believes it runs v1 (it did), but its slot has rotted since.
    record = {"installed": plan["installed"], "max_counter": 1, "rejected": []}
    state = {"schema": 1, "phase": "IDLE", "ecus": {"BCM-1": record}}
    (car.root / "data").mkdir(exist_ok=True)
    (car.root / "data/state.json").write_text(json.dumps(state))
    rotted = bytearray(V1)
    rotted[1000] ^= 1
    car.slot("a").write_bytes(bytes(rotted))
    result = car.update()
    assert result.exit_code == 0, result.output
    assert car.status()["installed"]["version"] == "1.1.0" and car.running() == V2


def test_damaged_state_file_is_moved_aside_and_reported(
    tmp_path: Path, home: Path, database_url: str, server: str
) -> None:
    car = vehicle(tmp_path, home, server)
    (car.root / "data").mkdir(exist_ok=True)
    (car.root / "data/state.json").write_text('{"schema": 1, "phase": [1]}')
    status = car.client("status")  # read-only: says so, moves nothing
    assert status.exit_code == 6 and "damaged" in status.output
    assert (car.root / "data/state.json").exists()
    result = car.update()
    assert result.exit_code == 0, result.output
    assert list((car.root / "data").glob("state.json.damaged-*"))
    assert car.status()["installed"]["version"] == "1.1.0" and car.running() == V2
    assert [e["event"] for e in car.events()] == ["state_reset", "commit"]


ONE_ECU = (
    'vehicle_id = "v"\nserver = "https://x"\ntrust_root = "r"\ndata_dir = "d"\n'
    '[[ecus]]\nserial = "E"\nhardware_id = "h"\nslots = { a = "a.img", b = "b.img" }\n'
)
SECOND_PRIMARY = (
    '[[ecus]]\nserial = "F"\nhardware_id = "h"\nslots = { a = "c.img", b = "d.img" }\n'
    'key = "k"\nprimary = true\n'
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vehicle_id = 1", "vehicle_id is not a valid vehicle id"),
        (
            'vehicle_id = "../x"\nserver = "http://x"\ntrust_root = "r"\ndata_dir = "d"\necus = []',
            "vehicle id",
        ),
        (
            'vehicle_id = "v"\nserver = "ftp://x"\ntrust_root = "r"\ndata_dir = "d"\necus = []',
            "server",
        ),
        (
            'vehicle_id = "v"\nserver = "https://x"\ntrust_root = "r"\ndata_dir = "d"\n'
            "ecus = []\ncolour = 1",
            "ecus must be a list of 1-64 tables",
        ),
        ("[[", "malformed TOML"),
        ('vehicle_id = "v"\nserver = "http://x"', "allow_insecure_http"),
        (f"{ONE_ECU}", "director_root is missing"),
        (f'director_root = "d.json"\n{ONE_ECU}', "ECU E has no key"),
        (f'director_root = "d.json"\n{ONE_ECU}key = "k"\nprimary = true\n{SECOND_PRIMARY}',
         "one ECU"),
        (f'mode = "latest"\n{ONE_ECU}', "mode must be one of"),
        (f'director_root = "d.json"\n{ONE_ECU}key = "missing.pem"\n', "ECU key"),
    ],
)  # fmt: skip
def test_bad_configs(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    from click.testing import CliRunner

    from ota_client.cli import main

    result = CliRunner().invoke(main, ["-c", str(config), "status"])
    assert result.exit_code == 3, result.output
    assert message in result.output and "Traceback" not in result.output


def test_image_hash_of_running_slot(tmp_path: Path, home: Path, server: str) -> None:
    """The vehicle learns what it runs by hashing its active slot against published images."""
    car = vehicle(tmp_path, home, server)
    plan = json.loads(car.client("check", "--json").stdout)["ecus"][0]
    assert plan["installed"]["sha256"] == hashlib.sha256(V1).hexdigest()


def test_one_client_at_a_time(tmp_path: Path, home: Path, server: str) -> None:
    from ota_client.agent.store import exclusive

    car = vehicle(tmp_path, home, server)
    with exclusive(car.root / "data"):
        result = car.update()
    assert result.exit_code == 5 and "another ota-client" in result.output
    assert car.update().exit_code == 0  # once the other one is done


HU1 = (EXAMPLES / "images/head-unit-2.0.0.img").read_bytes()
TCU1 = (EXAMPLES / "images/telematics-2.0.0.bin").read_bytes()
HU2 = (EXAMPLES / "images/head-unit-2.1.0.img").read_bytes()
TCU2 = (EXAMPLES / "images/telematics-2.1.0.bin").read_bytes()


@pytest.fixture
def infotainment(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    home = make_home(
        tmp_path, EXAMPLES / "infotainment-2.0.0.toml", EXAMPLES / "infotainment-2.1.0.toml"
    )
    with serve(home) as url:
        yield home, url.removesuffix("/repo")


def two_ecus(tmp_path: Path, home: Path, server: str, tcu_health: str) -> Vehicle:
    root = tmp_path / "car"
    root.mkdir()
    shutil.copy(home / "repo/metadata/1.root.json", root / "root.json")
    ecus = [
        Ecu("HU-1", "hu-imx8", HU1, prefix="hu-"),
        Ecu("TCU-1", "tcu-9150", TCU1, health=tcu_health, prefix="tcu-"),
    ]
    return Vehicle(root, server, ecus=ecus)


def test_two_ecu_bundle_commits_together(tmp_path: Path, infotainment: tuple[Path, str]) -> None:
    home, server = infotainment
    car = two_ecus(tmp_path, home, server, 'command = ["true"]')
    result = car.update()
    assert result.exit_code == 0, result.output
    assert car.running("HU-1") == HU2 and car.running("TCU-1") == TCU2
    assert sorted((e["ecu"], e["event"], e["version"]) for e in car.events()) == [
        ("HU-1", "commit", "2.1.0"),
        ("TCU-1", "commit", "2.1.0"),
    ]


def test_two_ecu_bundle_second_health_check_fails_both_roll_back(
    tmp_path: Path, infotainment: tuple[Path, str]
) -> None:
    home, server = infotainment
    car = two_ecus(tmp_path, home, server, 'command = ["sh", "-c", "exit 3"]')
    result = car.update()
    assert result.exit_code == 1 and "TCU-1: sh -c exit 3: exit status 3" in result.output
    for serial, image in (("HU-1", HU1), ("TCU-1", TCU1)):
        st = car.status(serial)
        assert (st["booted_slot"], st["active_slot"], st["state"]) == ("a", "a", "IDLE")
        assert car.running(serial) == image
        assert car.slot("a", serial).read_bytes() == image  # never written
    events = car.events()
    assert sorted((e["ecu"], e["event"]) for e in events) == [
        ("HU-1", "rollback"),
        ("TCU-1", "rollback"),
    ]
    assert all(e["bundle"] == "infotainment" and e["version"] == "2.1.0" for e in events)
    assert car.update().exit_code == 0 and len(car.events()) == 2  # never retried


@contextmanager
def partition(size: int, content: bytes, tmp_path: Path, name: str) -> Iterator[Path]:
    """A loop device of ``size`` bytes holding ``content`` (else a file, where loops fail)."""
    backing = tmp_path / f"{name}.backing"
    backing.write_bytes(content + os.urandom(size - len(content)))
    try:
        loop = subprocess.run(
            ["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        loop = None
    if loop is None or loop.returncode != 0:
        yield backing  # no loop devices here: a file larger than the image
        return
    device = Path(loop.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", str(device)], check=False, timeout=30)


def test_a_delta_applies_to_a_partition_larger_than_the_image(
    tmp_path: Path, home: Path, server: str
) -> None:
    size = 1 << 20
    with (
        partition(size, V1, tmp_path, "a") as slot_a,
        partition(size, b"", tmp_path, "b") as slot_b,
    ):
        root = tmp_path / "vehicle"
        root.mkdir()
        shutil.copy(home / "repo/metadata/1.root.json", root / "root.json")
        car = Vehicle(root, server, ecus=[Ecu(slot_b=str(slot_b), prefix="")])
        (root / "slot-a.img").unlink()
        (root / "slot-a.img").symlink_to(slot_a)
        plan = json.loads(car.client("check", "--json").stdout)["ecus"][0]
        assert plan["update"]["download"]["kind"] == "delta"
        # Only the delta can be downloaded: a fall-back to the full image would fail.
        next((home / "repo/targets/bcm-s32k").glob("*.bcm-1.1.0.bin")).unlink()
        result = car.update()
        assert result.exit_code == 0, result.output
        with open(slot_b, "rb") as f:
            assert f.read(len(V2)) == V2
        with open(slot_a, "rb") as f:
            assert f.read(len(V1)) == V1
    assert [e["event"] for e in car.events()] == ["commit"]


def test_the_old_single_grub_environment_is_refused_with_what_to_set(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ota_client.cli import main

    config = tmp_path / "c.toml"
    config.write_text(
        'vehicle_id = "v"\nserver = "https://x"\ntrust_root = "r"\ndata_dir = "d"\n'
        '[[ecus]]\nserial = "E"\nhardware_id = "h"\nslots = { a = "a.img", b = "b.img" }\n'
        'boot = { backend = "grub", env = "/boot/grub/grubenv", cmdline = "/proc/cmdline" }\n'
    )
    result = CliRunner().invoke(main, ["-c", str(config), "status"])
    assert result.exit_code == 3 and "set dir to the folder of ota.cfg" in result.output
