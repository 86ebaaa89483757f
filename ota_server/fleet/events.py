"""Vehicle reports in the fleet database (``events``): store each once, list a vehicle's.

The shell around ``report_policy``. Storing a report is one transaction that starts with its
insert: the unique (vin, report_id) constraint answers "duplicate" atomically, whichever server
process got the report first (and on SQLite, starting with the write makes the transaction wait
for the write lock instead of failing). Then the vehicle's count and its oldest reports are read,
the policy decides, and the transaction either drops the oldest beyond the cap and commits, or
rolls back: a refused report leaves nothing behind.

The store-wide totals (vehicles, bytes) cost a scan of the table, so ``UsageMeter`` recounts
them at most every ``RECOUNT_SECONDS`` and adds this process's own changes in between: with
several servers on one database the store-wide caps are approximate by what the others stored
since the last count (they protect the disk; the per-vehicle cap is read on every report).

Every database failure is one ``DatabaseError`` (the HTTP layer answers 503).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ota_client.metadata.reports import Report
from ota_server.fleet.db import Database
from ota_server.fleet.report_policy import ReportLimits, Usage, decide, excess, stored_size
from ota_server.fleet.schema import Event

RECOUNT_SECONDS = 30.0


@dataclass(frozen=True)
class Added:
    action: Literal["stored", "duplicate", "refused"]
    reason: str = ""
    new_vehicle: bool = False
    grown: int = 0  # bytes the store grew by (negative when it dropped more than it added)


# -- queries (inside the caller's transaction) --------------------------------------------------


async def add_report(
    session: AsyncSession,
    report: Report,
    *,
    received: datetime,
    usage: Usage,
    limits: ReportLimits,
) -> Added:
    """Store ``report`` unless it is a duplicate or the caps refuse it; the caller commits
    when the answer is "stored" and rolls back otherwise."""
    body = report.to_dict()
    size = stored_size(body)
    try:
        await session.execute(
            insert(Event).values(
                vin=report.vehicle_id,
                report_id=report.id,
                ecu=report.ecu,
                kind=report.event,
                received_at=received,
                body=body,
                size=size,
            )
        )
    except IntegrityError:
        return Added("duplicate")
    count = select(func.count()).where(Event.vin == report.vehicle_id)
    stored = (await session.execute(count)).scalar_one() - 1
    oldest: Sequence[tuple[int, int]] = []
    if drop := excess(stored, limits):
        oldest = [
            (i, s)
            for i, s in await session.execute(
                select(Event.id, Event.size)
                .where(Event.vin == report.vehicle_id, Event.report_id != report.id)
                .order_by(Event.id)
                .limit(drop)
            )
        ]
    decision = decide(
        size=size, stored=stored, oldest=[s for _, s in oldest], usage=usage, limits=limits
    )
    if decision.action == "refuse":
        return Added("refused", decision.reason)
    if decision.drop:
        await session.execute(
            delete(Event).where(Event.id.in_([i for i, _ in oldest[: decision.drop]]))
        )
    return Added("stored", new_vehicle=stored == 0, grown=size - decision.freed)


async def vehicle_records(session: AsyncSession, vin: str, limit: int) -> list[dict[str, Any]]:
    """The vehicle's newest ``limit`` reports, oldest first, each with the time it arrived."""
    rows = (
        await session.execute(
            select(Event.body, Event.received_at)
            .where(Event.vin == vin)
            .order_by(Event.id.desc())
            .limit(limit)
        )
    ).all()
    return [{**body, "received": received.timestamp()} for body, received in reversed(rows)]


async def count_usage(session: AsyncSession) -> Usage:
    row = (
        await session.execute(
            select(func.count(func.distinct(Event.vin)), func.coalesce(func.sum(Event.size), 0))
        )
    ).one()
    return Usage(vehicles=int(row[0]), total_bytes=int(row[1]))


# -- the store the app holds ---------------------------------------------------------------------


@dataclass
class UsageMeter:
    """The store-wide totals, recounted every ``every`` seconds (see the module docstring)."""

    every: float = RECOUNT_SECONDS
    _usage: Usage | None = None
    _counted: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def current(self, database: Database) -> Usage:
        async with self._lock:
            if self._usage is None or time.monotonic() - self._counted >= self.every:
                async with database.reaching(), database.sessions() as session:
                    self._usage = await count_usage(session)
                self._counted = time.monotonic()
            return self._usage

    def add(self, added: Added) -> None:
        if self._usage is not None and added.action == "stored":
            self._usage = Usage(
                self._usage.vehicles + added.new_vehicle,
                max(0, self._usage.total_bytes + added.grown),
            )


@dataclass
class EventStore:
    """Vehicle reports of one database, under ``limits``."""

    database: Database
    limits: ReportLimits = field(default_factory=ReportLimits)
    meter: UsageMeter = field(default_factory=UsageMeter)

    async def add(self, report: Report, received: datetime) -> Added:
        usage = await self.meter.current(self.database)
        async with self.database.reaching(), self.database.sessions() as session:
            added = await add_report(
                session, report, received=received, usage=usage, limits=self.limits
            )
            if added.action == "stored":
                await session.commit()
            else:
                await session.rollback()
        self.meter.add(added)
        return added

    async def records(self, vin: str) -> Sequence[dict[str, Any]]:
        async with self.database.reaching(), self.database.sessions() as session:
            return await vehicle_records(session, vin, self.limits.per_vehicle)
