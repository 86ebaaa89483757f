"""Publishing releases through the CLI: the good path and every kind of bad input."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, TargetFile

from tests.helpers import EXAMPLES, make_home, ok, one_line_error, ota, tree, write_manifest

IMAGE = b"\x7fELF" + bytes(range(256)) * 64


def manifest_text(
    version: str = "9.0.0",
    *,
    bundle: str = "body-control",
    ecu: str = "bcm",
    hwid: str = "bcm-s32k",
    file: str = "img.bin",
    extra: str = "",
) -> str:
    return (
        f'bundle = "{bundle}"\nversion = "{version}"\n{extra}\n'
        f'[[images]]\necu = "{ecu}"\nfile = "{file}"\nhardware_ids = ["{hwid}"]\n'
    )


def test_publish_writes_a_standard_consistent_snapshot_repository(published_home: Path) -> None:
    md = published_home / "repo" / "metadata"
    names = sorted(p.name for p in md.iterdir())
    assert "1.root.json" in names and "timestamp.json" in names
    assert "5.snapshot.json" in names and "5.targets.json" in names  # init + 4 releases
    targets = Metadata.from_file(str(md / "5.targets.json")).signed
    assert len(targets.targets) == 9
    kinds = Counter(info.custom["kind"] for info in targets.targets.values())
    assert kinds == {"full": 6, "delta": 3}
    for path, info in targets.targets.items():
        assert stored(published_home, path, info).stat().st_size == info.length
    hu = targets.targets["hu-imx8/head-unit-2.1.0.img"].custom
    assert hu == {
        "hardware_ids": ["hu-imx8", "hu-imx8-plus"],
        "release_counter": 2,
        "version": "2.1.0",
        "bundle": "infotainment",
        "ecu": "head-unit",
        "kind": "full",
    }
    assert not (published_home / "state" / "journal.json").exists()
    assert not list((published_home / "state").glob("txn/*"))
    # Uptane U-35: the timestamp names the snapshot by version, length and hashes.
    timestamp = Metadata.from_file(str(md / "timestamp.json")).signed
    snapshot = (md / "5.snapshot.json").read_bytes()
    meta = timestamp.snapshot_meta  # type: ignore[attr-defined]
    assert meta.version == 5 and meta.length == len(snapshot)
    assert meta.hashes == {"sha256": hashlib.sha256(snapshot).hexdigest()}


def stored(home: Path, path: str, info: TargetFile) -> Path:
    where = Path(path)
    return home / "repo" / "targets" / where.parent / f"{info.hashes['sha256']}.{where.name}"


def test_published_deltas_rebuild_their_images(published_home: Path, tmp_path: Path) -> None:
    md = published_home / "repo" / "metadata"
    targets = Metadata.from_file(str(md / "5.targets.json")).signed.targets
    deltas = {p: t for p, t in targets.items() if t.custom["kind"] == "delta"}
    assert set(deltas) == {
        "bcm-s32k/bcm-1.1.0.bin.from-bcm-1.0.0.bin.delta",
        "hu-imx8/head-unit-2.1.0.img.from-head-unit-2.0.0.img.delta",
        "tcu-9150/telematics-2.1.0.bin.from-telematics-2.0.0.bin.delta",
    }
    for path, info in deltas.items():
        custom = info.custom
        image = targets[custom["image"]]
        (source_path,) = [
            p
            for p, t in targets.items()
            if t.custom["kind"] == "full" and t.hashes == custom["source"]["hashes"]
        ]
        source = targets[source_path]
        assert custom["source"]["length"] == source.length
        for field in ("hardware_ids", "release_counter", "version", "bundle", "ecu"):
            assert custom[field] == image.custom[field], field
        assert info.length < 0.9 * image.length
        out = tmp_path / "rebuilt"
        ok(
            ota(
                published_home,
                "payload",
                "apply",
                stored(published_home, path, info),
                out,
                "--source",
                stored(published_home, source_path, source),
            )
        )
        assert out.read_bytes() == stored(published_home, custom["image"], image).read_bytes()


def test_deltas_can_be_turned_off_and_are_skipped_when_too_big(tmp_path: Path) -> None:
    home = tmp_path / "h"
    ok(ota(home, "keys", "init", "--dev"))
    ok(ota(home, "repo", "init"))
    (home / "config.toml").write_text("[deltas]\nsources = 0\n")
    ok(ota(home, "release", "publish", "-q", EXAMPLES / "body-control-1.0.0.toml"))
    ok(ota(home, "release", "publish", "-q", EXAMPLES / "body-control-1.1.0.toml"))
    (home / "config.toml").write_text("[deltas]\nsources = 2\nmax_ratio = 0.01\n")
    d = tmp_path / "m"
    manifest = write_manifest(
        d,
        manifest_text("2.0.0", file="img.bin"),
        {"img.bin": (EXAMPLES / "images/bcm-1.1.0.bin").read_bytes()[::-1]},
    )
    out = json.loads(ok(ota(home, "release", "publish", "--json", manifest)).stdout)
    assert out["deltas"] == []
    assert {s["path"] for s in out["skipped_deltas"]} == {
        "bcm-s32k/bcm-2.0.0.bin.from-bcm-1.1.0.bin.delta",
        "bcm-s32k/bcm-2.0.0.bin.from-bcm-1.0.0.bin.delta",
    }
    assert all(
        e["custom"]["kind"] == "full"
        for r in json.loads(ok(ota(home, "release", "list", "--json")).stdout)
        for e in r["images"]
    )


def test_release_list_json(published_home: Path) -> None:
    releases = json.loads(ok(ota(published_home, "release", "list", "--json")).stdout)
    assert [(r["bundle"], r["version"]) for r in releases] == [
        ("body-control", "1.0.0"),
        ("body-control", "1.1.0"),
        ("infotainment", "2.0.0"),
        ("infotainment", "2.1.0"),
    ]
    assert [i["custom"]["ecu"] for i in releases[3]["images"]] == ["head-unit", "telematics"]
    only = json.loads(
        ok(ota(published_home, "release", "list", "--bundle", "body-control", "--json")).stdout
    )
    assert len(only) == 2


def test_publish_json_output(empty_home: Path) -> None:
    out = ok(ota(empty_home, "release", "publish", "--json", EXAMPLES / "body-control-1.0.0.toml"))
    data = json.loads(out.stdout)
    assert data["targets"][0]["path"] == "bcm-s32k/bcm-1.0.0.bin"
    assert data["targets"][0]["custom"]["release_counter"] == 1


def _bad_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name → (manifest, expected message fragment); each against the published examples."""
    d = tmp / "bad"
    img = {"img.bin": IMAGE}
    cases = {
        "missing image": (write_manifest(d / "a", manifest_text(), {}), "cannot read"),
        "image is a directory": (
            write_manifest(d / "b", manifest_text(file="sub"), {}),
            "not a regular file",
        ),
        "empty image": (write_manifest(d / "c", manifest_text(), {"img.bin": b""}), "is empty"),
        "malformed toml": (write_manifest(d / "d", "bundle = [", img), "malformed TOML"),
        "unknown field": (
            write_manifest(d / "e", manifest_text(extra="colour = 1"), img),
            "unknown setting colour",
        ),
        "empty bundle": (write_manifest(d / "f", 'bundle = "b"\nversion = "1"\n', img), "empty"),
        "version backwards": (write_manifest(d / "g", manifest_text("1.0.5"), img), "not newer"),
        "version repeated": (write_manifest(d / "h", manifest_text("1.1.0"), img), "not newer"),
        "counter backwards": (
            write_manifest(
                d / "i",
                manifest_text().replace("hardware_ids", "release_counter = 1\nhardware_ids"),
                img,
            ),
            "goes backwards",
        ),
        "duplicate target": (
            write_manifest(d / "j", manifest_text("1.1.0", bundle="other"), img),
            "already exists",
        ),
        "traversal in ecu": (
            write_manifest(d / "k", manifest_text(ecu="../../etc"), img),
            "not a valid ECU role",
        ),
        "absolute hardware id": (
            write_manifest(d / "l", manifest_text(hwid="/etc"), img),
            "not a valid hardware id",
        ),
        "unicode look-alike": (
            write_manifest(d / "m", manifest_text(hwid="bсm-s32k"), img),
            "not a valid hardware id",
        ),
        "not utf-8": (write_manifest(d / "n", "", img), "not UTF-8"),
    }
    (d / "b" / "sub").mkdir()
    (d / "n" / "release.toml").write_bytes(b'bundle = "\xff"\n')
    cases["missing manifest"] = (d / "nowhere.toml", "cannot read manifest")
    return cases


def test_bad_input_fails_cleanly_and_changes_nothing(published_home: Path, tmp_path: Path) -> None:
    before = tree(published_home / "repo")
    for name, (manifest, message) in _bad_cases(tmp_path).items():
        line = one_line_error(ota(published_home, "release", "publish", "-q", manifest))
        assert message in line, (name, line)
        assert tree(published_home / "repo") == before, name
    assert not (published_home / "state" / "journal.json").exists()


def test_missing_signing_key_fails_before_any_copy(published_home: Path, tmp_path: Path) -> None:
    for pem in (published_home / "keys" / "image" / "targets").glob("*.pem"):
        pem.rename(tmp_path / pem.name)  # the targets key went offline
    before = tree(published_home / "repo")
    manifest = write_manifest(tmp_path / "m", manifest_text(), {"img.bin": IMAGE})
    line = one_line_error(ota(published_home, "release", "publish", "-q", manifest))
    assert "cannot sign targets" in line
    assert tree(published_home / "repo") == before
    assert not list((published_home / "state").glob("txn/*"))


def test_uninitialised_home(tmp_path: Path) -> None:
    line = one_line_error(
        ota(tmp_path / "nothing", "release", "publish", EXAMPLES / "body-control-1.0.0.toml")
    )
    assert "ota keys init" in line or "ota repo init" in line
    assert "ota repo init" in one_line_error(ota(tmp_path / "nothing", "release", "list"))


def test_init_twice_is_refused(empty_home: Path) -> None:
    before = tree(empty_home)
    assert "already holds keys" in one_line_error(ota(empty_home, "keys", "init", "--dev"))
    assert "already holds both repositories" in one_line_error(ota(empty_home, "repo", "init"))
    assert tree(empty_home) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_image(published_home: Path, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m", manifest_text(), {"img.bin": IMAGE})
    (tmp_path / "m" / "img.bin").chmod(0)
    assert "cannot read" in one_line_error(ota(published_home, "release", "publish", manifest))


def test_many_images_and_relative_paths(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    images = "".join(
        f'[[images]]\necu = "ecu{i}"\nfile = "imgs/{i}.bin"\nhardware_ids = ["hw{i % 7}"]\n'
        for i in range(40)
    )
    manifest = write_manifest(tmp_path / "big", f'bundle = "fleet"\nversion = "1"\n{images}', {})
    (tmp_path / "big" / "imgs").mkdir()
    for i in range(40):
        (tmp_path / "big" / "imgs" / f"{i}.bin").write_bytes(IMAGE + bytes([i]))
    ok(ota(home, "release", "publish", "-q", manifest))
    releases = json.loads(ok(ota(home, "release", "list", "--json")).stdout)
    assert len(releases[0]["images"]) == 40
