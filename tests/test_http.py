"""The real ``ota serve``: static repository files with ranges, validators and safe paths;
vehicle reports kept in the fleet database (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ota_server.repository.lifecycle import refresh_repository
from tests.helpers import (
    image_home,
    ok,
    one_line_error,
    ota,
    serve,
    tree,
    use_database,
    wait_for,
)


def request(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, parts.path + path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture
def server(published_home: Path):  # type: ignore[no-untyped-def]
    with serve(published_home) as url:
        yield url, published_home


def _target(home: Path) -> tuple[str, bytes]:
    path = next((home / "repo/targets/hu-imx8").glob("*.head-unit-2.1.0.img"))
    return f"/targets/hu-imx8/{path.name}", path.read_bytes()


def test_ranges_and_validators(server) -> None:  # type: ignore[no-untyped-def]
    url, home = server
    path, data = _target(home)
    status, headers, body = request(url, path)
    assert status == 200 and body == data
    etag = headers["ETag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'  # content hash: same on every replica
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["Accept-Ranges"] == "bytes"

    status, headers, body = request(url, path, headers={"Range": "bytes=1000-1999"})
    assert status == 206 and body == data[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    status, _, body = request(url, path, headers={"Range": "bytes=-100"})
    assert status == 206 and body == data[-100:]
    # Resume: same content → the rest; changed content → the whole new file.
    status, _, body = request(url, path, headers={"Range": "bytes=4096-", "If-Range": etag})
    assert status == 206 and body == data[4096:]
    status, _, body = request(url, path, headers={"Range": "bytes=4096-", "If-Range": '"stale"'})
    assert status == 200 and body == data
    status, headers, _ = request(url, path, headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, _, body = request(url, path, headers={"If-None-Match": etag})
    assert status == 304 and body == b""
    status, headers, body = request(url, path, method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(data)


def test_metadata_headers(server) -> None:  # type: ignore[no-untyped-def]
    url, home = server
    status, headers, body = request(url, "/metadata/timestamp.json")
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    assert json.loads(body)["signed"]["_type"] == "timestamp"
    assert body == (home / "repo/metadata/timestamp.json").read_bytes()
    status, headers, _ = request(url, "/metadata/1.root.json")
    assert status == 200 and "immutable" in headers["Cache-Control"]
    status, _, _ = request(
        url, "/metadata/timestamp.json", headers={"If-None-Match": headers["ETag"]}
    )
    assert status == 200  # a different file's tag does not match


@pytest.mark.parametrize(
    "path",
    [
        "/targets/../keys/keyring.json",
        "/targets/%2e%2e/%2e%2e/keys/keyring.json",
        "/targets/..%2f..%2fkeys%2fkeyring.json",
        "/metadata/..%2f..%2fstate%2flock",
        "/targets/hu-imx8",
        "/targets/",
        "/metadata/",
        "/metadata/.hidden.json",
        "/targets/hu-imx8/../../../etc/passwd",
        "/targets/%00",
        "/metadata/1.root.json%00",
    ],
)
def test_paths_outside_the_repository_are_not_served(server, path: str) -> None:  # type: ignore[no-untyped-def]
    url, home = server
    (home / "repo/metadata/.hidden.json").write_text("{}")
    status, _, body = request(url, path)
    assert status == 404, (path, body[:100])


def test_symlinks_are_not_followed(server) -> None:  # type: ignore[no-untyped-def]
    url, home = server
    (home / "repo/targets/leak.json").symlink_to(home / "keys/image/keyring.json")
    assert request(url, "/targets/leak.json")[0] == 404


def test_server_re_signs_online_roles_before_they_expire(published_home: Path) -> None:
    # The repository was last signed 20 hours ago: timestamp and snapshot are inside their
    # 12-hour refresh window, so the running server re-signs them by itself.
    past = datetime.now(UTC) - timedelta(hours=20)
    refresh_repository(image_home(published_home), force=True, now=past)
    before = tree(published_home / "repo/metadata")
    with serve(published_home, "--refresh-interval", "1") as url:

        def fresh() -> bool:
            ts = json.loads(request(url, "/metadata/timestamp.json")[2])
            expires = datetime.fromisoformat(ts["signed"]["expires"].replace("Z", "+00:00"))
            return expires > datetime.now(UTC) + timedelta(hours=20)

        wait_for(fresh)
    after = tree(published_home / "repo/metadata")
    added = set(after) - set(before)
    assert any(n.endswith(".snapshot.json") for n in added)
    assert not any(
        n.endswith((".targets.json", ".root.json")) for n in added
    )  # offline roles untouched


def test_serve_refuses_an_empty_home(tmp_path: Path) -> None:
    assert "ota repo init" in one_line_error(ota(tmp_path / "none", "serve", "--port", "0"))


def test_serve_with_bad_tls_material(published_home: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    line = one_line_error(
        ota(
            published_home,
            "serve",
            "--port",
            "0",
            "--tls-cert",
            str(bogus),
            "--tls-key",
            str(bogus),
        )
    )
    assert "cannot load TLS certificate" in line
    ok(ota(published_home, "repo", "status"))


# -- vehicle reports, on each fleet database ---------------------------------------------------

REPORT = {
    "id": "0" * 31 + "1",
    "vehicle_id": "VIN0001",
    "ecu": "bcm-1",
    "event": "rollback",
    "time": 1_700_000_000.5,
    "version": "1.2.0",
    "error": "health check failed",
    "kind": "device",
}
EVENTS = "/api/v1/vehicles/VIN0001/events"


def post(url: str, path: str, body: bytes) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_events_are_stored_once_and_listed(published_home: Path, database_url: str) -> None:
    use_database(published_home, database_url)
    body = json.dumps(REPORT).encode()
    with serve(published_home, "--no-refresh") as url:
        base = url.removesuffix("/repo")
        assert post(base, EVENTS, body) == (202, b'{"stored": true}')
        status, reply = post(base, EVENTS, body)  # resent after a power cut: same id
        assert status == 200 and json.loads(reply) == {"stored": False, "duplicate": True}
        other = json.dumps({**REPORT, "vehicle_id": "VIN0002"}).encode()
        for path, data, expected in [
            (EVENTS, b"{", 400),
            (EVENTS, other, 400),  # not the vehicle in the path
            ("/api/v1/vehicles/..%2f/events", body, 400),
            (EVENTS, json.dumps({**REPORT, "error": "e" * 20_000}).encode(), 413),
        ]:
            assert post(base, path, data)[0] == expected, (path, data[:40])
        status, _, listed = request(base, EVENTS)
    assert status == 200
    records = json.loads(listed)
    assert [{k: v for k, v in r.items() if k != "received"} for r in records] == [REPORT]
    assert abs(records[0]["received"] - datetime.now(UTC).timestamp()) < 600
    with serve(published_home, "--no-refresh") as url:  # kept across restarts
        status, _, again = request(url.removesuffix("/repo"), EVENTS)
        assert status == 200 and json.loads(again) == records
        other_vehicle = "/api/v1/vehicles/VIN0002/events"
        assert json.loads(request(url.removesuffix("/repo"), other_vehicle)[2]) == []
