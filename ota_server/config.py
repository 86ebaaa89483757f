"""Server configuration: where state lives (``$OTA_HOME``) and the optional ``config.toml``.

Config is a frozen value built once by the CLI and passed down; nothing reads the environment
or the file system behind the caller's back.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ota_server.errors import ConfigError

DEFAULT_EXPIRY_DAYS: Mapping[str, float] = {
    "root": 365,
    "targets": 90,
    "delegated": 90,
    "snapshot": 1,
    "timestamp": 1,
}


@dataclass(frozen=True)
class Layout:
    """The files of one server home."""

    home: Path

    @property
    def keys(self) -> Path:
        return self.home / "keys"

    @property
    def repo(self) -> Path:
        return self.home / "repo"

    @property
    def metadata(self) -> Path:
        return self.repo / "metadata"

    @property
    def targets(self) -> Path:
        return self.repo / "targets"

    @property
    def state(self) -> Path:
        """Private working state (lock, transaction journal); never served."""
        return self.home / "state"

    @property
    def config_file(self) -> Path:
        return self.home / "config.toml"


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long each role's metadata lives, and when ``refresh`` re-signs it."""

    days: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EXPIRY_DAYS))
    refresh_fraction: float = 0.5

    def lifetime(self, role: str) -> timedelta:
        key = role if role in self.days else "delegated"
        return timedelta(days=self.days[key])

    def refresh_window(self, role: str) -> timedelta:
        """Re-sign a role once less than this much of its lifetime is left."""
        return self.lifetime(role) * self.refresh_fraction

    def is_due(self, role: str, expires: datetime, now: datetime) -> bool:
        return expires - now < self.refresh_window(role)


@dataclass(frozen=True)
class DeltaPolicy:
    """Which deltas publishing makes, and how."""

    sources: int = 3  # deltas from the last N images of each hardware id (0: none)
    max_ratio: float = 0.9  # publish a delta only if at most this share of its image
    chunk_size: int = 2 << 20
    effort: str = "best"  # "best" (xz) or "fast" (zstd)
    jobs: int | None = None  # worker processes (default: all cores)


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    refresh_interval: float = 600.0  # seconds between online-role refresh checks


@dataclass(frozen=True)
class ServerConfig:
    layout: Layout
    expiry: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    deltas: DeltaPolicy = field(default_factory=DeltaPolicy)
    serve: ServeConfig = field(default_factory=ServeConfig)


def _table(data: Mapping[str, Any], name: str, allowed: set[str]) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"config.toml: [{name}] must be a table")
    if unknown := set(value) - allowed:
        raise ConfigError(f"config.toml: unknown setting {name}.{sorted(unknown)[0]}")
    return value


def _number(value: object, where: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= minimum:
        raise ConfigError(f"config.toml: {where} must be a number > {minimum:g}")
    return float(value)


def parse_config(home: Path, text: str) -> ServerConfig:
    """Build a ServerConfig from the text of config.toml (pure)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config.toml: {e}") from e
    if unknown := set(data) - {"repository", "deltas", "serve"}:
        raise ConfigError(f"config.toml: unknown section [{sorted(unknown)[0]}]")

    repo = _table(data, "repository", {"expiry_days", "refresh_fraction"})
    days = dict(DEFAULT_EXPIRY_DAYS)
    expiry_days = repo.get("expiry_days", {})
    if not isinstance(expiry_days, Mapping):
        raise ConfigError("config.toml: repository.expiry_days must be a table")
    for role, value in expiry_days.items():
        if role not in DEFAULT_EXPIRY_DAYS:
            raise ConfigError(f"config.toml: unknown role repository.expiry_days.{role}")
        days[role] = _number(value, f"repository.expiry_days.{role}")
    fraction = _number(repo.get("refresh_fraction", 0.5), "repository.refresh_fraction")
    if fraction >= 1:
        raise ConfigError("config.toml: repository.refresh_fraction must be below 1")

    deltas = _parse_deltas(
        _table(data, "deltas", {"sources", "max_ratio", "chunk_size", "effort", "jobs"})
    )
    serve = _table(data, "serve", {"host", "port", "tls_cert", "tls_key", "refresh_interval"})
    port = serve.get("port", 8443)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("config.toml: serve.port must be an integer 0-65535")
    paths: dict[str, Path | None] = {}
    for key in ("tls_cert", "tls_key"):
        value = serve.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"config.toml: serve.{key} must be a path")
        paths[key] = None if value is None else home / value
    host = serve.get("host", "127.0.0.1")
    if not isinstance(host, str):
        raise ConfigError("config.toml: serve.host must be a string")
    return ServerConfig(
        layout=Layout(home),
        expiry=ExpiryPolicy(days=days, refresh_fraction=fraction),
        deltas=deltas,
        serve=ServeConfig(
            host=host,
            port=port,
            tls_cert=paths["tls_cert"],
            tls_key=paths["tls_key"],
            refresh_interval=_number(serve.get("refresh_interval", 600), "serve.refresh_interval"),
        ),
    )


def _integer(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"config.toml: {where} must be an integer {low}-{high}")
    return value


def _parse_deltas(table: Mapping[str, Any]) -> DeltaPolicy:
    base = DeltaPolicy()
    ratio = _number(table.get("max_ratio", base.max_ratio), "deltas.max_ratio")
    if ratio > 1:
        raise ConfigError("config.toml: deltas.max_ratio must be at most 1")
    effort = table.get("effort", base.effort)
    if effort not in ("best", "fast"):
        raise ConfigError('config.toml: deltas.effort must be "best" or "fast"')
    jobs = table.get("jobs")
    return DeltaPolicy(
        sources=_integer(table.get("sources", base.sources), "deltas.sources", 0, 64),
        max_ratio=ratio,
        chunk_size=_integer(
            table.get("chunk_size", base.chunk_size), "deltas.chunk_size", 4096, 4 << 20
        ),
        effort=effort,
        jobs=None if jobs is None else _integer(jobs, "deltas.jobs", 1, 256),
    )


def load_config(home: Path) -> ServerConfig:
    layout = Layout(home)
    try:
        text = layout.config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ServerConfig(layout=layout)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {layout.config_file}: {e}") from e
    return parse_config(home, text)
