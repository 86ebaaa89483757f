"""The fleet inventory in the database: vehicles, their ECUs and ECU keys (Uptane's inventory).

Queries over ``fleet.schema`` inside the caller's session; the caller commits. Registering is
all or nothing: a VIN or an ECU serial that is already known refuses the whole batch, with the
first clash named, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ota_server.director.assign import EcuInventory, Installed
from ota_server.errors import InputError
from ota_server.fleet.provision import EcuKey, VehicleSpec
from ota_server.fleet.schema import AssignmentRow, Ecu, Vehicle

BATCH = 500  # rows per INSERT (and per IN (...) lookup)


@dataclass(frozen=True)
class Registration:
    vehicle: VehicleSpec
    keys: Sequence[EcuKey]
    cert_serial: str


async def register(session: AsyncSession, batch: Sequence[Registration], now: datetime) -> None:
    vins = [r.vehicle.vin for r in batch]
    serials = [e.serial for r in batch for e in r.vehicle.ecus]
    for start in range(0, len(vins), BATCH):
        known = (
            (
                await session.execute(
                    select(Vehicle.vin).where(Vehicle.vin.in_(vins[start : start + BATCH]))
                )
            )
            .scalars()
            .first()
        )
        if known is not None:
            raise InputError(f"vehicle {known} is already provisioned")
    for start in range(0, len(serials), BATCH):
        known = (
            (
                await session.execute(
                    select(Ecu.serial).where(Ecu.serial.in_(serials[start : start + BATCH]))
                )
            )
            .scalars()
            .first()
        )
        if known is not None:
            raise InputError(f"an ECU with serial {known} is already provisioned")
    vehicles = [
        {"vin": r.vehicle.vin, "created_at": now, "cert_serial": r.cert_serial, "tags": {}}
        for r in batch
    ]
    ecus = []
    for r in batch:
        keys = {k.serial: k for k in r.keys}
        for ecu in r.vehicle.ecus:
            key = keys[ecu.serial]
            ecus.append(
                {
                    "serial": ecu.serial,
                    "vin": r.vehicle.vin,
                    "hardware_id": ecu.hardware_id,
                    "is_primary": ecu.primary,
                    "public_key": key.public,
                    "keyid": key.keyid,
                }
            )
    for start in range(0, len(vehicles), BATCH):
        await session.execute(insert(Vehicle), vehicles[start : start + BATCH])
    for start in range(0, len(ecus), BATCH):
        await session.execute(insert(Ecu), ecus[start : start + BATCH])


@dataclass(frozen=True)
class VehicleView:
    vin: str
    created_at: datetime
    revoked_at: datetime | None
    ecus: tuple[Ecu, ...]
    assignment: AssignmentRow | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict[str, Any]:
        """What ``ota vehicle show --json`` and ``GET /api/v1/vehicles/<VIN>`` say of it."""
        a = self.assignment
        return {
            "vin": self.vin,
            "created": self.created_at.isoformat(),
            "revoked": self.revoked_at.isoformat() if self.revoked_at else None,
            "assignment": None if a is None else f"{a.bundle}@{a.version}",
            "ecus": [
                {
                    "serial": e.serial,
                    "hardware_id": e.hardware_id,
                    "primary": e.is_primary,
                    "keyid": e.keyid,
                    "installed": e.installed_target,
                    "release_counter": e.release_counter,
                    "reported": e.reported_at.isoformat() if e.reported_at else None,
                    "attacks_detected": e.attacks_detected,
                }
                for e in self.ecus
            ],
        }

    def inventory(self) -> list[EcuInventory]:
        return [
            EcuInventory(
                e.serial,
                e.hardware_id,
                None
                if e.installed_target is None
                or e.installed_length is None
                or e.installed_sha256 is None
                else Installed(
                    e.installed_target,
                    e.installed_length,
                    e.installed_sha256,
                    e.release_counter or 0,
                ),
            )
            for e in self.ecus
        ]


async def vehicle(session: AsyncSession, vin: str) -> VehicleView | None:
    row = await session.get(Vehicle, vin)
    if row is None:
        return None
    ecus = (await session.execute(select(Ecu).where(Ecu.vin == vin).order_by(Ecu.serial))).scalars()
    assignment = await session.get(AssignmentRow, vin)
    return VehicleView(row.vin, row.created_at, row.revoked_at, tuple(ecus), assignment)


async def require(session: AsyncSession, vin: str) -> VehicleView:
    found = await vehicle(session, vin)
    if found is None:
        raise InputError(f"no vehicle {vin} (ota vehicle provision registers one)")
    return found


async def vehicles(
    session: AsyncSession, *, after: str = "", limit: int = 1000
) -> list[tuple[str, datetime, datetime | None, int]]:
    """(vin, created, revoked, ECU count) in VIN order, ``limit`` from after ``after``."""
    query = (
        select(Vehicle.vin, Vehicle.created_at, Vehicle.revoked_at, func.count(Ecu.serial))
        .outerjoin(Ecu, Ecu.vin == Vehicle.vin)
        .where(Vehicle.vin > after)
        .group_by(Vehicle.vin, Vehicle.created_at, Vehicle.revoked_at)
        .order_by(Vehicle.vin)
        .limit(limit)
    )
    return [tuple(row) for row in (await session.execute(query)).all()]  # type: ignore[misc]


async def revoke(session: AsyncSession, vin: str, now: datetime) -> bool:
    """Refuse the vehicle from now on; False if it was revoked already."""
    view = await require(session, vin)
    if view.revoked:
        return False
    await session.execute(update(Vehicle).where(Vehicle.vin == vin).values(revoked_at=now))
    return True
