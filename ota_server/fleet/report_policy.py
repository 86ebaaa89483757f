"""What to do with a vehicle's progress report, and how a report log is read back (pure).

A report arrives as a request body; ``parse_report`` judges it with the one shared schema
(``ota_client.metadata.reports.Report``) behind the strict JSON reader, so a body is either a
report of that vehicle or one ``ReportError`` — whatever its size, types, nesting or numbers.
``decide`` then chooses, from what the vehicle's log holds and how full the store is: store it
(dropping the vehicle's oldest reports beyond its cap), acknowledge a duplicate (vehicles resend
after a power cut, with the same id), or refuse it because the store as a whole is full.
``parse_log`` reads a log back line by line and skips lines it cannot read (a torn last line
after a crash, a damaged disk block), so one bad line never hides the others.

No I/O and no clock: the shell (``report_log``) reads, writes and times.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ota_client.metadata import MetadataFormatError
from ota_client.metadata.reports import Report
from ota_client.strict import FormatError, parse_json, printable

MAX_BODY = 16 << 10  # bytes of one report body (and of one stored line)


@dataclass(frozen=True)
class ReportLimits:
    """Caps of the report store (README, Limits)."""

    per_vehicle: int = 1000  # reports kept per vehicle; the oldest are dropped beyond it
    vehicles: int = 100_000  # vehicle logs; reports from further vehicles are refused
    total_bytes: int = 1 << 30  # all logs together; further reports are refused
    body_bytes: int = MAX_BODY


@dataclass(frozen=True)
class Usage:
    """How full the store is now."""

    vehicles: int
    total_bytes: int


@dataclass(frozen=True)
class StoredReport:
    id: str
    record: dict[str, Any]  # the report plus "received"
    size: int  # bytes of its line, newline included


@dataclass(frozen=True)
class LogContents:
    reports: tuple[StoredReport, ...]
    exists: bool  # the vehicle has a log file
    skipped: int = 0  # lines that could not be read
    size: int = 0  # bytes of the file
    clean_end: bool = True  # ends with a newline (or is empty): safe to append to
    regular: bool = True  # False: a directory, FIFO or link sits where the log should be


@dataclass(frozen=True)
class Decision:
    action: Literal["store", "duplicate", "refuse"]
    drop: int = 0  # oldest reports to drop before storing
    rewrite: bool = False  # rewrite the log (dropping reports or unreadable lines), then add
    reason: str = ""


class ReportError(ValueError):
    """A body that is not a valid report from this vehicle (HTTP 400)."""


def parse_report(body: bytes, vehicle: str, limits: ReportLimits) -> Report:
    """The report in ``body``, sent by ``vehicle``, or ReportError."""
    try:
        report = Report.from_dict(parse_json(body, "the report", limit=limits.body_bytes))
    except (FormatError, MetadataFormatError) as e:
        raise ReportError(printable(str(e), 200)) from None
    if report.vehicle_id != vehicle:
        raise ReportError("the report's vehicle_id is not the vehicle in the path")
    return report


def record_line(report: Report, received: float) -> bytes:
    """A report as stored: one JSON line with the time it arrived."""
    return json.dumps({**report.to_dict(), "received": received}).encode() + b"\n"


def decide(
    report: Report,
    log: LogContents,
    *,
    line_bytes: int,
    usage: Usage,
    limits: ReportLimits,
) -> Decision:
    if any(stored.id == report.id for stored in log.reports):
        return Decision("duplicate")
    if not log.exists and usage.vehicles >= limits.vehicles:
        return Decision("refuse", reason=f"the server keeps reports of {limits.vehicles} vehicles")
    drop = max(0, len(log.reports) + 1 - limits.per_vehicle)
    rewrite = drop > 0 or log.skipped > 0 or not log.clean_end or not log.regular
    kept = sum(stored.size for stored in log.reports[drop:]) if rewrite else log.size
    if usage.total_bytes + (kept + line_bytes - log.size) > limits.total_bytes:
        return Decision("refuse", reason=f"the report store is full ({limits.total_bytes} bytes)")
    return Decision("store", drop=drop, rewrite=rewrite)


def parse_log(data: bytes, *, exists: bool = True) -> LogContents:
    """The readable reports of one log, oldest first; unreadable lines are skipped."""
    reports: list[StoredReport] = []
    skipped = 0
    seen: set[str] = set()
    for line in data.splitlines(keepends=True):
        if not line.strip():
            continue
        stored = _parse_line(line)
        if stored is None or stored.id in seen:
            skipped += 1
            continue
        seen.add(stored.id)
        reports.append(stored)
    return LogContents(
        tuple(reports),
        exists=exists,
        skipped=skipped,
        size=len(data),
        clean_end=not data or data.endswith(b"\n"),
    )


def _parse_line(line: bytes) -> StoredReport | None:
    if not line.endswith(b"\n"):
        return None  # torn: the write of this line never completed
    try:
        record = parse_json(line, "a stored report", limit=MAX_BODY + 64)
        if not isinstance(record, dict):
            return None
        fields = dict(record)
        received = fields.pop("received", None)
        if isinstance(received, bool) or not isinstance(received, int | float):
            return None
        report = Report.from_dict(fields)
    except (FormatError, MetadataFormatError):
        return None
    return StoredReport(report.id, {**report.to_dict(), "received": received}, len(line))


def compacted(log: LogContents, drop: int) -> bytes:
    """The log's readable reports without the ``drop`` oldest, as file content."""
    return b"".join(_line(stored) for stored in log.reports[drop:])


def _line(stored: StoredReport) -> bytes:
    return json.dumps(stored.record).encode() + b"\n"


def records(log: LogContents) -> Sequence[dict[str, Any]]:
    return [stored.record for stored in log.reports]
