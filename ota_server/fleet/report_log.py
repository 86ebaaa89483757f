"""The report store on disk: one JSON-lines file per vehicle under ``state/events/``.

The shell around ``report_policy``: it reads a vehicle's log (bounded, regular files only,
never following a link), lets the policy decide, and appends (fsync'd) or rewrites the log
atomically; something else where a log should be (a directory, a FIFO, a link) is moved aside,
never followed or deleted. Every method is
blocking and meant to run in a worker thread (``asyncio.to_thread``); callers serialise
writers of one vehicle (``ReportStore.lock``). ``Usage`` is counted once at start and then
kept up to date by the writers of this process: with several server processes on one
directory the caps are approximate (the fleet database replaces this store).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ota_client.atomic import write_atomic
from ota_server.fleet.report_policy import (
    LogContents,
    ReportLimits,
    Usage,
    compacted,
    parse_log,
)

log_ = logging.getLogger("ota.serve")
SUFFIX = ".jsonl"
_LOCKS = 64


@dataclass
class ReportStore:
    directory: Path
    limits: ReportLimits = field(default_factory=ReportLimits)
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    _locks: list[asyncio.Lock] = field(default_factory=list, repr=False)

    def lock(self, vehicle: str) -> asyncio.Lock:
        """One of a fixed set of locks (bounded, whatever the number of vehicles)."""
        if not self._locks:
            self._locks = [asyncio.Lock() for _ in range(_LOCKS)]
        return self._locks[zlib.crc32(vehicle.encode()) % _LOCKS]

    def path(self, vehicle: str) -> Path:
        return self.directory / f"{vehicle}{SUFFIX}"  # vehicle: a checked identifier

    def count(self) -> Usage:
        """Scan the directory (at start)."""
        vehicles = total = 0
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                vehicles += 1
                total += entry.stat(follow_symlinks=False).st_size
        return Usage(vehicles, total)

    def read(self, vehicle: str) -> LogContents:
        """The vehicle's log; a missing, foreign or oversized file reads as what it can."""
        path = self.path(vehicle)
        limit = self.limits.per_vehicle * (self.limits.body_bytes + 64)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return LogContents((), exists=False)
        except OSError:  # a symlink (O_NOFOLLOW), or unreadable
            return LogContents((), exists=True, regular=False)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return LogContents((), exists=True, regular=False)
            if st.st_size > limit:  # not written by us: read the newest part
                os.lseek(fd, st.st_size - limit, os.SEEK_SET)
            data = _read_all(fd, limit)
        finally:
            os.close(fd)
        if st.st_size > limit:
            data = data[data.find(b"\n") + 1 :]
            contents = parse_log(data)
            return LogContents(
                contents.reports, True, contents.skipped + 1, st.st_size, contents.clean_end
            )
        return parse_log(data)

    def append(self, vehicle: str, log: LogContents, line: bytes, drop: int, rewrite: bool) -> int:
        """Store ``line`` after the log's reports (minus the ``drop`` oldest). Returns the
        change of the file's size."""
        path = self.path(vehicle)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not log.regular:  # keep it for whoever put it there; start a new log
            aside = path.with_name(f"{path.name}.damaged-{time.time_ns()}")
            log_.warning("report log %s is not a regular file: moved to %s", path, aside.name)
            os.rename(path, aside)
        if rewrite:
            data = compacted(log, drop) + line
            write_atomic(path, data)
            return len(data) - log.size
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(line)


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
