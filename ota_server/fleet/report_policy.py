"""What to do with a vehicle's progress report (pure): parse it, then store or refuse it.

A report arrives as a request body; ``parse_report`` judges it with the one shared schema
(``ota_client.metadata.reports.Report``) behind the strict JSON reader, so a body is either a
report of that vehicle or one ``ReportError`` — whatever its size, types, nesting or numbers.
``decide`` then chooses, from how many reports the vehicle has, the sizes of its oldest and how
full the store is: store it (dropping the vehicle's oldest reports beyond its cap) or refuse it
because the store as a whole is full. Duplicates are not judged here: the database refuses a
second row with the same (vehicle, report id), atomically (``fleet.events``).

``parse_log`` reads one file of the old JSON-lines store (``state/events/<vehicle>.jsonl``) for
its one-time import, skipping lines it cannot read (a torn last line after a crash, a damaged
block), so one bad line never hides the others.

No I/O and no clock: ``fleet.events`` reads the counts with SQL, stores and times.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ota_client.metadata import MetadataFormatError
from ota_client.metadata.reports import Report
from ota_client.strict import FormatError, parse_json, printable

MAX_BODY = 16 << 10  # bytes of one report body (and of one line of the old store)
MAX_RECEIVED = 1e11  # seconds since the epoch, as Report.time


@dataclass(frozen=True)
class ReportLimits:
    """Caps of the report store (README, Limits)."""

    per_vehicle: int = 1000  # reports kept per vehicle; the oldest are dropped beyond it
    vehicles: int = 100_000  # vehicles with reports; reports from further vehicles are refused
    total_bytes: int = 1 << 30  # all stored reports together; further reports are refused
    body_bytes: int = MAX_BODY


@dataclass(frozen=True)
class Usage:
    """How full the store is now."""

    vehicles: int
    total_bytes: int


@dataclass(frozen=True)
class Decision:
    action: Literal["store", "refuse"]
    drop: int = 0  # the vehicle's oldest reports to delete along with storing this one
    freed: int = 0  # their bytes
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


def stored_size(body: Mapping[str, Any]) -> int:
    """What a stored report counts against the caps: the bytes of its JSON."""
    return len(json.dumps(body).encode())


def excess(stored: int, limits: ReportLimits) -> int:
    """How many of a vehicle's oldest reports make room for one more, when it has ``stored``."""
    return max(0, stored + 1 - limits.per_vehicle)


def decide(
    *, size: int, stored: int, oldest: Sequence[int], usage: Usage, limits: ReportLimits
) -> Decision:
    """Store a new report of ``size`` bytes, or refuse it.

    ``stored``: the vehicle's reports before this one; ``oldest``: the sizes of its oldest
    reports, ``excess(stored, limits)`` of them (fewer if another writer has just dropped
    some: then only those are dropped); ``usage``: the whole store.
    """
    if stored == 0 and usage.vehicles >= limits.vehicles:
        return Decision("refuse", reason=f"the server keeps reports of {limits.vehicles} vehicles")
    drop = min(excess(stored, limits), len(oldest))
    freed = sum(oldest[:drop])
    if usage.total_bytes + size - freed > limits.total_bytes:
        return Decision("refuse", reason=f"the report store is full ({limits.total_bytes} bytes)")
    return Decision("store", drop=drop, freed=freed)


# -- the old JSON-lines store, read once for its import ----------------------------------------


@dataclass(frozen=True)
class LoggedReport:
    report: Report
    received: float  # seconds since the epoch, on the server's clock


@dataclass(frozen=True)
class LogContents:
    reports: tuple[LoggedReport, ...]  # oldest first, each id once
    skipped: int = 0  # lines that could not be read


def parse_log(data: bytes, vehicle: str) -> LogContents:
    """The readable reports of ``vehicle`` in one old log; other lines are skipped."""
    reports: list[LoggedReport] = []
    skipped = 0
    seen: set[str] = set()
    for line in data.splitlines(keepends=True):
        if not line.strip():
            continue
        logged = _parse_line(line)
        if logged is None or logged.report.id in seen or logged.report.vehicle_id != vehicle:
            skipped += 1
            continue
        seen.add(logged.report.id)
        reports.append(logged)
    return LogContents(tuple(reports), skipped)


def _parse_line(line: bytes) -> LoggedReport | None:
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
        if not 0 <= received < MAX_RECEIVED:
            return None
        report = Report.from_dict(fields)
    except (FormatError, MetadataFormatError):
        return None
    return LoggedReport(report, float(received))
