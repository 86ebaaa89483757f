"""Per-vehicle Director metadata, signed with the home's Director keys and verified by
python-tuf's own client (the chain a vehicle walks: root, timestamp, snapshot, targets)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Targets
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from ota_client.metadata.director_json import decode_targets
from ota_server.config import load_config
from ota_server.director.sign import SignedVehicle, sign_vehicle
from ota_server.repository.home import RepositoryHome, open_home
from ota_server.repository.signing import RoleSigning
from ota_server.repository.store import latest_root
from tests.test_uptane_match import world

BASE = "https://director.test/VIN-0001/metadata/"


class VehicleFetcher(FetcherInterface):
    """Serves one vehicle's Director metadata as ``ota serve`` will (current versions only)."""

    def __init__(self, home: RepositoryHome) -> None:
        self.root_dir = home.files.metadata
        self.signed: SignedVehicle | None = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.removeprefix(BASE)
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
