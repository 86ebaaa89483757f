"""Vehicle client configuration (TOML), parsed strictly into frozen values.

    vehicle_id = "WDD1234567"
    server = "https://ota.example.com:8443"     # the repository is at <server>/repo
    trust_root = "root.json"                     # Image-repository root shipped with the vehicle
    ca_file = "ca.pem"                           # optional: CA bundle for HTTPS
    data_dir = "/var/lib/ota-client"
    poll_interval = 3600                         # seconds between checks (run)
    poll_jitter = 0.2                            # +/- share of the interval, spreads the fleet
    download_timeout = 30                        # seconds without progress before giving up
    min_download_speed = 512                     # bytes/s averaged over a minute (slow retrieval)

    [[ecus]]
    serial = "ECU-0001"
    hardware_id = "bcm-s32k"
    slots = { type = "raw", a = "/dev/mmcblk0p2", b = "/dev/mmcblk0p3" }
    # application bundles (tar images): type = "directory", a/b folders, current = symlink
    boot = { backend = "uboot", config = "/etc/fw_env.config", cmdline = "/proc/cmdline" }
    trial_deadline = 300                         # seconds for all health checks in a trial boot
    [[ecus.health]]
    command = ["systemctl", "is-system-running", "--wait"]
    timeout = 120
    [[ecus.health]]
    http = "http://127.0.0.1:8080/healthz"
    timeout = 5

Relative paths are relative to the configuration file. Errors name the offending key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ota_client.metadata import MetadataFormatError, check_identifier


class ConfigError(Exception):
    """The client configuration is malformed."""


@dataclass(frozen=True)
class HealthCheck:
    command: tuple[str, ...] | None = None
    http: str | None = None
    timeout: float = 30.0
    expect_status: int = 200

    @property
    def label(self) -> str:
        return " ".join(self.command) if self.command else f"GET {self.http}"


@dataclass(frozen=True)
class SlotConfig:
    type: str  # "raw" (file or block device) or "directory" (application bundles)
    a: Path
    b: Path
    size: int | None = None  # capacity of file slots; block devices report their own
    current: Path | None = None  # directory slots: the symlink that selects the slot

    def path(self, slot: str) -> Path:
        return self.a if slot == "a" else self.b


@dataclass(frozen=True)
class BootConfig:
    backend: str  # simulated | grub | uboot | symlink (directory slots)
    attempts: int = 3
    state: Path | None = None  # simulated: the JSON file
    env: Path | None = None  # grub: the environment block
    config: Path | None = None  # uboot: fw_env.config
    cmdline: Path | None = None  # grub/uboot: where ota.slot= is read
    restart: tuple[str, ...] | None = None  # symlink: restarts the application after a flip


@dataclass(frozen=True)
class EcuConfig:
    serial: str
    hardware_id: str
    slots: SlotConfig
    boot: BootConfig
    health: tuple[HealthCheck, ...] = ()
    trial_deadline: float = 300.0


@dataclass(frozen=True)
class ClientConfig:
    vehicle_id: str
    server: str
    trust_root: Path
    data_dir: Path
    ecus: tuple[EcuConfig, ...]
    ca_file: Path | None = None
    poll_interval: float = 3600.0
    poll_jitter: float = 0.2
    download_timeout: float = 30.0
    min_download_speed: float = 512.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def repo_url(self) -> str:
        return self.server.rstrip("/") + "/repo"


class _Reader:
    def __init__(self, data: Mapping[str, Any], where: str, base: Path) -> None:
        self.data, self.where, self.base = data, where, base
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, check: Any = None
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"missing {self._name(key)}")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(f"{self._name(key)} has the wrong type")
        if not isinstance(value, kind):
            raise ConfigError(f"{self._name(key)} has the wrong type")
        if check is not None and not check(value):
            raise ConfigError(f"{self._name(key)} is out of range")
        return value

    def path(self, key: str, default: Any = ...) -> Path | None:
        value = self.get(key, str, default)
        return None if value is None else (self.base / value)

    def done(self) -> None:
        if unknown := set(self.data) - self.used:
            raise ConfigError(f"unknown setting {self._name(sorted(unknown)[0])}")


def _positive(value: float) -> bool:
    return value > 0


def _health(data: Any, where: str, base: Path) -> HealthCheck:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table")
    r = _Reader(data, where, base)
    command = r.get("command", list, None)
    http = r.get("http", str, None)
    timeout = float(r.get("timeout", (int, float), 30.0, check=_positive))
    status = r.get("expect_status", int, 200, check=lambda v: 100 <= v <= 599)
    r.done()
    if (command is None) == (http is None):
        raise ConfigError(f"{where} needs exactly one of command or http")
    if command is not None and (not command or not all(isinstance(c, str) for c in command)):
        raise ConfigError(f"{where}.command must be a non-empty list of strings")
    if http is not None and not http.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.http must be an http(s) URL")
    return HealthCheck(tuple(command) if command else None, http, timeout, status)


def _ecu(data: Any, where: str, base: Path, data_dir: Path) -> EcuConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table")
    r = _Reader(data, where, base)
    serial = r.get("serial", str)
    hardware_id = r.get("hardware_id", str)
    for kind, value in (("ECU serial", serial), ("hardware id", hardware_id)):
        try:
            check_identifier(kind, value)
        except MetadataFormatError as e:
            raise ConfigError(f"{where}: {e}") from None
    s = _Reader(r.get("slots", dict), f"{where}.slots", base)
    slot_type = s.get("type", str, "raw", check=lambda v: v in ("raw", "directory"))
    a_path, b_path = s.path("a"), s.path("b")
    assert a_path is not None and b_path is not None
    slots = SlotConfig(
        slot_type,
        a_path,
        b_path,
        s.get("size", int, None, check=_positive),
        s.path("current", None),
    )
    s.done()
    if slots.a == slots.b:
        raise ConfigError(f"{where}.slots: a and b are the same")
    if (slot_type == "directory") != (slots.current is not None):
        raise ConfigError(f"{where}.slots: directory slots need current (and only they do)")
    default_backend = "symlink" if slot_type == "directory" else "simulated"
    b = _Reader(r.get("boot", dict, {"backend": default_backend}), f"{where}.boot", base)
    backends = ("symlink",) if slot_type == "directory" else ("simulated", "grub", "uboot")
    backend = b.get("backend", str, default_backend, check=lambda v: v in backends)
    restart = b.get("restart", list, None)
    if restart is not None and (not restart or not all(isinstance(c, str) for c in restart)):
        raise ConfigError(f"{where}.boot.restart must be a non-empty list of strings")
    boot = BootConfig(
        backend=backend,
        attempts=b.get("attempts", int, 3, check=lambda v: 1 <= v <= 9),
        state=b.path("state", None) or data_dir / f"boot-{serial}.json",
        env=b.path("env", None),
        config=b.path("config", None),
        cmdline=b.path("cmdline", None),
        restart=tuple(restart) if restart else None,
    )
    b.done()
    if backend == "grub" and (boot.env is None or boot.cmdline is None):
        raise ConfigError(f"{where}.boot: the grub backend needs env and cmdline")
    if backend == "uboot" and (boot.config is None or boot.cmdline is None):
        raise ConfigError(f"{where}.boot: the uboot backend needs config and cmdline")
    checks = r.get("health", list, [])
    health = tuple(_health(c, f"{where}.health[{i}]", base) for i, c in enumerate(checks))
    deadline = float(r.get("trial_deadline", (int, float), 300.0, check=_positive))
    r.done()
    return EcuConfig(serial, hardware_id, slots, boot, health, deadline)


def parse_config(text: str, base: Path) -> ClientConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"malformed TOML: {e}") from None
    r = _Reader(data, "", base)
    vehicle_id = r.get("vehicle_id", str)
    try:
        check_identifier("vehicle id", vehicle_id)
    except MetadataFormatError as e:
        raise ConfigError(str(e)) from None
    server = r.get("server", str, check=lambda v: v.startswith(("http://", "https://")))
    data_dir = r.path("data_dir")
    assert data_dir is not None
    ecus_raw = r.get("ecus", list, check=lambda v: 0 < len(v) <= 64)
    ecus = tuple(_ecu(e, f"ecus[{i}]", base, data_dir) for i, e in enumerate(ecus_raw))
    if len({e.serial for e in ecus}) != len(ecus):
        raise ConfigError("two ECUs share a serial")
    config = ClientConfig(
        vehicle_id=vehicle_id,
        server=server,
        trust_root=r.path("trust_root"),  # type: ignore[arg-type]
        data_dir=data_dir,
        ecus=ecus,
        ca_file=r.path("ca_file", None),
        poll_interval=float(r.get("poll_interval", (int, float), 3600.0, check=_positive)),
        poll_jitter=float(r.get("poll_jitter", (int, float), 0.2, check=lambda v: 0 <= v < 1)),
        download_timeout=float(r.get("download_timeout", (int, float), 30.0, check=_positive)),
        min_download_speed=float(
            r.get("min_download_speed", (int, float), 512.0, check=lambda v: v >= 0)
        ),
    )
    r.done()
    return config


def load_config(path: Path) -> ClientConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return parse_config(text, path.parent.absolute())
