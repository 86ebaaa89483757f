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


@dataclass
class Vehicle:
    root: Path
    server: str  # base URL (no /repo)
    backend: str = "simulated"
    health: str = 'command = ["true"]'
    slot_size: int | None = None
    slot_b: str = "slot-b.img"
    extra: str = ""

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "slot-a.img").write_bytes((EXAMPLES / "images/bcm-1.0.0.bin").read_bytes())
        self.write_config()
        if self.backend != "simulated":
            assert self.client("reboot").exit_code == 0  # power on: the bootloader boots a

    @property
    def config(self) -> Path:
        return self.root / "client.toml"

    def write_config(self) -> None:
        size = f", size = {self.slot_size}" if self.slot_size else ""
        boot = {
            "simulated": '{ backend = "simulated" }',
            "grub": '{ backend = "grub", env = "grubenv", cmdline = "cmdline" }',
            "uboot": '{ backend = "uboot", config = "fw_env.config", cmdline = "cmdline" }',
        }[self.backend]
        if self.backend == "uboot" and not (self.root / "env1").exists():
            for name in ("env1", "env2"):
                (self.root / name).write_bytes(bytes(0x4000))
            (self.root / "fw_env.config").write_text(
                f"{self.root}/env1 0x0 0x4000\n{self.root}/env2 0x0 0x4000\n"
            )
        self.config.write_text(f"""
vehicle_id = "VIN0001"
server = "{self.server}"
trust_root = "root.json"
data_dir = "data"
download_timeout = 10
{self.extra}
[[ecus]]
serial = "BCM-1"
hardware_id = "bcm-s32k"
slots = {{ a = "slot-a.img", b = "{self.slot_b}"{size} }}
boot = {boot}
trial_deadline = 20
[[ecus.health]]
{self.health}
""")

    def client(self, *args: str) -> Result:
        return CliRunner().invoke(client_main, ["-c", str(self.config), *args])

    def update(self) -> Result:
        emulate = [] if self.backend == "simulated" else ["--emulate-reboot"]
        return self.client("update", *emulate)

    def status(self) -> dict[str, Any]:
        result = self.client("status", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)[0]

    def slot(self, name: str) -> Path:
        return self.root / ("slot-a.img" if name == "a" else self.slot_b)

    def running(self) -> bytes:
        """The image the booted slot holds (its installed length)."""
        st = self.status()
        data = self.slot(st["booted_slot"]).read_bytes()
        return data[: st["installed"]["length"]] if st["installed"] else data

    def events(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.server}/api/v1/vehicles/VIN0001/events") as r:
            return json.loads(r.read())


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
