"""Server configuration: where state lives (``$OTA_HOME``) and the optional ``config.toml``.

Config is a frozen value built once by the CLI and passed down; nothing reads the environment
or the file system behind the caller's back. ``config.toml`` is read through the shared strict
reader (``ota_client.strict``): size-capped, regular files only, every number finite and inside
the range documented next to it (and in the README's Limits), strings without NUL, unknown keys
refused. Any fault is one ``ConfigError`` naming the key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ota_client.strict import FormatError, Reader, load_toml, parse_toml
from ota_server.errors import ConfigError

MAX_CONFIG_BYTES = 64 << 10
EXPIRY_DAYS = (0.01, 3660.0)  # metadata lifetimes: 15 minutes to 10 years
REFRESH_FRACTION = (0.01, 0.99)
MAX_RATIO = (0.01, 1.0)
CHUNK_SIZE = (4096, 4 << 20)
MAX_SOURCES = 64
MAX_JOBS = 64  # and never more than the machine's cores or the chunks to encode
REFRESH_INTERVAL = (1.0, 86400.0)  # seconds
MAX_HOST = 253
MAX_DATABASE_URL = 1024
DATABASE_SCHEMES = ("sqlite+aiosqlite://", "postgresql+asyncpg://")
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")

DEFAULT_EXPIRY_DAYS: Mapping[str, float] = {
    "root": 365,
    "targets": 90,
    "delegated": 90,
    "snapshot": 1,
    "timestamp": 1,
}
# The Director signs per vehicle with online keys, on demand: short lives (Uptane's
# deployment guidance: "such as in a day"); its root is offline like the Image root.
DIRECTOR_EXPIRY_DAYS: Mapping[str, float] = {
    "root": 365,
    "targets": 1,
    "snapshot": 1,
    "timestamp": 1,
}


REPOSITORIES = ("image", "director")


@dataclass(frozen=True)
class RepositoryFiles:
    """Where one repository's files live: what is served, its private working state, its keys."""

    name: str
    served: Path  # metadata/ and targets/, static: nginx or a CDN may serve them
    state: Path  # lock and transaction journal; never served
    keys: Path  # key ring and one folder of key files per role

    @property
    def metadata(self) -> Path:
        return self.served / "metadata"

    @property
    def targets(self) -> Path:
        return self.served / "targets"


@dataclass(frozen=True)
class Layout:
    """The files of one server home: two repositories (Image, Director), config, state."""

    home: Path

    @property
    def keys(self) -> Path:
        """The key folders of both repositories (``keys/image``, ``keys/director``)."""
        return self.home / "keys"

    @property
    def state(self) -> Path:
        """Private working state (the Image repository's journal, the fleet database)."""
        return self.home / "state"

    @property
    def config_file(self) -> Path:
        return self.home / "config.toml"

    @property
    def image(self) -> RepositoryFiles:
        # The Image repository's state stays where single-repository homes kept it, so a
        # change interrupted before an upgrade is still recovered from its journal.
        return RepositoryFiles("image", self.home / "repo", self.state, self.keys / "image")

    @property
    def director(self) -> RepositoryFiles:
        return RepositoryFiles(
            "director", self.home / "director", self.state / "director", self.keys / "director"
        )

    def repository(self, name: str) -> RepositoryFiles:
        if name not in REPOSITORIES:
            raise ValueError(name)
        files: RepositoryFiles = getattr(self, name)
        return files


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
    # Behind a TLS-terminating proxy: the header it puts the client certificate's CN in,
    # believed only from these addresses (IP addresses or networks).
    identity_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerConfig:
    layout: Layout
    expiry: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    director_expiry: ExpiryPolicy = field(
        default_factory=lambda: ExpiryPolicy(days=dict(DIRECTOR_EXPIRY_DAYS))
    )
    deltas: DeltaPolicy = field(default_factory=DeltaPolicy)
    serve: ServeConfig = field(default_factory=ServeConfig)
    database_url: str | None = None  # None: SQLite in the home's state/ (fleet.db)


def check_host(value: str) -> str:
    """An address to listen on: an IP address or a DNS name (no ports, paths or spaces)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) > MAX_HOST or not _HOSTNAME.fullmatch(value):
        raise FormatError("must be an IP address or a host name")
    return value


def check_database_url(value: str) -> str:
    """A fleet database URL: SQLite with an absolute file path, or PostgreSQL (asyncpg).

    Messages never quote the URL: it may hold a password.
    """
    if not value.startswith(DATABASE_SCHEMES):
        raise FormatError(f"must start with {' or '.join(DATABASE_SCHEMES)}")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise FormatError("must not hold spaces or control characters")
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise FormatError("is not a valid database URL") from None
    if url.port is not None and not 0 < url.port < 65536:
        raise FormatError("has a port outside 1-65535")
    if url.get_backend_name() == "sqlite":
        if not url.database or not url.database.startswith("/"):
            raise FormatError("needs an absolute file path (sqlite+aiosqlite:////srv/ota/fleet.db)")
    elif not url.database:
        raise FormatError("must name a database (postgresql+asyncpg://user@host/database)")
    return value


def check_header(value: str) -> str:
    if not _HEADER.fullmatch(value):
        raise FormatError("must be an HTTP header name (letters, digits and -)")
    return value


def _expiry(r: Reader, defaults: Mapping[str, float] = DEFAULT_EXPIRY_DAYS) -> ExpiryPolicy:
    days = dict(defaults)
    table = r.table("expiry_days", {})
    for role in defaults:
        days[role] = table.number(role, days[role], low=EXPIRY_DAYS[0], high=EXPIRY_DAYS[1])
    if unknown := sorted(set(table.data) - set(defaults)):
        raise FormatError(
            f"unknown role {table.name(str(unknown[0]))} (roles: {', '.join(defaults)})"
        )
    fraction = r.number("refresh_fraction", 0.5, low=REFRESH_FRACTION[0], high=REFRESH_FRACTION[1])
    r.done()
    return ExpiryPolicy(days=days, refresh_fraction=fraction)


def _deltas(r: Reader) -> DeltaPolicy:
    base = DeltaPolicy()
    jobs = r.integer("jobs", None, low=1, high=MAX_JOBS)
    policy = DeltaPolicy(
        sources=r.integer("sources", base.sources, low=0, high=MAX_SOURCES),
        max_ratio=r.number("max_ratio", base.max_ratio, low=MAX_RATIO[0], high=MAX_RATIO[1]),
        chunk_size=r.integer("chunk_size", base.chunk_size, low=CHUNK_SIZE[0], high=CHUNK_SIZE[1]),
        effort=r.string("effort", base.effort, choices=("best", "fast")),
        jobs=jobs,
    )
    r.done()
    return policy


def _serve(r: Reader) -> ServeConfig:
    base = ServeConfig()
    config = ServeConfig(
        host=r.string("host", base.host, max_len=MAX_HOST, check=check_host),
        port=r.integer("port", base.port, low=0, high=65535),
        tls_cert=r.path("tls_cert", None),
        tls_key=r.path("tls_key", None),
        refresh_interval=r.number(
            "refresh_interval",
            base.refresh_interval,
            low=REFRESH_INTERVAL[0],
            high=REFRESH_INTERVAL[1],
        ),
        identity_header=r.string("identity_header", None, max_len=64, check=check_header),
        trusted_proxies=r.strings("trusted_proxies", (), max_items=64, min_items=0),
    )
    for i, network in enumerate(config.trusted_proxies):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise r.fail(f"trusted_proxies[{i}]", "is not an IP address or network") from None
    if (config.identity_header is None) != (not config.trusted_proxies):
        raise FormatError("[serve] identity_header and trusted_proxies go together")
    r.done()
    return config


def config_from_data(home: Path, data: Mapping[str, Any]) -> ServerConfig:
    """Build a ServerConfig from a decoded config.toml (pure)."""
    try:
        r = Reader(data, "", base=home)
        known = {"repository", "director", "deltas", "serve", "database_url"}
        if unknown := sorted(set(data) - known):
            raise FormatError(f"unknown section [{r.name(str(unknown[0]))}]")
        config = ServerConfig(
            layout=Layout(home),
            expiry=_expiry(r.table("repository", {})),
            director_expiry=_expiry(r.table("director", {}), DIRECTOR_EXPIRY_DAYS),
            deltas=_deltas(r.table("deltas", {})),
            serve=_serve(r.table("serve", {})),
            database_url=r.string(
                "database_url", None, max_len=MAX_DATABASE_URL, check=check_database_url
            ),
        )
    except FormatError as e:
        raise ConfigError(f"config.toml: {e}") from None
    return config


def parse_config(home: Path, text: str | bytes) -> ServerConfig:
    """Build a ServerConfig from the text of config.toml (pure)."""
    try:
        data = parse_toml(text, "config.toml", limit=MAX_CONFIG_BYTES)
    except FormatError as e:
        raise ConfigError(str(e)) from None
    return config_from_data(home, data)


def load_config(home: Path) -> ServerConfig:
    """The config of ``home``: defaults if there is no config.toml, else what it says."""
    layout = Layout(home)
    try:
        data = load_toml(layout.config_file, "config.toml", limit=MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if layout.config_file.is_symlink():  # a link to a file that is gone: not "no config"
            raise ConfigError("config.toml is a link to a missing file") from None
        return ServerConfig(layout=layout)
    except FormatError as e:
        raise ConfigError(str(e)) from None
    return config_from_data(home, data)
