"""The independent JavaScript TUF client (tuf-js) accepts our repository.

Needs the checker set up by ``make test`` (OTA_TUFJS_DIR); CI sets OTA_REQUIRE_TUFJS=1 so a
missing checker fails instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import EXAMPLES, ok, ota
from tests.local_fetcher import published_paths


def _checker() -> Path:
    directory = os.environ.get("OTA_TUFJS_DIR")
    script = Path(directory) / "verify-repo.sh" if directory else None
    if script is None or not (script.parent / "node_modules").is_dir():
        if os.environ.get("OTA_REQUIRE_TUFJS"):
            pytest.fail("OTA_TUFJS_DIR does not point at a set-up tuf-js checker")
        pytest.skip("tuf-js checker not set up (make test does it when npm is available)")
    return script


def test_tufjs_verifies_every_target_through_rotations_and_delegations(
    published_home: Path, tmp_path: Path
) -> None:
    script = _checker()
    home = published_home
    ok(ota(home, "keys", "rotate", "root", "--keys", "3", "--threshold", "2"))
    ok(ota(home, "keys", "rotate", "timestamp"))
    ok(ota(home, "repo", "delegate", "acme-bcm", "--hardware-id", "bcm-s32k"))
    d = tmp_path / "m"
    d.mkdir()
    (d / "bcm.bin").write_bytes((EXAMPLES / "images/bcm-1.1.0.bin").read_bytes()[::-1])
    (d / "r.toml").write_text(
        'bundle = "body-control"\nversion = "1.2.0"\n[[images]]\n'
        'ecu = "bcm"\nfile = "bcm.bin"\nhardware_ids = ["bcm-s32k"]\n'
    )
    ok(ota(home, "release", "publish", "-q", d / "r.toml"))
    result = subprocess.run(
        ["bash", str(script), str(home / "repo")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(published_paths(home))} passed, 0 failed" in result.stdout
    assert "OK bcm-s32k/bcm-1.2.0.bin.from-bcm-1.1.0.bin.delta" in result.stdout
    assert "OK bcm-s32k/bcm-1.2.0.bin" in result.stdout


def test_tufjs_rejects_a_tampered_target(published_home: Path) -> None:
    script = _checker()
    victim = next((published_home / "repo/targets/tcu-9150").glob("*.telematics-2.0.0.bin"))
    victim.write_bytes(b"X" + victim.read_bytes()[1:])
    result = subprocess.run(
        ["bash", str(script), str(published_home / "repo")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "FAIL tcu-9150/telematics-2.0.0.bin" in result.stdout
