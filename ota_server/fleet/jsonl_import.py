"""One-time import of the old report store (``state/events/<vehicle>.jsonl``) into the database.

Servers before the fleet database kept each vehicle's reports in a JSON-lines file. At start,
if that folder exists, every readable report goes through the same policy and store as a
report arriving over HTTP (``EventStore.add``: schema, duplicates, caps), keeping the time it
first arrived; then the folder's entries are moved to ``state/events.imported/`` so the import
runs once. An interrupted import is simply run again: reports already stored are duplicates.

Files are read like any hostile input: regular files only (a FIFO or a link is skipped, never
opened or followed), at most what the per-vehicle cap can hold, newest part first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ota_client.metadata import MetadataFormatError, check_identifier
from ota_server.fleet.events import EventStore
from ota_server.fleet.report_policy import LogContents, ReportLimits, parse_log

log = logging.getLogger("ota.serve")
SUFFIX = ".jsonl"
IMPORTED = "events.imported"


@dataclass(frozen=True)
class Imported:
    vehicles: int = 0
    stored: int = 0
    skipped: int = 0  # unreadable lines and files, reports the policy refused or had already


def _read_tail(path: Path, limit: int) -> bytes | None:
    """The last ``limit`` bytes of a regular file (from a line start), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # a link (O_NOFOLLOW), or unreadable
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size
        start = max(0, size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        chunks: list[bytes] = []
        left = min(size, limit)
        while left > 0 and (chunk := os.read(fd, min(1 << 20, left))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data[data.find(b"\n") + 1 :] if start else data


def read_logs(directory: Path, limits: ReportLimits) -> list[tuple[str, LogContents | None]]:
    """Each old log's vehicle and readable reports (None: not a readable log). Blocking."""
    limit = limits.per_vehicle * (limits.body_bytes + 64)
    logs: list[tuple[str, LogContents | None]] = []
    for path in sorted(directory.iterdir()):
        if not path.name.endswith(SUFFIX):
            continue
        vehicle = path.name.removesuffix(SUFFIX)
        try:
            check_identifier("vehicle id", vehicle)
        except MetadataFormatError:
            logs.append((vehicle, None))
            continue
        data = _read_tail(path, limit)
        logs.append((vehicle, None if data is None else parse_log(data, vehicle)))
    return logs


def move_aside(directory: Path) -> Path:
    """Move every entry of ``directory`` to ``events.imported/`` beside it; remove it. Blocking."""
    target = directory.with_name(IMPORTED)
    target.mkdir(exist_ok=True)
    for path in directory.iterdir():
        name = path.name
        if (target / name).exists() or (target / name).is_symlink():
            name = f"{name}.{time.time_ns()}"
        with contextlib.suppress(FileNotFoundError):  # another server moved it first
            os.rename(path, target / name)  # renames a link itself, never its target
    with contextlib.suppress(OSError):
        directory.rmdir()
    return target


async def import_jsonl(state: Path, store: EventStore) -> Imported | None:
    """Import ``state/events/`` if it is there (None if not)."""
    directory = state / "events"
    try:
        if not stat.S_ISDIR(directory.lstat().st_mode):
            return None
    except FileNotFoundError:
        return None
    logs = await asyncio.to_thread(read_logs, directory, store.limits)
    vehicles = stored = skipped = 0
    for _vehicle, contents in logs:
        if contents is None:
            skipped += 1
            continue
        skipped += contents.skipped
        kept = contents.reports[-store.limits.per_vehicle :]
        skipped += len(contents.reports) - len(kept)
        added = 0
        for logged in kept:
            received = datetime.fromtimestamp(logged.received, UTC)
            result = await store.add(logged.report, received)
            added += result.action == "stored"
        vehicles += added > 0
        stored += added
        skipped += len(kept) - added
    try:
        target = await asyncio.to_thread(move_aside, directory)
    except OSError as e:
        log.warning("cannot move the imported report files aside (%s): imported again next time", e)
        target = directory
    log.info(
        "imported %d reports of %d vehicles from %s into the fleet database (%d skipped); "
        "the old files are now in %s",
        stored,
        vehicles,
        directory,
        skipped,
        target,
    )
    return Imported(vehicles, stored, skipped)
