"""python-tuf's ngclient.Updater against the real ``ota serve`` on loopback.

It must refresh and download every published target, follow root rotations, and reject a
tampered target, an expired timestamp, a replayed timestamp and a rolled-back snapshot.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api import exceptions
from tuf.api.metadata import MetaFile
from tuf.ngclient import Updater

from ota_client.config import NetworkConfig
from ota_client.fetch.transport import HttpTransport
from ota_client.fetch.tuf_fetcher import TransportFetcher
from ota_server.keys.store import KeyStore
from ota_server.repository.lifecycle import refresh_repository
from ota_server.repository.store import FileRepository, metadata_bytes
from tests.helpers import EXAMPLES, image_home, make_tls, ok, ota, serve
from tests.local_fetcher import published_paths


def updater(
    home: Path,
    url: str,
    work: Path,
    *,
    fetcher: TransportFetcher | None = None,
    fresh: bool = False,
) -> Updater:
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    (work / "md").mkdir(parents=True, exist_ok=True)
    (work / "t").mkdir(parents=True, exist_ok=True)
    return Updater(
        str(work / "md"),
        f"{url}/metadata/",
        str(work / "t"),
        f"{url}/targets/",
        fetcher=fetcher,
        bootstrap=(home / "repo/metadata/1.root.json").read_bytes(),
    )


def test_refresh_and_download_every_target(published_home: Path, tmp_path: Path) -> None:
    paths = published_paths(published_home)
    assert len(paths) == 9  # 6 images, 3 deltas
    with serve(published_home) as url:
        client = updater(published_home, url, tmp_path / "c")
        client.refresh()
        for path in paths:
            info = client.get_targetinfo(path)
            assert info is not None
            local = Path(client.download_target(info))
            if info.custom["kind"] == "full":
                image = EXAMPLES / "images" / Path(path).name
                assert local.read_bytes() == image.read_bytes()


def test_over_tls_with_the_vehicle_fetcher(published_home: Path, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    with serve(published_home, "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)) as url:
        assert url.startswith("https://")
        vehicle = TransportFetcher(HttpTransport(NetworkConfig(ca_file=tls.cert)))
        client = updater(published_home, url, tmp_path / "c", fetcher=vehicle)
        info = client.get_targetinfo("bcm-s32k/bcm-1.1.0.bin")
        assert info is not None and Path(client.download_target(info)).stat().st_size == info.length
        # A client that does not trust this server's certificate gets nowhere.
        system_cas = TransportFetcher(HttpTransport(NetworkConfig()))
        stranger = updater(published_home, url, tmp_path / "s", fetcher=system_cas, fresh=True)
        with pytest.raises(exceptions.DownloadError):
            stranger.refresh()


def test_follows_root_rotations(published_home: Path, tmp_path: Path) -> None:
    home = published_home
    with serve(home) as url:
        old_client = updater(home, url, tmp_path / "old")
        old_client.refresh()  # trusts root v1
        ok(ota(home, "keys", "rotate", "root", "--keys", "3", "--threshold", "2"))
        ok(ota(home, "keys", "rotate", "timestamp"))
        ok(ota(home, "keys", "rotate", "snapshot"))
        ok(ota(home, "keys", "rotate", "targets"))
        ok(ota(home, "keys", "rotate", "root", "--keys", "1", "--threshold", "1"))
        ok(ota(home, "release", "publish", "-q", _next_release(tmp_path)))
        client = updater(home, url, tmp_path / "old")  # same cache, new process
        client.refresh()
        assert client._trusted_set.root.version == 6
        info = client.get_targetinfo("bcm-s32k/bcm-9.0.0.bin")
        assert info is not None
        client.download_target(info)


def _next_release(tmp_path: Path) -> Path:
    d = tmp_path / "next"
    d.mkdir()
    (d / "bcm.bin").write_bytes(b"new firmware" * 1000)
    manifest = d / "release.toml"
    manifest.write_text(
        'bundle = "body-control"\nversion = "9.0.0"\n[[images]]\necu = "bcm"\n'
        'file = "bcm.bin"\nhardware_ids = ["bcm-s32k"]\n'
    )
    return manifest


def test_rejects_a_tampered_target(published_home: Path, tmp_path: Path) -> None:
    victim = next((published_home / "repo/targets/bcm-s32k").glob("*.bcm-1.1.0.bin"))
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF
    victim.write_bytes(bytes(data))
    with serve(published_home, "--no-refresh") as url:  # no self-repair by the server
        client = updater(published_home, url, tmp_path / "c")
        info = client.get_targetinfo("bcm-s32k/bcm-1.1.0.bin")
        assert info is not None
        with pytest.raises(exceptions.LengthOrHashMismatchError):
            client.download_target(info)
        victim.write_bytes(bytes(data) + b"endless data")
        with pytest.raises(exceptions.DownloadError):  # longer than signed: cut off
            client.download_target(info)
    assert not list((tmp_path / "c" / "t").iterdir())


def test_rejects_an_expired_timestamp(published_home: Path, tmp_path: Path) -> None:
    # Re-sign everything as if it were two days ago: the timestamp (1 day) has expired.
    past = datetime.now(UTC) - timedelta(days=2)
    refresh_repository(image_home(published_home), force=True, now=past)
    with serve(published_home, "--no-refresh") as url:
        client = updater(published_home, url, tmp_path / "c")
        with pytest.raises(exceptions.ExpiredMetadataError, match="timestamp"):
            client.refresh()


def _signed_timestamp(home: Path, snapshot_version: int) -> bytes:
    """A correctly signed timestamp (next version) that points at an older snapshot."""
    repo = FileRepository.load(image_home(home), datetime.now(UTC))
    old = (home / f"repo/metadata/{snapshot_version}.snapshot.json").read_bytes()
    with repo.edit_timestamp() as ts:
        ts.snapshot_meta = MetaFile.from_data(snapshot_version, old, ["sha256"])
    return metadata_bytes(repo.open("timestamp"))


def test_rejects_a_rolled_back_snapshot(published_home: Path, tmp_path: Path) -> None:
    md = published_home / "repo/metadata"
    with serve(published_home, "--no-refresh") as url:  # no self-repair by the server
        client = updater(published_home, url, tmp_path / "c")
        client.refresh()  # now trusts snapshot 5
        (md / "timestamp.json").write_bytes(_signed_timestamp(published_home, 3))
        client = updater(published_home, url, tmp_path / "c")
        with pytest.raises(exceptions.BadVersionNumberError, match="snapshot"):
            client.refresh()


def test_rejects_a_replayed_timestamp(published_home: Path, tmp_path: Path) -> None:
    md = published_home / "repo/metadata"
    old_timestamp = (md / "timestamp.json").read_bytes()
    ok(ota(published_home, "repo", "refresh", "--force"))
    with serve(published_home, "--no-refresh") as url:  # no self-repair by the server
        client = updater(published_home, url, tmp_path / "c")
        client.refresh()
        (md / "timestamp.json").write_bytes(old_timestamp)
        client = updater(published_home, url, tmp_path / "c")
        with pytest.raises(exceptions.BadVersionNumberError):
            client.refresh()


def test_rejects_a_timestamp_signed_by_a_retired_key(published_home: Path, tmp_path: Path) -> None:
    before = image_home(published_home)
    old_timestamp_key = before.keys.roles()["timestamp"].keyids[0]
    ok(ota(published_home, "keys", "rotate", "timestamp"))
    with serve(published_home, "--no-refresh") as url:  # no self-repair by the server
        # Sign a fresh timestamp with the key that was just retired.
        repo = FileRepository.load(before, datetime.now(UTC))
        md = repo.open("timestamp")
        md.signed.version += 1
        md.signatures.clear()
        signer = KeyStore(published_home / "keys/image/retired", lambda _n: b"").signer(
            "timestamp", old_timestamp_key
        )
        assert signer is not None
        md.sign(signer)
        (published_home / "repo/metadata/timestamp.json").write_bytes(metadata_bytes(md))
        client = updater(published_home, url, tmp_path / "c")
        with pytest.raises(exceptions.UnsignedMetadataError):
            client.refresh()


class CountingTransport(HttpTransport):
    """The vehicle's transport, recording what each timestamp poll cost."""

    def __init__(self, net: NetworkConfig) -> None:
        super().__init__(net)
        self.polls: list[str] = []

    def revalidate(
        self, url: str, *, max_length: int, etag: str | None
    ) -> tuple[bytes | None, str | None]:
        body, new = super().revalidate(url, max_length=max_length, etag=etag)
        self.polls.append("304" if body is None else "200")
        return body, new


def test_an_unchanged_poll_is_a_304_and_a_change_is_seen(
    published_home: Path, tmp_path: Path
) -> None:
    with serve(published_home, "--no-refresh") as url:
        transport = CountingTransport(NetworkConfig(allow_insecure_http=True))
        md = tmp_path / "c" / "md"

        def poll() -> None:
            fetcher = TransportFetcher(transport, md)
            updater(published_home, url, tmp_path / "c", fetcher=fetcher).refresh()

        poll()
        poll()  # nothing changed: 304, and python-tuf re-judges its own trusted copy
        ok(ota(published_home, "repo", "refresh", "--force"))
        poll()  # a new timestamp: fetched and trusted
        assert transport.polls == ["200", "304", "200"]
        version = json.loads((md / "timestamp.json").read_bytes())["signed"]["version"]
        served = json.loads((published_home / "repo/metadata/timestamp.json").read_bytes())
        assert version == served["signed"]["version"]
        # A damaged ETag file, or one naming another body, is never trusted: a full fetch.
        (md / "timestamp.etag").write_text('"x" ' + "0" * 64)
        poll()
        assert transport.polls[-1] == "200"
        transport.close()


def test_a_snapshot_that_drops_a_targets_role_is_refused(empty_home: Path, tmp_path: Path) -> None:
    """U-158: a new snapshot must keep every targets role of the old one (validly signed with
    the online snapshot key, it still cannot make a supplier's role disappear)."""
    ok(ota(empty_home, "repo", "delegate", "acme", "--hardware-id", "tcu-9150"))
    with serve(empty_home, "--no-refresh") as url:
        updater(empty_home, url, tmp_path / "c").refresh()  # trusts a snapshot listing acme
        repo = FileRepository.load(image_home(empty_home), datetime.now(UTC))
        with repo.edit_snapshot() as snapshot:
            del snapshot.meta["acme.json"]
        with repo.edit_timestamp() as timestamp:
            timestamp.snapshot_meta = repo.snapshot_info
        md = empty_home / "repo/metadata"
        snap = repo.open("snapshot")
        (md / f"{snap.signed.version}.snapshot.json").write_bytes(metadata_bytes(snap))
        (md / "timestamp.json").write_bytes(metadata_bytes(repo.open("timestamp")))
        with pytest.raises(exceptions.RepositoryError, match="acme"):
            updater(empty_home, url, tmp_path / "c").refresh()


def test_a_timestamp_key_rotation_recovers_from_a_fast_forward(
    published_home: Path, tmp_path: Path
) -> None:
    """U-148: an attacker with the timestamp key pushed vehicles to timestamp version
    1,000,000; after `ota keys rotate timestamp` the vehicles accept the repository's own,
    lower, timestamp again (the cached one is dropped when its key changes)."""
    md = published_home / "repo/metadata"
    with serve(published_home, "--no-refresh") as url:
        updater(published_home, url, tmp_path / "c").refresh()
        repo = FileRepository.load(image_home(published_home), datetime.now(UTC))
        with repo.edit_timestamp() as timestamp:
            timestamp.version = 999_999  # closed below: 1,000,000
        forged = repo.open("timestamp")
        assert forged.signed.version == 1_000_000
        honest = (md / "timestamp.json").read_bytes()
        (md / "timestamp.json").write_bytes(metadata_bytes(forged))
        updater(published_home, url, tmp_path / "c").refresh()  # fast-forwarded
        (md / "timestamp.json").write_bytes(honest)
        with pytest.raises(exceptions.BadVersionNumberError):
            updater(published_home, url, tmp_path / "c").refresh()
        ok(ota(published_home, "keys", "rotate", "timestamp"))
        updater(published_home, url, tmp_path / "c").refresh()  # recovered
    cached = json.loads((tmp_path / "c/md/timestamp.json").read_bytes())["signed"]["version"]
    assert cached < 1_000_000
