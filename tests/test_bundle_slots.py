"""Directory slots: application bundles (tar images) installed into A/B folders and switched by
an atomic symlink flip, against the real server."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

from click.testing import CliRunner, Result

from ota_client.cli import main as client_main
from tests.helpers import make_home, ok, ota, serve, write_manifest


def bundle(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def publish(home: Path, tmp: Path, version: str, files: dict[str, bytes]) -> None:
    manifest = write_manifest(
        tmp / f"app-{version}",
        f'bundle = "nav-app"\nversion = "{version}"\n[[images]]\necu = "nav"\n'
        'file = "nav.tar"\nhardware_ids = ["nav-app-x86"]\n',
        {"nav.tar": bundle(files)},
    )
    ok(ota(home, "release", "publish", "-q", manifest))


def test_bundles_install_switch_and_roll_back(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    publish(home, tmp_path, "1.0", {"app/version": b"1", "app/ok": b""})
    publish(home, tmp_path, "2.0", {"app/version": b"2", "app/ok": b"", "app/new-feature": b"x"})
    car = tmp_path / "car"
    (car / "a/app").mkdir(parents=True)
    (car / "a/app/version").write_bytes(b"1")
    (car / "b").mkdir()
    os.symlink(car / "a", car / "current")
    shutil.copy(home / "repo/metadata/1.root.json", car / "root.json")

    with serve(home) as url:
        (car / "client.toml").write_text(f"""
vehicle_id = "VIN0002"
server = "{url.removesuffix("/repo")}"
trust_root = "root.json"
mode = "track-latest"
data_dir = "data"
network = {{ allow_insecure_http = true }}
[[ecus]]
serial = "NAV-1"
hardware_id = "nav-app-x86"
slots = {{ type = "directory", a = "a", b = "b", current = "current" }}
boot = {{ backend = "symlink", restart = ["touch", "{car}/restarted"] }}
[[ecus.health]]
command = ["test", "-f", "{car}/current/app/ok"]
""")

        def client(*args: str) -> Result:
            return CliRunner().invoke(client_main, ["-c", str(car / "client.toml"), *args])

        result = client("update")
        assert result.exit_code == 0, result.output
        assert os.readlink(car / "current") == str(car / "b")
        assert (car / "current/app/version").read_bytes() == b"2"
        assert (car / "current/app/new-feature").exists() and (car / "restarted").exists()
        assert json.loads((car / "b/.ota-image.json").read_text())["version"] == "2.0"
        assert (car / "a/app/version").read_bytes() == b"1"  # the old slot stays for rollback

        # 3.0 lacks the file the health check wants: trial, then back to 2.0.
        publish(home, tmp_path, "3.0", {"app/version": b"3"})
        result = client("update")
        assert result.exit_code != 0 and "exit status 1" in result.output
        assert os.readlink(car / "current") == str(car / "b")
        assert (car / "current/app/version").read_bytes() == b"2"

        # A bundle that tries to write outside its slot is refused; nothing switches.
        publish(home, tmp_path, "4.0", {"../../escaped": b"x", "app/ok": b""})
        result = client("update")
        assert result.exit_code != 0 and "cannot install the bundle" in result.output
        assert not (tmp_path / "escaped").exists() and not (car / "escaped").exists()
        assert os.readlink(car / "current") == str(car / "b")
        status = json.loads(client("status", "--json").stdout)["ecus"][0]
        assert status["installed"]["version"] == "2.0" and status["booted_slot"] == "b"
