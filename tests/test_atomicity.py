"""A publish that fails at any step leaves the repository exactly as it was, and verifiable.

Faults are injected by making the N-th call of each step raise (disk full), for every N a
normal publish reaches; a separate campaign SIGKILLs real publishing processes at random.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ota_server.repository import publish, store, transaction
from tests.helpers import EXAMPLES, image_home, ok, ota, tree, write_manifest
from tests.local_fetcher import published_paths, verify_all

MANIFEST = EXAMPLES / "infotainment-2.1.0.toml"
NEW_PATHS = {"hu-imx8/head-unit-2.1.0.img", "tcu-9150/telematics-2.1.0.bin"}
NEW_DELTAS = {
    "hu-imx8/head-unit-2.1.0.img.from-head-unit-2.0.0.img.delta",
    "tcu-9150/telematics-2.1.0.bin.from-telematics-2.0.0.bin.delta",
}

# (module or class, attribute): every step a publish goes through, from copying images to the
# final rename. Each is made to fail at its 1st, 2nd, ... call.
STEPS: list[tuple[Any, str]] = [
    (publish, "stage_copy"),
    (publish, "generate"),
    (publish, "verify_payload"),
    (store.FileRepository, "close"),
    (store.FileRepository, "save"),
    (transaction.Transaction, "commit"),
    (transaction.Transaction, "_run_op"),
    (transaction, "write_atomic"),
    (transaction, "fsync_dir"),
    (transaction.shutil, "copy2"),
    (transaction.os, "replace"),
]


class Fault(OSError):
    def __init__(self) -> None:
        super().__init__(errno.ENOSPC, "injected fault: no space left on device")


def _wrap(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, fail_at: int | None) -> list[int]:
    calls = [0]
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == fail_at:
            raise Fault()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def _count_calls(template: Path, tmp_path: Path, owner: Any, name: str) -> int:
    home = tmp_path / "count"
    shutil.copytree(template, home)
    with pytest.MonkeyPatch.context() as mp:
        calls = _wrap(mp, owner, name, None)
        ok(ota(home, "release", "publish", "-q", MANIFEST))
    shutil.rmtree(home)
    return calls[0]


@pytest.fixture
def base_home(published_home: Path) -> Path:
    """The examples minus the last release, which each run then tries to publish."""
    # Start from a home that has everything but infotainment 2.1.0.
    shutil.rmtree(published_home)
    from tests.helpers import EXAMPLE_MANIFESTS, make_home

    home = make_home(published_home.parent / "base", *EXAMPLE_MANIFESTS[:3])
    return home


@pytest.mark.parametrize(
    ("owner", "name"), STEPS, ids=[f"{getattr(o, '__name__', o)}.{n}" for o, n in STEPS]
)
def test_fault_at_every_call_of_every_step(
    base_home: Path, tmp_path: Path, owner: Any, name: str
) -> None:
    total = _count_calls(base_home, tmp_path, owner, name)
    assert total >= 1, f"{name} is never called: the step list is stale"
    before_repo, before_keys = tree(base_home / "repo"), tree(base_home / "keys")
    before_paths = set(published_paths(base_home))
    for fail_at in range(1, total + 1):
        home = tmp_path / f"run-{fail_at}"
        shutil.copytree(base_home, home)
        with pytest.MonkeyPatch.context() as mp:
            _wrap(mp, owner, name, fail_at)
            result = ota(home, "release", "publish", "-q", MANIFEST)
        if result.exit_code == 0:
            # Only a fault after the commit point may be absorbed; the release then stands.
            assert set(published_paths(home)) >= NEW_PATHS
        else:
            assert "no space left" in result.output, result.output
            assert tree(home / "repo") == before_repo, (
                f"{name} call {fail_at} changed the repository"
            )
            assert not (home / "state" / "journal.json").exists()
        assert tree(home / "keys") == before_keys
        verified = set(verify_all(home, tmp_path / "verify"))
        assert verified == before_paths or verified == before_paths | NEW_PATHS | NEW_DELTAS
        ok(ota(home, "release", "list"))
        if result.exit_code != 0:  # and the same publish then succeeds
            ok(ota(home, "release", "publish", "-q", MANIFEST))
            assert set(published_paths(home)) >= NEW_PATHS
        shutil.rmtree(home)


def test_recovery_of_a_journal_left_by_a_dead_process(
    base_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulate death right after the journal and the first files: the next writer undoes it."""
    before = tree(base_home / "repo")
    ops = [0]
    original = transaction.Transaction._run_op

    def die_on_third(self: transaction.Transaction, op: Any) -> None:
        ops[0] += 1
        if ops[0] == 3:
            raise KeyboardInterrupt  # stands in for SIGKILL: no cleanup runs below us
        original(self, op)

    monkeypatch.setattr(transaction.Transaction, "_run_op", die_on_third)
    monkeypatch.setattr(transaction, "recover", lambda *_a: None)  # the dying process can't recover
    with pytest.raises(KeyboardInterrupt):
        publish.publish_release(image_home(base_home), MANIFEST)
    monkeypatch.undo()
    assert (base_home / "state" / "journal.json").exists()
    assert tree(base_home / "repo") != before
    ok(ota(base_home, "repo", "refresh"))  # any writer recovers first
    assert not (base_home / "state" / "journal.json").exists()
    assert verify_all(base_home, tmp_path / "v")


KILL_RUNS = int(os.environ.get("OTA_KILL_RUNS", "12"))


@pytest.mark.slow
def test_sigkill_during_publish(tmp_path: Path) -> None:
    """Kill real publishing processes at random moments; the repository always verifies."""
    from tests.helpers import make_home

    home = make_home(tmp_path)
    rng = random.Random(1234)
    big = rng.randbytes(1 << 20) * 24  # 24 MiB so the copy takes a while
    versions_done: list[str] = []
    outcomes = {"killed-before-commit": 0, "completed": 0}
    duration = 1.0  # measured on the first, uninterrupted run; kills land anywhere inside it
    for run in range(KILL_RUNS + 1):
        version = f"1.{run}"
        manifest = write_manifest(
            tmp_path / f"m{run}",
            f'bundle = "b"\nversion = "{version}"\n[[images]]\necu = "e"\n'
            f'file = "img.bin"\nhardware_ids = ["hw"]\n',
            {"img.bin": big + run.to_bytes(4, "big")},
        )
        before = tree(home / "repo")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ota_server",
                "--home",
                str(home),
                "release",
                "publish",
                "-q",
                str(manifest),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if run == 0:
            start = time.monotonic()
            assert proc.wait() == 0
            duration = time.monotonic() - start
        else:
            time.sleep(rng.uniform(0.0, duration))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        ok(ota(home, "repo", "refresh"))  # the next writer recovers
        paths = set(published_paths(home))
        if f"hw/e-{version}.bin" in paths:
            outcomes["completed"] += 1
            versions_done.append(version)
        else:
            outcomes["killed-before-commit"] += 1
            # Only the refresh may have re-signed something; no target file was left behind.
            after = {k for k in tree(home / "repo") if k.startswith("targets/")}
            assert after == {k for k in before if k.startswith("targets/")}
        assert not list((home / "state").glob("txn/*"))
        assert len(verify_all(home, tmp_path / "v")) == len(versions_done)
    print("sigkill outcomes:", outcomes)
