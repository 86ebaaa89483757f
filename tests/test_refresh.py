"""Expiry policy and ``ota repo refresh``: what is re-signed when, and what needs offline keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ota_server.config import ExpiryPolicy, parse_config
from ota_server.errors import ConfigError
from ota_server.repository.lifecycle import refresh_repository
from tests.helpers import image_home, ok, one_line_error, ota


def test_policy_windows() -> None:
    policy = ExpiryPolicy()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.lifetime("timestamp") == timedelta(days=1)
    assert policy.lifetime("acme-supplier") == timedelta(days=90)  # delegated roles
    assert policy.is_due("timestamp", now + timedelta(hours=11), now)
    assert not policy.is_due("timestamp", now + timedelta(hours=13), now)
    assert policy.is_due("root", now + timedelta(days=100), now)
    assert not policy.is_due("root", now + timedelta(days=200), now)


def _refresh(home: Path, now: datetime, **kw: bool) -> dict[str, int]:
    report = refresh_repository(image_home(home), now=now, **kw)
    return report.resigned


def test_refresh_re_signs_only_what_is_due(empty_home: Path) -> None:
    now = datetime.now(UTC)
    assert _refresh(empty_home, now) == {}
    assert set(_refresh(empty_home, now + timedelta(hours=13))) == {"snapshot", "timestamp"}
    later = _refresh(empty_home, now + timedelta(days=50))
    assert set(later) == {"targets", "snapshot", "timestamp"}
    assert set(_refresh(empty_home, now + timedelta(days=200))) == {
        "root",
        "targets",
        "snapshot",
        "timestamp",
    }


def test_refresh_skips_offline_roles_and_says_so(empty_home: Path, tmp_path: Path) -> None:
    for pem in (empty_home / "keys/image/root").glob("*.pem"):
        pem.rename(tmp_path / pem.name)
    out = json.loads(ok(ota(empty_home, "repo", "refresh", "--force", "--json")).stdout)
    assert out["skipped"] == ["root"]
    assert set(out["resigned"]) == {"targets", "snapshot", "timestamp"}


def test_online_only_refresh(empty_home: Path) -> None:
    resigned = _refresh(empty_home, datetime.now(UTC), force=True, online_only=True)
    assert set(resigned) == {"snapshot", "timestamp"}


def test_config_file(tmp_path: Path) -> None:
    config = parse_config(
        tmp_path,
        """
[repository]
expiry_days = { timestamp = 0.25, targets = 30 }
refresh_fraction = 0.25
[serve]
port = 9000
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
""",
    )
    assert config.expiry.lifetime("timestamp") == timedelta(hours=6)
    assert config.expiry.refresh_window("targets") == timedelta(days=7.5)
    assert config.serve.port == 9000 and config.serve.tls_cert == tmp_path / "tls/cert.pem"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[repository\n", "config.toml"),
        ("[nope]\n", "unknown section"),
        ("[repository]\nexpiry_days = { bogus = 1 }\n", "unknown role"),
        ("[repository]\nexpiry_days = { root = 0 }\n", "must be a number from 0.01 to 3660"),
        ("[repository]\nexpiry_days = { root = nan }\n", "repository.expiry_days.root"),
        ("[repository]\nrefresh_fraction = 1.5\n", "from 0.01 to 0.99"),
        ("[deltas]\nmax_ratio = nan\n", "deltas.max_ratio must be a number"),
        ("[deltas]\njobs = 200\n", "deltas.jobs must be an integer 1-64"),
        ("[deltas]\nchunk_size = 1e9\n", "deltas.chunk_size"),
        ("[serve]\nport = 70000\n", "0-65535"),
        ("[serve]\nrefresh_interval = inf\n", "serve.refresh_interval"),
        ("[serve]\nhost = 'a b'\n", "serve.host"),
        ('[serve]\ntls_cert = "a\\u0000b"\n', "serve.tls_cert holds a NUL"),
        ("[serve]\ncolour = 1\n", "unknown setting serve.colour"),
    ],
)
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(tmp_path, text)


def test_bad_config_file_gives_one_line(empty_home: Path) -> None:
    (empty_home / "config.toml").write_text("[serve]\nport = 'x'\n")
    assert "serve.port" in one_line_error(ota(empty_home, "repo", "status"))
