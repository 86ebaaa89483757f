"""A simulated vehicle for end-to-end tests: a client config, file slots, the real CLI."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from ota_client.cli import main as client_main
from tests.helpers import EXAMPLES

V1 = (EXAMPLES / "images/bcm-1.0.0.bin").read_bytes()
# A board's default U-Boot environment (what `env export -t` prints): what it needs to boot.
BOARD_ENV = "bootcmd=run ota_boot\nbootdelay=2\nbaudrate=115200\n"


@dataclass
class Ecu:
    """One ECU of the simulated vehicle; its slots are files named after its serial."""

    serial: str = "BCM-1"
    hardware_id: str = "bcm-s32k"
    image: bytes = V1  # what slot a holds at the factory
    health: str = 'command = ["true"]'
    slot_size: int | None = None
    slot_b: str | None = None  # default: <prefix>slot-b.img
    prefix: str = ""  # slot file names: <prefix>slot-a.img, <prefix>slot-b.img

    def slot_name(self, name: str) -> str:
        if name == "b" and self.slot_b is not None:
            return self.slot_b
        return f"{self.prefix}slot-{name}.img"


@dataclass
class Vehicle:
    root: Path
    server: str  # base URL (no /repo)
    backend: str = "simulated"
    health: str = 'command = ["true"]'
    slot_size: int | None = None
    slot_b: str = "slot-b.img"
    extra: str = ""
    ecus: list[Ecu] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ecus:
            self.ecus = [Ecu(health=self.health, slot_size=self.slot_size, slot_b=self.slot_b)]
        self.root.mkdir(parents=True, exist_ok=True)
        for ecu in self.ecus:
            slot_a = self.root / ecu.slot_name("a")
            if not slot_a.exists():
                slot_a.write_bytes(ecu.image)
        self.write_config()
        if self.backend != "simulated":
            assert self.client("reboot").exit_code == 0  # power on: the bootloader boots a

    @property
    def config(self) -> Path:
        return self.root / "client.toml"

    def _boot(self, ecu: Ecu) -> str:
        p = ecu.prefix
        if self.backend == "simulated":
            return '{ backend = "simulated" }'
        if self.backend == "grub":
            (self.root / f"{p}grub").mkdir(exist_ok=True)
            return f'{{ backend = "grub", dir = "{p}grub", cmdline = "cmdline" }}'
        if not (self.root / f"{p}env1").exists():
            for name in (f"{p}env1", f"{p}env2"):
                (self.root / name).write_bytes(bytes(0x4000))
            (self.root / f"{p}fw_env.config").write_text(
                f"{self.root}/{p}env1 0x0 0x4000\n{self.root}/{p}env2 0x0 0x4000\n"
            )
            (self.root / "u-boot.env").write_text(BOARD_ENV)
        return (
            f'{{ backend = "uboot", config = "{p}fw_env.config", cmdline = "cmdline", '
            'defaults = "u-boot.env" }'
        )

    def write_config(self) -> None:
        if len(self.ecus) == 1:  # the single-ECU attributes stay editable by tests
            self.ecus[0].health = self.health
        text = f"""
vehicle_id = "VIN0001"
server = "{self.server}"
trust_root = "root.json"
mode = "track-latest"
data_dir = "data"
retry_delay = 0
[network]
allow_insecure_http = true
stall_timeout = 10
{self.extra}
"""
        for ecu in self.ecus:
            size = f", size = {ecu.slot_size}" if ecu.slot_size else ""
            text += f"""
[[ecus]]
serial = "{ecu.serial}"
hardware_id = "{ecu.hardware_id}"
slots = {{ a = "{ecu.slot_name("a")}", b = "{ecu.slot_name("b")}"{size} }}
boot = {self._boot(ecu)}
trial_deadline = 20
[[ecus.health]]
{ecu.health}
"""
        self.config.write_text(text)

    def client(self, *args: str) -> Result:
        return CliRunner().invoke(client_main, ["-c", str(self.config), *args])

    def update(self) -> Result:
        emulate = [] if self.backend == "simulated" else ["--emulate-reboot"]
        return self.client("update", *emulate)

    def vehicle_status(self) -> dict[str, Any]:
        result = self.client("status", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def status(self, serial: str | None = None) -> dict[str, Any]:
        """One ECU's status (the first by default) with the vehicle's phase as ``state``."""
        doc = self.vehicle_status()
        ecu = next(e for e in doc["ecus"] if serial in (None, e["ecu"]))
        return {**ecu, "state": doc["phase"], "error": doc["error"], "vehicle": doc}

    def slot(self, name: str, serial: str | None = None) -> Path:
        ecu = next(e for e in self.ecus if serial in (None, e.serial))
        return self.root / ecu.slot_name(name)

    def running(self, serial: str | None = None) -> bytes:
        """The image the booted slot holds (its installed length)."""
        st = self.status(serial)
        data = self.slot(st["booted_slot"], serial).read_bytes()
        return data[: st["installed"]["length"]] if st["installed"] else data

    def events(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.server}/api/v1/vehicles/VIN0001/events") as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


@dataclass
class CuttingProxy:
    """A TCP proxy that cuts the first ``cut_after`` bytes of responses short, once."""

    upstream_port: int
    cut_after: int
    port: int = 0
    bytes_sent: list[int] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        index = len(self.bytes_sent)
        self.bytes_sent.append(0)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(65536):
                    if count:
                        self.bytes_sent[index] += len(data)
                        if self.cut_after and self.bytes_sent[index] > self.cut_after:
                            self.cut_after = 0  # only once
                            dst.transport.abort()
                            up_writer.transport.abort()
                            return
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def start(self) -> CuttingProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
