"""The agent's files in the data directory: state, outbox, lock, staged payloads.

Every file is JSON with a schema version, written atomically and read with a cap and a strict
loader. A file that fails its loader is not guessed at: it is moved aside (``*.damaged-<time>``,
the newest three kept), the agent says so in a report, and starts from a fresh record — the
bootloader keeps booting the committed slot, and the next start-up disarms any trial left
armed. Read-only commands (``status``) never move or write anything.

State files of the per-ECU client (``state-<serial>.json``) are migrated once: the committed
facts (installed image, release-counter floor, rejected images) move into the vehicle state.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ota_client.agent.records import EcuRecord, VehicleState, parse_image
from ota_client.atomic import write_atomic
from ota_client.errors import BadDataError, DeviceError
from ota_client.locking import file_lock
from ota_client.metadata import MetadataFormatError
from ota_client.metadata.reports import Report
from ota_client.strict import FormatError, Reader, load_json

log = logging.getLogger("ota.client")

MAX_STATE = 1 << 20
MAX_OUTBOX = 2 << 20
KEEP_DAMAGED = 3


def _write(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1).encode())
    except OSError as e:
        raise DeviceError(f"cannot write {path}: {e.strerror}") from None


def move_aside(path: Path, now: float) -> Path:
    """Rename a damaged file out of the way; keep the newest few for inspection."""
    aside = path.with_name(f"{path.name}.damaged-{int(now)}")
    try:
        os.replace(path, aside)
        old = sorted(path.parent.glob(f"{path.name}.damaged-*"), key=lambda p: p.lstat().st_mtime)
        for stale in old[:-KEEP_DAMAGED]:
            stale.unlink(missing_ok=True)
    except OSError as e:
        raise DeviceError(f"cannot move {path} aside: {e.strerror}") from None
    return aside


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> VehicleState:
        """The persisted state (a fresh one if there is none); BadDataError if damaged."""
        try:
            return VehicleState.from_json(load_json(self.path, str(self.path), limit=MAX_STATE))
        except FileNotFoundError:
            return self._migrated()
        except (FormatError, ValueError) as e:
            raise BadDataError(f"the state file {self.path} is damaged: {e}") from None

    def load_or_reset(self, now: float) -> tuple[VehicleState, str | None]:
        """The state, or a fresh one and a notice if the file was damaged (moved aside)."""
        try:
            return self.load(), None
        except BadDataError as e:
            aside = move_aside(self.path, now)
            notice = f"{e}; moved aside to {aside.name}, starting from a fresh state"
            log.warning("%s", notice)
            return VehicleState(), notice

    def save(self, state: VehicleState) -> None:
        _write(self.path, state.to_json())

    def _migrated(self) -> VehicleState:
        ecus: dict[str, EcuRecord] = {}
        for old in sorted(self.path.parent.glob("state-*.json"))[:64]:
            serial = old.name[len("state-") : -len(".json")]
            try:
                r = Reader(load_json(old, str(old), limit=MAX_STATE), old.name)
                installed = r.data.get("installed")
                ecus[serial] = EcuRecord(
                    installed=None if installed is None else parse_image(installed, "installed"),
                    max_counter=r.integer("max_counter", 0, low=0, high=2**63 - 1),
                    rejected=tuple(r.strings("rejected", (), max_items=32, min_items=0)),
                )
            except (FormatError, OSError, FileNotFoundError) as e:
                log.warning("not migrating %s: %s", old, e)
        return VehicleState(ecus=ecus)


class Outbox:
    """Reports waiting for delivery, oldest first, each with an id that never changes.

    Capped so a long offline spell stays bounded; a report already queued (same id: a step
    repeated after a power cut) is not queued twice.
    """

    LIMIT = 256

    def __init__(self, path: Path) -> None:
        self.path = path

    def items(self, now: float, *, repair: bool = True) -> list[Report]:
        """The queued reports; a damaged outbox is moved aside (``repair``) or raises."""
        try:
            r = Reader(load_json(self.path, str(self.path), limit=MAX_OUTBOX), "outbox")
            if r.integer("schema", low=0, high=1 << 16) != 1:
                raise FormatError("outbox: unknown schema")
            raw = r.data.get("reports")
            if not isinstance(raw, list) or len(raw) > self.LIMIT:
                raise FormatError(f"outbox: reports must be a list of at most {self.LIMIT}")
            return [Report.from_dict(item) for item in raw]
        except FileNotFoundError:
            return []
        except (FormatError, MetadataFormatError, ValueError) as e:
            if not repair:
                raise BadDataError(f"the outbox {self.path} is damaged: {e}") from None
            aside = move_aside(self.path, now)
            log.warning("the outbox is damaged (%s); moved aside to %s", e, aside.name)
            return []

    def put(self, reports: list[Report], now: float) -> None:
        queued = self.items(now)
        ids = {r.id for r in queued}
        fresh = [r for r in reports if r.id not in ids]
        if fresh:
            self._write([*queued, *fresh][-self.LIMIT :])

    def drop(self, ids: set[str], now: float) -> None:
        if ids:
            self._write([r for r in self.items(now) if r.id not in ids])

    def _write(self, reports: list[Report]) -> None:
        _write(self.path, {"schema": 1, "reports": [r.to_dict() for r in reports]})


@contextmanager
def exclusive(data_dir: Path, *, wait: float = 0.0) -> Iterator[None]:
    """Hold the client's lock (``data_dir/lock``): one process drives the slots at a time."""
    with ExitStack() as stack:
        try:
            held = stack.enter_context(file_lock(data_dir / "lock", wait=wait))
        except OSError as e:
            raise DeviceError(f"cannot lock {data_dir}: {e.strerror}") from None
        if not held:
            raise DeviceError(
                "another ota-client is working on this vehicle; try again when it is done"
            )
        yield


def clean_temporaries(directory: Path) -> None:
    """Remove what killed atomic writes left behind (``.<name>.<random>.tmp``)."""
    try:
        for leftover in directory.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
    except OSError as e:
        raise DeviceError(f"cannot clean {directory}: {e.strerror}") from None


def clean_staged(directory: Path, keep: set[str]) -> None:
    """Remove staged payloads that no job still needs (``keep``: their file names)."""
    try:
        for staged in directory.iterdir() if directory.is_dir() else ():
            if staged.name not in keep:
                staged.unlink(missing_ok=True)
    except OSError as e:
        raise DeviceError(f"cannot clean {directory}: {e.strerror}") from None
