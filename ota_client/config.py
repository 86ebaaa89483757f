"""Vehicle client configuration (TOML), validated completely before any work starts.

    vehicle_id = "WDD1234567"
    server = "https://ota.example.com:8443"     # the repository is at <server>/repo
    trust_root = "root.json"                     # Image-repository root shipped with the vehicle
    director_root = "director-root.json"         # the Director's root, shipped with the vehicle
    mode = "director"                            # Uptane full verification of the Director's
                                                 # assignment; "track-latest": the newest bundle
    data_dir = "/var/lib/ota-client"
    poll_interval = 3600                         # seconds between checks (run)
    poll_jitter = 0.2                            # +/- share of the interval, spreads the fleet
    max_attempts = 5                             # failed attempts at a release before giving up
    retry_delay = 60                             # first back-off; doubles (with jitter) per failure
    reboot_command = ["systemctl", "reboot"]     # how the agent reboots the vehicle

    [network]                                    # one transport for metadata, images, reports
    ca_file = "ca.pem"                           # CA bundle for HTTPS (default: the system's)
    client_cert = "vehicle.pem"                  # mutual TLS (optional, with client_key)
    client_key = "vehicle.key"
    connect_timeout = 10
    stall_timeout = 30                           # seconds without a byte before giving up
    request_deadline = 120                       # whole metadata request, report or probe
    download_deadline = 14400                    # one image request (the next cycle resumes)
    min_speed = 512                              # bytes/s, averaged over speed_window seconds
    speed_window = 60
    checkpoint_interval = 33554432               # bytes between durable resume points
    allow_insecure_http = false                  # http:// servers: tests and demos only

    [[ecus]]
    serial = "ECU-0001"
    hardware_id = "bcm-s32k"
    key = "ecu-ECU-0001.pem"                     # the ECU's ed25519 key: signs its version report
    primary = true                               # signs the vehicle manifest (default: first ECU)
    slots = { type = "raw", a = "/dev/mmcblk0p2", b = "/dev/mmcblk0p3" }
    # application bundles (tar images): type = "directory", a/b folders, current = symlink
    # U-Boot; defaults = the board's default environment (`env export -t`), with bootcmd:
    boot = { backend = "uboot", config = "/etc/fw_env.config", cmdline = "/proc/cmdline",
             defaults = "/etc/ota-client/u-boot.env" }   # (one line in a real file)
    # GRUB: boot = { backend = "grub", dir = "/boot/grub", cmdline = "/proc/cmdline" }
    trial_deadline = 300                         # seconds for all health checks in a trial boot
    [[ecus.health]]
    command = ["systemctl", "is-system-running", "--wait"]
    timeout = 120
    [[ecus.health]]
    http = "http://127.0.0.1:8080/healthz"
    timeout = 5

Relative paths are relative to the configuration file. ``parse_config`` is pure; ``load_config``
also reads the file (bounded) and checks the slots on disk: no two slots — of one ECU or of two
— may be one device or file, whatever names they are given (symlinks, hard links, ``..``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from ota_client.errors import ConfigError, DeviceError
from ota_client.slots.guard import identity
from ota_client.strict import FormatError, Reader, load_toml, printable, read_bounded

MAX_CONFIG = 256 << 10
MAX_ECU_KEY = 16 << 10
MAX_ECUS = 64
MAX_CHECKS = 32
DAY = 86400.0


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
    state: Path | None = None  # simulated/symlink: the JSON file
    dir: Path | None = None  # grub: the folder of ota.cfg and its two environment copies
    config: Path | None = None  # uboot: fw_env.config
    defaults: Path | None = None  # uboot: the board's default environment (with bootcmd)
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
    role: str | None = None  # the ECU role in bundles (custom "ecu"), when hardware ids repeat
    key: Path | None = None  # its ed25519 private key (PKCS#8 PEM): signs its version reports
    primary: bool = False


@dataclass(frozen=True)
class NetworkConfig:
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    connect_timeout: float = 10.0
    stall_timeout: float = 30.0
    request_deadline: float = 120.0
    download_deadline: float = 4 * 3600.0
    min_speed: float = 512.0
    speed_window: float = 60.0
    checkpoint_interval: int = 32 << 20
    allow_insecure_http: bool = False


@dataclass(frozen=True)
class ClientConfig:
    vehicle_id: str
    server: str
    trust_root: Path
    data_dir: Path
    ecus: tuple[EcuConfig, ...]
    network: NetworkConfig = NetworkConfig()
    poll_interval: float = 3600.0
    poll_jitter: float = 0.2
    max_attempts: int = 5
    retry_delay: float = 60.0
    reboot_command: tuple[str, ...] = ("systemctl", "reboot")
    mode: str = "director"  # or "track-latest"
    director_root: Path | None = None

    @property
    def repo_url(self) -> str:
        return self.server.rstrip("/") + "/repo"

    @property
    def director_url(self) -> str:
        return f"{self.server.rstrip('/')}/director/{self.vehicle_id}"

    @property
    def manifest_url(self) -> str:
        return f"{self.server.rstrip('/')}/api/v1/vehicles/{self.vehicle_id}/manifest"

    @property
    def primary(self) -> EcuConfig:
        return next((e for e in self.ecus if e.primary), self.ecus[0])

    @property
    def events_url(self) -> str:
        return f"{self.server.rstrip('/')}/api/v1/vehicles/{self.vehicle_id}/events"


def _command(r: Reader, key: str) -> tuple[str, ...] | None:
    value: tuple[str, ...] | None = r.strings(key, None, max_items=64)
    if value is not None and not value[0]:
        raise r.fail(key, "must start with a program name")
    return value


def _health(r: Reader) -> HealthCheck:
    command = _command(r, "command")
    http = r.url("http", None, schemes=("http", "https"))
    check = HealthCheck(
        command,
        http,
        r.number("timeout", 30.0, low=0.1, high=DAY),
        r.integer("expect_status", 200, low=100, high=599),
    )
    r.done()
    if (command is None) == (http is None):
        raise FormatError(f"{r.where} needs exactly one of command or http")
    return check


def _slots(r: Reader) -> SlotConfig:
    kind = r.string("type", "raw", choices=("raw", "directory"))
    slots = SlotConfig(
        kind,
        r.path("a"),
        r.path("b"),
        r.integer("size", None, low=1, high=1 << 50),
        r.path("current", None),
    )
    r.done()
    if (kind == "directory") != (slots.current is not None):
        raise FormatError(f"{r.where}: directory slots need current (and only they do)")
    return slots


def _boot(r: Reader, slots: SlotConfig, serial: str, data_dir: Path) -> BootConfig:
    directory = slots.type == "directory"
    backends = ("symlink",) if directory else ("simulated", "grub", "uboot")
    backend = r.string("backend", backends[0], choices=backends)
    if r.has("env"):
        raise r.fail(
            "env",
            "is gone: the grub backend keeps two copies of its environment; set dir to "
            "the folder of ota.cfg (e.g. /boot/grub)",
        )
    boot = BootConfig(
        backend=backend,
        attempts=r.integer("attempts", 3, low=1, high=9),
        state=r.path("state", None) or data_dir / f"boot-{serial}.json",
        dir=r.path("dir", None),
        config=r.path("config", None),
        defaults=r.path("defaults", None),
        cmdline=r.path("cmdline", None),
        restart=_command(r, "restart"),
    )
    r.done()
    if backend == "grub" and (boot.dir is None or boot.cmdline is None):
        raise FormatError(f"{r.where}: the grub backend needs dir and cmdline")
    if backend == "uboot" and None in (boot.config, boot.cmdline, boot.defaults):
        raise FormatError(f"{r.where}: the uboot backend needs config, cmdline and defaults")
    return boot


def _ecu(r: Reader, data_dir: Path) -> EcuConfig:
    serial = r.identifier("serial", "ECU serial")
    hardware_id = r.identifier("hardware_id", "hardware id")
    role = r.identifier("role", "ECU role", None)
    slots = _slots(r.table("slots"))
    default_boot = {"backend": "symlink" if slots.type == "directory" else "simulated"}
    boot = _boot(r.table("boot", default_boot), slots, serial, data_dir)
    health = tuple(_health(c) for c in r.tables("health", max_items=MAX_CHECKS))
    deadline = r.number("trial_deadline", 300.0, low=1, high=DAY)
    key = r.path("key", None)
    primary = r.boolean("primary", False)
    r.done()
    return EcuConfig(serial, hardware_id, slots, boot, health, deadline, role, key, primary)


def _network(r: Reader) -> NetworkConfig:
    net = NetworkConfig(
        ca_file=r.path("ca_file", None),
        client_cert=r.path("client_cert", None),
        client_key=r.path("client_key", None),
        connect_timeout=r.number("connect_timeout", 10.0, low=0.1, high=600),
        stall_timeout=r.number("stall_timeout", 30.0, low=0.1, high=3600),
        request_deadline=r.number("request_deadline", 120.0, low=1, high=3600),
        download_deadline=r.number("download_deadline", 4 * 3600.0, low=1, high=7 * DAY),
        min_speed=r.number("min_speed", 512.0, low=0, high=1e10),
        speed_window=r.number("speed_window", 60.0, low=1, high=3600),
        checkpoint_interval=r.integer("checkpoint_interval", 32 << 20, low=64 << 10, high=1 << 30),
        allow_insecure_http=r.boolean("allow_insecure_http", False),
    )
    r.done()
    if (net.client_cert is None) != (net.client_key is None):
        raise FormatError("network: client_cert and client_key go together")
    return net


def parse_config(data: object, base: Path) -> ClientConfig:
    """A ClientConfig from a decoded TOML document (pure); FormatError names the bad key."""
    r = Reader(data, "", base)
    vehicle_id = r.identifier("vehicle_id", "vehicle id")
    server = r.url("server", schemes=("http", "https"))
    network = _network(r.table("network", {}))
    if server.startswith("http:") and not network.allow_insecure_http:
        raise FormatError(
            "server is an http:// URL: use https://, or set network.allow_insecure_http = true "
            "(tests and demos only)"
        )
    data_dir = r.path("data_dir")
    ecus = tuple(_ecu(e, data_dir) for e in r.tables("ecus", min_items=1, max_items=MAX_ECUS))
    config = ClientConfig(
        vehicle_id=vehicle_id,
        server=server,
        trust_root=r.path("trust_root"),
        data_dir=data_dir,
        ecus=ecus,
        network=network,
        poll_interval=r.number("poll_interval", 3600.0, low=1, high=30 * DAY),
        poll_jitter=r.number("poll_jitter", 0.2, low=0, high=0.9),
        max_attempts=r.integer("max_attempts", 5, low=1, high=1000),
        retry_delay=r.number("retry_delay", 60.0, low=0, high=DAY),
        reboot_command=_command(r, "reboot_command") or ("systemctl", "reboot"),
        mode=r.string("mode", "director", choices=("director", "track-latest")),
        director_root=r.path("director_root", None),
    )
    r.done()
    if len({e.serial for e in ecus}) != len(ecus):
        raise FormatError("two ECUs share a serial")
    if sum(e.primary for e in ecus) > 1:
        raise FormatError("only one ECU can be the primary")
    if config.mode == "director":
        if config.director_root is None:
            raise FormatError(
                "director_root is missing: the Director's root metadata (from 'ota vehicle "
                'provision\'), or mode = "track-latest" to follow the newest release'
            )
        if missing := [e.serial for e in ecus if e.key is None]:
            raise FormatError(
                f"ECU {missing[0]} has no key: each ECU signs its version report in director mode"
            )
    return config


# -- checks against the machine -----------------------------------------------------------------


def check_slots(config: ClientConfig) -> None:
    """No two slots are the same file or device, under any names (refuse a bricked car)."""
    seen: dict[object, str] = {}
    for ecu in config.ecus:
        for slot in ("a", "b"):
            path = ecu.slots.path(slot)
            try:
                ident = identity(path)
            except DeviceError as e:
                raise ConfigError(str(e)) from None
            # A slot that does not exist yet is named by its resolved path instead.
            key: object = ident if ident is not None else ("path", os.path.realpath(path))
            name = f"ecus[{ecu.serial}].slots.{slot}"
            if key in seen:
                raise ConfigError(f"{name} and {seen[key]} are the same file or device ({path})")
            seen[key] = name


def load_signer(path: Path) -> CryptoSigner:
    """An ECU's ed25519 key (unencrypted PKCS#8 PEM, as provisioning writes it)."""
    where = printable(str(path))
    try:
        pem = read_bounded(path, MAX_ECU_KEY, where)
        key = serialization.load_pem_private_key(pem, password=None)
    except FileNotFoundError:
        raise ConfigError(f"the ECU key {where} does not exist") from None
    except (FormatError, ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ConfigError(f"the ECU key {where} is not an unencrypted PEM key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"the ECU key {where} is not an ed25519 key")
    return CryptoSigner(key, SSlibKey.from_crypto(key.public_key()))


def load_config(path: Path) -> ClientConfig:
    try:
        data = load_toml(path, str(path), limit=MAX_CONFIG)
    except FileNotFoundError:
        raise ConfigError(f"cannot read {path}: no such file") from None
    except FormatError as e:
        raise ConfigError(str(e)) from None
    try:
        config = parse_config(data, path.parent.absolute())
    except FormatError as e:
        raise ConfigError(f"{path.name}: {e}") from None
    check_slots(config)
    if config.mode == "director":
        for ecu in config.ecus:
            assert ecu.key is not None  # parse_config requires it in director mode
            load_signer(ecu.key)  # a key that cannot sign is a configuration error, now
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise ConfigError(f"data_dir {config.data_dir} is not a directory")
    return config
