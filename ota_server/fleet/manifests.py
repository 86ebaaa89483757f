"""Accepting a vehicle's signed version manifest: every signature against the inventory.

What a vehicle says it runs is believed only when the primary's signature over the manifest
and each ECU's signature over its own report verify with the keys recorded at provisioning,
every ECU named is one of *this* vehicle's, and each report's counter is higher than the last
one accepted from that ECU (a replayed or stale report is refused). Then each ECU's installed
image (with its release counter from the Image repository, when it is one of its images) and
any attack it reports are stored, in the caller's transaction. Refusals are ``InputError``s
with one line that says which check failed; nothing is stored then.
"""

from __future__ import annotations

import logging
from datetime import datetime

from securesystemslib.signer import Key, SSlibKey
from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from ota_client.metadata import MetadataFormatError
from ota_client.metadata.manifest import (
    MAX_MANIFEST_BYTES,
    parse_ecu_report,
    parse_vehicle_manifest,
    verify,
)
from ota_client.strict import FormatError, parse_json
from ota_server.errors import InputError, RevokedError
from ota_server.fleet import inventory
from ota_server.fleet.schema import Ecu, Vehicle
from ota_server.repository.catalog import Catalog

log = logging.getLogger("ota.fleet")


def _key(ecu: Ecu) -> Key:
    try:
        return SSlibKey.from_dict(ecu.keyid, dict(ecu.public_key))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"the inventory's key of ECU {ecu.serial} is damaged: {e}") from None


async def accept_manifest(
    session: AsyncSession, vin: str, body: bytes, catalog: Catalog, now: datetime
) -> int:
    """Verify and store a manifest; returns the number of ECU reports stored."""
    vehicle = await inventory.require(session, vin)
    if vehicle.revoked:
        raise RevokedError(f"vehicle {vin} is revoked")
    ecus = {e.serial: e for e in vehicle.ecus}
    primary = next((e for e in vehicle.ecus if e.is_primary), None)
    if primary is None:
        raise InputError(f"vehicle {vin} has no primary ECU in the inventory")
    try:
        envelope = parse_json(body, "the manifest", limit=MAX_MANIFEST_BYTES)
        if not isinstance(envelope, dict):
            raise MetadataFormatError("the manifest must be an object")
        manifest = parse_vehicle_manifest(verify(envelope, _key(primary), "the manifest"))
        if manifest.vin != vin:
            raise MetadataFormatError(f"the manifest is for vehicle {manifest.vin}, not {vin}")
        if manifest.primary != primary.serial:
            raise MetadataFormatError(f"{manifest.primary} is not the primary ECU of {vin}")
        reports = []
        for serial, signed_report in manifest.reports.items():
            ecu = ecus.get(serial)
            if ecu is None:
                raise MetadataFormatError(f"{serial} is not an ECU of {vin}")
            report = parse_ecu_report(verify(signed_report, _key(ecu), f"the report of {serial}"))
            if report.serial != serial:
                raise MetadataFormatError(f"the report filed under {serial} is {report.serial}'s")
            if ecu.report_counter is not None and report.counter <= ecu.report_counter:
                raise MetadataFormatError(
                    f"the report of {serial} is replayed or stale (counter {report.counter}, "
                    f"last {ecu.report_counter})"
                )
            reports.append(report)
    except (FormatError, MetadataFormatError) as e:
        raise InputError(f"manifest refused: {e}") from None
    for report in reports:
        image = report.installed
        entry = None if image is None else catalog.entries.get(image.path)
        counter = None
        if entry is not None and image is not None and entry.hashes.get("sha256") == image.sha256:
            counter = entry.custom.release_counter
        if report.attack:
            log.warning("%s: ECU %s reports an attack: %s", vin, report.serial, report.attack)
        result = await session.execute(
            update(Ecu)
            .where(  # atomic with the check above, whichever server gets a replay first
                Ecu.serial == report.serial,
                or_(Ecu.report_counter.is_(None), Ecu.report_counter < report.counter),
            )
            .values(
                installed_target=None if image is None else image.path,
                installed_length=None if image is None else image.length,
                installed_sha256=None if image is None else image.sha256,
                release_counter=counter,
                reported_at=now,
                report_counter=report.counter,
                attacks_detected=report.attack or None,
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise InputError(f"manifest refused: the report of {report.serial} is stale")
    await session.execute(update(Vehicle).where(Vehicle.vin == vin).values(last_manifest_at=now))
    return len(reports)
