"""Per-vehicle Director metadata, signed with the home's Director keys and verified by
python-tuf's own client (the chain a vehicle walks: root, timestamp, snapshot, targets)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from ota_client.metadata.director_json import decode_targets, encode_targets
from ota_server.config import load_config
from ota_server.director.sign import SignedVehicle, sign_vehicle
from ota_server.keys.store import KeyStore
from ota_server.repository.home import RepositoryHome, open_home
from ota_server.repository.signing import RoleSigning
from ota_server.repository.store import latest_root
from tests.helpers import ok, one_line_error, ota
from tests.test_uptane_match import world

BASE = "https://director.test/VIN-0001/metadata/"


class VehicleFetcher(FetcherInterface):
    """Serves one vehicle's Director metadata as ``ota serve`` will (current versions only)."""

    def __init__(self, home: RepositoryHome) -> None:
        self.root_dir = home.files.metadata
        self.signed: SignedVehicle | None = None
        self.extra: dict[str, bytes] = {}  # files served instead of (or beside) the real ones

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.removeprefix(BASE)
        if name in self.extra:
            return iter([self.extra[name]])
        if name.endswith(".root.json") and (self.root_dir / name).is_file():
            return iter([(self.root_dir / name).read_bytes()])
        assert self.signed is not None
        version, _, role = name.partition(".")
        if name == "timestamp.json":
            return iter([self.signed.timestamp])
        if role in ("snapshot.json", "targets.json") and version == str(self.signed.version):
            return iter([self.signed.role(role.removesuffix(".json"))])
        raise exceptions.DownloadHTTPError(f"{url} not found", 404)


@pytest.fixture
def director(empty_home: Path) -> RepositoryHome:
    return open_home(load_config(empty_home), "director", lambda _new: b"")


def _client(home: RepositoryHome, fetcher: VehicleFetcher, cache: Path) -> Updater:
    cache.mkdir(exist_ok=True)
    return Updater(
        str(cache),
        BASE,
        fetcher=fetcher,
        bootstrap=(home.files.metadata / "1.root.json").read_bytes(),
    )


def _refreshed_targets(home: RepositoryHome, fetcher: VehicleFetcher, cache: Path) -> Targets:
    _client(home, fetcher, cache).refresh()
    targets = Targets.from_dict(json.loads((cache / "targets.json").read_bytes())["signed"])
    return targets


def test_a_vehicle_verifies_its_director_metadata(director: RepositoryHome, tmp_path: Path) -> None:
    root, signing, policy = latest_root(director.files), RoleSigning(director.keys), director.policy
    now = datetime.now(UTC)
    w = world()
    fetcher = VehicleFetcher(director)
    fetcher.signed = first = sign_vehicle(w.assignment, None, root, signing, policy, now)
    assert decode_targets(_refreshed_targets(director, fetcher, tmp_path / "c")) == w.assignment
    timestamp = json.loads(first.timestamp)["signed"]["meta"]["snapshot.json"]
    assert set(timestamp) == {"version", "length", "hashes"}  # Uptane: the snapshot's hashes

    # Unchanged and not due: the very same bytes (no new signature, same ETag).
    assert sign_vehicle(w.assignment, first, root, signing, policy, now) is first
    # A new assignment, or the refresh window, gives new versions the vehicle accepts.
    fewer = type(w.assignment)(w.assignment.vehicle, w.assignment.ecus[:1], "car@2.0")
    fetcher.signed = second = sign_vehicle(fewer, first, root, signing, policy, now)
    assert second.version == 2
    assert decode_targets(_refreshed_targets(director, fetcher, tmp_path / "c")) == fewer
    later = now + timedelta(hours=13)
    fetcher.signed = third = sign_vehicle(fewer, second, root, signing, policy, later)
    assert third.version == 3 and third.content == second.content
    _client(director, fetcher, tmp_path / "c").refresh()


def test_old_metadata_replayed_to_a_vehicle_is_refused(
    director: RepositoryHome, tmp_path: Path
) -> None:
    root, signing, policy = latest_root(director.files), RoleSigning(director.keys), director.policy
    now = datetime.now(UTC)
    w = world()
    fetcher = VehicleFetcher(director)
    fetcher.signed = first = sign_vehicle(w.assignment, None, root, signing, policy, now)
    fetcher.signed = sign_vehicle(type(w.assignment)("VIN-0001"), first, root, signing, policy, now)
    _client(director, fetcher, tmp_path / "c").refresh()
    fetcher.signed = first  # a rollback to the earlier assignment
    with pytest.raises(exceptions.BadVersionNumberError):
        _client(director, fetcher, tmp_path / "c").refresh()


def test_metadata_signed_by_the_image_keys_is_refused(
    director: RepositoryHome, empty_home: Path, tmp_path: Path
) -> None:
    image = open_home(load_config(empty_home), "image", lambda _new: b"")
    image_root = latest_root(image.files)
    fetcher = VehicleFetcher(director)
    # The Image repository's online keys sign a "Director" timestamp: not the Director's keys.
    fetcher.signed = sign_vehicle(
        world().assignment, None, image_root, RoleSigning(image.keys), director.policy,
        datetime.now(UTC),
    )  # fmt: skip
    with pytest.raises(exceptions.UnsignedMetadataError):
        _client(director, fetcher, tmp_path / "c").refresh()


def _build(
    director: RepositoryHome,
    *,
    version: int = 1,
    targets_version: int | None = None,
    expired: str | None = None,
    signed_by: dict[str, tuple[str, RoleSigning]] | None = None,
    bad_snapshot_hash: bool = False,
) -> SignedVehicle:
    """Director metadata for VIN-0001 built by hand, with one thing wrong at a time.

    ``signed_by`` maps a role to (the role whose keys sign it, the key store's signing).
    """
    root = latest_root(director.files)
    own = RoleSigning(director.keys)
    now = datetime.now(UTC).replace(microsecond=0)

    def expires(role: str) -> datetime:
        return now - timedelta(hours=1) if role == expired else now + timedelta(days=1)

    def signed(role: str, payload: Targets | Snapshot | Timestamp) -> bytes:
        md: Metadata[Any] = Metadata(payload)
        as_role, signing = (signed_by or {}).get(role, (role, own))
        md.signatures.clear()
        for keyid in root.roles[as_role].keyids if as_role in root.roles else []:
            signer = signing.keys.signer(as_role, keyid)
            if signer is not None:
                md.sign(signer, append=True)
        if not md.signatures:  # another repository's keys: they are not in this root
            for keyid, _role in _all_keys(signing.keys, as_role):
                signer = signing.keys.signer(as_role, keyid)
                assert signer is not None
                md.sign(signer, append=True)
        return md.to_bytes(JSONSerializer(compact=True))

    t_version = targets_version or version
    targets = Targets(version=t_version, expires=expires("targets"))
    encode_targets(world().assignment, targets)
    targets_bytes = signed("targets", targets)
    snapshot = Snapshot(
        version=version, expires=expires("snapshot"), meta={"targets.json": MetaFile(version)}
    )
    snapshot_bytes = signed("snapshot", snapshot)
    meta = MetaFile.from_data(version, snapshot_bytes, ["sha256"])
    if bad_snapshot_hash:
        meta = MetaFile(version, len(snapshot_bytes), {"sha256": "0" * 64})
    timestamp = Timestamp(version=version, expires=expires("timestamp"), snapshot_meta=meta)
    return SignedVehicle(
        version, targets_bytes, snapshot_bytes, signed("timestamp", timestamp), now, "", 1
    )


def _all_keys(keys: KeyStore, role: str) -> list[tuple[str, str]]:
    return [(keyid, role) for keyid in keys.roles()[role].keyids]


@pytest.mark.parametrize(
    ("row", "damage", "error"),
    [
        ("U-163 expired targets", dict(expired="targets"), exceptions.ExpiredMetadataError),
        ("U-159 expired snapshot", dict(expired="snapshot"), exceptions.ExpiredMetadataError),
        ("U-152 expired timestamp", dict(expired="timestamp"), exceptions.ExpiredMetadataError),
        ("U-161 targets version not the snapshot's", dict(targets_version=7),
         exceptions.BadVersionNumberError),
        ("U-155 snapshot hash not the timestamp's", dict(bad_snapshot_hash=True),
         exceptions.RepositoryError),
        ("U-157 snapshot signed with the timestamp key", dict(signed_by={"snapshot": "timestamp"}),
         exceptions.UnsignedMetadataError),
        ("U-162 targets signed with the Image's targets key", dict(signed_by={"targets": "image"}),
         exceptions.UnsignedMetadataError),
    ],
)  # fmt: skip
def test_damaged_director_metadata_is_refused(
    director: RepositoryHome,
    empty_home: Path,
    tmp_path: Path,
    row: str,
    damage: dict[str, Any],
    error: type[Exception],
) -> None:
    if "signed_by" in damage:
        role, who = next(iter(damage["signed_by"].items()))
        if who == "image":
            image = open_home(load_config(empty_home), "image", lambda _new: b"")
            damage = dict(signed_by={role: ("targets", RoleSigning(image.keys))})
        else:
            damage = dict(signed_by={role: (who, RoleSigning(director.keys))})
    fetcher = VehicleFetcher(director)
    fetcher.signed = _build(director, **damage)
    with pytest.raises(error):
        _client(director, fetcher, tmp_path / "c").refresh()
    fetcher.signed = _build(director)  # the same chain, undamaged, is accepted
    _client(director, fetcher, tmp_path / "fresh").refresh()


def test_older_targets_behind_a_newer_snapshot_are_refused(
    director: RepositoryHome, tmp_path: Path
) -> None:
    """U-164: a targets version that goes backwards, even when snapshot and timestamp are new."""
    fetcher = VehicleFetcher(director)
    fetcher.signed = _build(director, version=2)
    _client(director, fetcher, tmp_path / "c").refresh()
    fetcher.signed = _build(director, version=3, targets_version=1)
    with pytest.raises(exceptions.BadVersionNumberError):
        _client(director, fetcher, tmp_path / "c").refresh()


@pytest.mark.parametrize("role", ["timestamp", "targets", "root"])
def test_a_vehicle_follows_a_rotation_of_the_directors_keys(
    empty_home: Path, tmp_path: Path, role: str
) -> None:
    """``ota keys rotate ROLE --repository director`` writes root 2, signed by the old and the
    new root keys (U-144, U-145); the vehicle walks the chain and accepts metadata signed with
    the new keys; the stored metadata of version 1 is signed again because the root changed."""
    director = open_home(load_config(empty_home), "director", lambda _new: b"")
    fetcher = VehicleFetcher(director)
    now = datetime.now(UTC)
    root = latest_root(director.files)
    old = sign_vehicle(
        world().assignment, None, root, RoleSigning(director.keys), director.policy, now
    )
    fetcher.signed = old
    _client(director, fetcher, tmp_path / "c").refresh()
    before = set(root.roles[role].keyids)
    ok(ota(empty_home, "keys", "rotate", role, "--repository", "director"))
    director = open_home(load_config(empty_home), "director", lambda _new: b"")
    root = latest_root(director.files)
    assert root.version == 2 and not before & set(root.roles[role].keyids)
    new = sign_vehicle(
        world().assignment, old, root, RoleSigning(director.keys), director.policy, now
    )
    assert new.version == old.version + 1  # same content, new root: signed again
    fetcher.signed = new
    _client(director, fetcher, tmp_path / "c").refresh()
    assert json.loads((tmp_path / "c/root.json").read_bytes())["signed"]["version"] == 2
    line = one_line_error(ota(empty_home, "keys", "rotate", "acme", "--repository", "director"))
    assert "no role" in line


def _next_root(
    director: RepositoryHome, *, sign_old: bool, sign_new: bool, version: int = 2,
    expired: bool = False,
) -> bytes:  # fmt: skip
    """Root 2 of the Director with a fresh root key, signed by the old key, the new, or both."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from securesystemslib.signer import CryptoSigner, SSlibKey

    old_root = latest_root(director.files)
    old_keyid = old_root.roles["root"].keyids[0]
    old_signer = director.keys.signer("root", old_keyid)
    assert old_signer is not None
    private = Ed25519PrivateKey.generate()
    new_signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
    root = Root.from_dict(old_root.to_dict())
    root.revoke_key(old_keyid, "root")
    root.add_key(new_signer.public_key, "root")
    root.version = version
    now = datetime.now(UTC).replace(microsecond=0)
    root.expires = now - timedelta(days=1) if expired else now + timedelta(days=365)
    md: Metadata[Root] = Metadata(root)
    if sign_old:
        md.sign(old_signer, append=True)
    if sign_new:
        md.sign(new_signer, append=True)
    return md.to_bytes(JSONSerializer(compact=True))


@pytest.mark.parametrize(
    ("row", "old", "new", "version", "expired", "error"),
    [
        ("U-144 signed by the new root keys only", False, True, 2, False,
         exceptions.UnsignedMetadataError),
        ("U-145 signed by the old root keys only", True, False, 2, False,
         exceptions.UnsignedMetadataError),
        ("U-146 a version other than N+1", True, True, 3, False, exceptions.BadVersionNumberError),
        ("U-147 the final root expired", True, True, 2, True, exceptions.ExpiredMetadataError),
    ],
)  # fmt: skip
def test_bad_director_root_chains_are_refused(
    director: RepositoryHome, tmp_path: Path, row: str, old: bool, new: bool, version: int,
    expired: bool, error: type[Exception],
) -> None:  # fmt: skip
    fetcher = VehicleFetcher(director)
    fetcher.signed = sign_vehicle(
        world().assignment, None, latest_root(director.files), RoleSigning(director.keys),
        director.policy, datetime.now(UTC),
    )  # fmt: skip
    fetcher.extra = {"2.root.json": _next_root(
        director, sign_old=old, sign_new=new, version=version, expired=expired)}  # fmt: skip
    with pytest.raises(error):
        _client(director, fetcher, tmp_path / "c").refresh()
    fetcher.extra = {"2.root.json": _next_root(director, sign_old=True, sign_new=True)}
    _client(director, fetcher, tmp_path / "ok").refresh()  # the same chain, rotated properly
    assert json.loads((tmp_path / "ok/root.json").read_bytes())["signed"]["version"] == 2
