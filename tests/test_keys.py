"""Key ceremonies: encrypted keys, passphrases, thresholds, rotations, supplier delegation."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from tests.helpers import EXAMPLES, ok, one_line_error, ota, serve, tree

PASS = {"OTA_KEY_PASSPHRASE": "correct horse battery staple"}


@pytest.fixture
def secure_home(tmp_path: Path) -> Path:
    home = tmp_path / "secure"
    ok(ota(home, "keys", "init", "--root-keys", "3", "--root-threshold", "2", env=PASS))
    ok(ota(home, "repo", "init", env=PASS))
    return home


def test_keys_are_encrypted_at_rest(secure_home: Path) -> None:
    pems = list((secure_home / "keys").rglob("*.pem"))
    assert len(pems) == 12  # two repositories, each 3 root keys + 3 online roles
    for pem in pems:
        assert b"BEGIN ENCRYPTED PRIVATE KEY" in pem.read_bytes()
        assert pem.stat().st_mode & 0o077 == 0
    for folder in ("keys", "keys/image", "keys/director"):
        assert (secure_home / folder).stat().st_mode & 0o077 == 0
    root = Metadata.from_file(str(secure_home / "repo/metadata/1.root.json")).signed
    assert isinstance(root, Root)
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 3
    listing = json.loads(ok(ota(secure_home, "keys", "list", "--json")).stdout)
    assert listing["dev"] is False and len(listing["keys"]) == 12
    by_repository = {(k["repository"], k["role"]) for k in listing["keys"]}
    assert by_repository == {
        (repository, role)
        for repository in ("image", "director")
        for role in ("root", "targets", "snapshot", "timestamp")
    }
    image = {k["keyid"] for k in listing["keys"] if k["repository"] == "image"}
    assert not image & {k["keyid"] for k in listing["keys"] if k["repository"] == "director"}


def test_the_two_repositories_have_separate_roots(secure_home: Path) -> None:
    image = Metadata.from_file(str(secure_home / "repo/metadata/1.root.json"))
    director = Metadata.from_file(str(secure_home / "director/metadata/1.root.json"))
    assert isinstance(image.signed, Root) and isinstance(director.signed, Root)
    assert not set(image.signed.keys) & set(director.signed.keys)
    director.signed.verify_delegate("root", director.signed_bytes, director.signatures)
    assert director.signed.roles["root"].threshold == 2
    assert set(director.signed.roles) == {"root", "targets", "snapshot", "timestamp"}
    assert not (secure_home / "director/metadata/timestamp.json").exists()  # per vehicle


def test_dev_keys_say_so_loudly(tmp_path: Path) -> None:
    result = ok(ota(tmp_path / "h", "keys", "init", "--dev"))
    assert "NOT encrypted" in result.stderr
    assert b"BEGIN PRIVATE KEY" in next((tmp_path / "h/keys/image/root").glob("*.pem")).read_bytes()


def test_wrong_or_missing_passphrase(secure_home: Path) -> None:
    before = tree(secure_home)
    manifest = EXAMPLES / "body-control-1.0.0.toml"
    line = one_line_error(
        ota(secure_home, "release", "publish", manifest, env={"OTA_KEY_PASSPHRASE": "wrong"})
    )
    assert "wrong passphrase" in line
    line = one_line_error(ota(secure_home, "release", "publish", manifest))
    assert "OTA_KEY_PASSPHRASE" in line
    assert tree(secure_home) == before
    ok(ota(secure_home, "release", "publish", "-q", manifest, env=PASS))


def test_threshold_that_cannot_be_met(tmp_path: Path) -> None:
    line = one_line_error(
        ota(tmp_path / "h", "keys", "init", "--dev", "--root-keys", "2", "--root-threshold", "3")
    )
    assert "can never be met" in line
    assert not (tmp_path / "h" / "keys" / "image" / "keyring.json").exists()


def test_offline_root_keys_below_threshold(secure_home: Path, tmp_path: Path) -> None:
    pems = sorted((secure_home / "keys" / "image" / "root").glob("*.pem"))
    for pem in pems[:2]:  # two of three root keys are in the safe; the threshold is 2
        pem.rename(tmp_path / pem.name)
    before = tree(secure_home / "repo")
    line = one_line_error(ota(secure_home, "keys", "rotate", "timestamp", env=PASS))
    assert "cannot sign root" in line and "offline" in line
    assert tree(secure_home / "repo") == before
    assert len(list((secure_home / "keys" / "image" / "timestamp").glob("*.pem"))) == 1
    (tmp_path / pems[0].name).rename(pems[0])  # one comes back: 2 of 3 present
    ok(ota(secure_home, "keys", "rotate", "timestamp", env=PASS))


def _root_chain(home: Path) -> list[Root]:
    md = home / "repo" / "metadata"
    versions = sorted(int(p.name.split(".")[0]) for p in md.glob("*.root.json"))
    assert versions == list(range(1, len(versions) + 1))
    return [Metadata[Root].from_file(str(md / f"{v}.root.json")) for v in versions]  # type: ignore[misc]


def test_rotations_form_a_verifiable_root_chain(secure_home: Path) -> None:
    ok(ota(secure_home, "keys", "rotate", "root", "--keys", "2", "--threshold", "2", env=PASS))
    ok(ota(secure_home, "keys", "rotate", "targets", env=PASS))
    ok(ota(secure_home, "keys", "rotate", "snapshot", env=PASS))
    ok(ota(secure_home, "keys", "rotate", "root", "--keys", "1", "--threshold", "1", env=PASS))
    chain = _root_chain(secure_home)
    assert len(chain) == 5
    for old, new in itertools.pairwise(chain):
        # TUF: root N+1 is signed by a threshold of N's root keys and of its own.
        old.signed.verify_delegate("root", new.signed_bytes, new.signatures)  # type: ignore[attr-defined]
        new.signed.verify_delegate("root", new.signed_bytes, new.signatures)  # type: ignore[attr-defined]
    first, last = chain[0].signed, chain[-1].signed
    assert not set(first.roles["root"].keyids) & set(last.roles["root"].keyids)
    retired = list((secure_home / "keys" / "image" / "retired" / "root").glob("*.pem"))
    assert len(retired) == 5  # 3 original + 2 from the first rotation
    listing = json.loads(ok(ota(secure_home, "keys", "list", "--json")).stdout)
    assert sum(k["role"] == "root" and k["repository"] == "image" for k in listing["keys"]) == 1


def test_rotate_unknown_role(empty_home: Path) -> None:
    before = tree(empty_home)
    assert "no role 'nobody'" in one_line_error(ota(empty_home, "keys", "rotate", "nobody"))
    assert tree(empty_home) == before


def test_supplier_delegation_signs_its_hardware_ids(empty_home: Path) -> None:
    ok(ota(empty_home, "repo", "delegate", "acme-tcu", "--hardware-id", "tcu-9150"))
    ok(ota(empty_home, "release", "publish", "-q", EXAMPLES / "infotainment-2.0.0.toml"))
    md = empty_home / "repo" / "metadata"
    supplier = Metadata.from_file(str(sorted(md.glob("*.acme-tcu.json"))[-1])).signed
    assert list(supplier.targets) == ["tcu-9150/telematics-2.0.0.bin"]
    # Rotating the supplier key re-signs its role with the new key.
    ok(ota(empty_home, "keys", "rotate", "acme-tcu"))
    status = json.loads(ok(ota(empty_home, "repo", "status", "--json")).stdout)
    assert {s["role"] for s in status} == {"root", "targets", "snapshot", "timestamp", "acme-tcu"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["targets", "--hardware-id", "x"], "reserved"),
        (["Acme", "--hardware-id", "x"], "reserved or not lower case"),
        (["acme"], "at least one path pattern"),
        (["acme", "--path", "../x/*"], "path pattern"),
        (["acme", "--path", "x/{a,b}"], "path pattern"),
        (["acme", "--hardware-id", "x", "--keys", "1", "--threshold", "2"], "can never be met"),
    ],
)
def test_bad_delegations(empty_home: Path, args: list[str], message: str) -> None:
    before = tree(empty_home)
    assert message in one_line_error(ota(empty_home, "repo", "delegate", *args))
    assert tree(empty_home) == before


def test_a_single_repository_home_moves_its_keys_on_first_use(published_home: Path) -> None:
    """Homes from before the Director kept keys/<role>/: the next command moves them to
    keys/image/, says so once, and the Image repository works exactly as before."""
    keys = published_home / "keys"
    for entry in (keys / "image").iterdir():
        entry.rename(keys / entry.name)
    (keys / "image").rmdir()
    shutil.rmtree(keys / "director")
    shutil.rmtree(published_home / "director")
    old = tree(keys)
    result = ok(ota(published_home, "repo", "refresh", "--force"))
    assert "moved the Image repository's keys" in result.stderr
    assert tree(keys / "image") == old
    assert "moved" not in ok(ota(published_home, "repo", "status")).stderr
    ok(ota(published_home, "keys", "init", "--dev"))  # the Director's keys, the Image's kept
    assert tree(keys / "image") == old
    assert (keys / "director" / "keyring.json").is_file()
    repo = tree(published_home / "repo")
    result = ok(ota(published_home, "repo", "init"))  # the Director's root; the Image kept
    assert "director repository created" in result.stdout and "image" not in result.stdout
    assert tree(published_home / "repo") == repo
    assert [p.name for p in (published_home / "director/metadata").iterdir()] == ["1.root.json"]


def test_a_key_move_cut_short_is_finished_next_time(published_home: Path) -> None:
    keys = published_home / "keys"
    shutil.rmtree(keys / "director")
    old = tree(keys / "image")
    # The power failed between the two renames: keys/ is gone, the old folder waits aside.
    (keys / "image").rename(published_home / "keys.moving-to-image")
    keys.rmdir()
    ok(ota(published_home, "repo", "refresh", "--force"))
    assert tree(keys / "image") == old and not (published_home / "keys.moving-to-image").exists()


def test_serve_without_the_directors_online_keys_says_so(secure_home: Path) -> None:
    """Encrypted keys and no passphrase: the server still serves the Image repository, says
    once that the Director cannot sign, and answers its routes 503 (never a 500)."""
    import urllib.error
    import urllib.request

    with serve(secure_home, env={"OTA_KEY_PASSPHRASE": ""}) as url:
        base = url.removesuffix("/repo")
        with urllib.request.urlopen(f"{url}/metadata/timestamp.json", timeout=10) as r:
            assert r.status == 200
        try:
            urllib.request.urlopen(f"{base}/director/VIN1/metadata/timestamp.json", timeout=10)
        except urllib.error.HTTPError as e:
            assert e.code == 503
        else:
            raise AssertionError("the Director answered without its keys")
    assert "the Director's online keys cannot be used" in (secure_home / "serve.log").read_text()
