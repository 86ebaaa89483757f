"""The Director's shell: assignments in the fleet database, each vehicle's signed metadata.

``assign`` is the primitive that operators and rollouts use: the release must be published,
fit the vehicle's ECUs and move no release counter backwards (``director.assign``), checked
before the row is written. ``vehicle_metadata`` is what a poll gets: the vehicle's assignment
planned against what its ECUs last reported, signed again only when that content, the root
or the expiry calls for it (``director.sign``), and stored — an update is made only from the
version it replaces, so two servers never store versions out of order.

``ImageCatalog`` reads the Image repository's releases from its signed metadata and reloads
them only when its timestamp changes; ``DirectorKeys`` holds the Director's root (reloaded
when a new root version appears) and its online signing keys.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import Root

from ota_client.metadata.assignment import Assignment
from ota_server.director.assign import plan_assignment
from ota_server.director.sign import SignedVehicle, sign_vehicle
from ota_server.errors import InputError, RevokedError
from ota_server.fleet import inventory
from ota_server.fleet.schema import AssignmentRow, DirectorMetadata
from ota_server.repository.catalog import Catalog, Release
from ota_server.repository.home import RepositoryHome
from ota_server.repository.signing import RoleSigning
from ota_server.repository.store import FileRepository, latest_root, root_versions

log = logging.getLogger("ota.director")


class ImageCatalog:
    """The Image repository's releases, as of its current timestamp (blocking reads)."""

    def __init__(self, home: RepositoryHome) -> None:
        self.home = home
        self._key: tuple[int, int] | None = None
        self._catalog = Catalog()
        self._releases: dict[tuple[str, str], Release] = {}

    def current(self) -> Catalog:
        st = os.stat(self.home.files.metadata / "timestamp.json")
        key = (st.st_mtime_ns, st.st_size)
        if key != self._key:
            repo = FileRepository.load(self.home, datetime.now(UTC))
            self._catalog = Catalog.from_targets(repo.all_targets())
            self._releases = {(r.bundle, r.version): r for r in self._catalog.releases()}
            self._key = key
        return self._catalog

    def release(self, bundle: str, version: str) -> Release | None:
        self.current()
        return self._releases.get((bundle, version))


class DirectorKeys:
    def __init__(self, home: RepositoryHome) -> None:
        self.home = home
        self.signing = RoleSigning(home.keys)
        self._root: Root | None = None

    def check_online_keys(self) -> None:
        """Load the online roles' signers now (KeyStoreError if they cannot be)."""
        root = self.root()
        for role in ("targets", "snapshot", "timestamp"):
            self.signing.require(role, root)

    def root(self) -> Root:
        newest = root_versions(self.home.files.metadata)[-1:]
        if self._root is None or [self._root.version] != newest:
            self._root = latest_root(self.home.files)
        return self._root


def parse_release(text: str) -> tuple[str, str]:
    bundle, at, version = text.partition("@")
    if not (at and bundle and version):
        raise InputError(f"{text[:80]!r}: name a release as BUNDLE@VERSION")
    return bundle, version


async def assign(
    session: AsyncSession,
    catalog: ImageCatalog,
    vin: str,
    release_name: str,
    *,
    actor: str,
    now: datetime,
) -> Assignment:
    """Assign a published release to a vehicle (replacing any earlier assignment)."""
    bundle, version = parse_release(release_name)
    vehicle = await inventory.require(session, vin)
    if vehicle.revoked:
        raise RevokedError(f"vehicle {vin} is revoked")
    release = catalog.release(bundle, version)
    if release is None:
        raise InputError(f"no release {bundle}@{version} in the Image repository")
    planned = plan_assignment(vin, vehicle.inventory(), release)
    row = vehicle.assignment
    values = {"bundle": bundle, "version": version, "assigned_at": now, "assigned_by": actor}
    if row is None:
        await session.execute(insert(AssignmentRow).values(vin=vin, **values))
    else:
        await session.execute(update(AssignmentRow).where(AssignmentRow.vin == vin).values(values))
    return planned


async def unassign(session: AsyncSession, vin: str) -> bool:
    vehicle = await inventory.require(session, vin)
    if vehicle.assignment is None:
        return False
    await session.delete(vehicle.assignment)
    return True


def _content(vehicle: inventory.VehicleView, catalog: ImageCatalog) -> Assignment:
    row = vehicle.assignment
    if row is None:
        return Assignment(vehicle.vin)
    release = catalog.release(row.bundle, row.version)
    if release is None:
        log.warning(
            "%s: release %s@%s is no longer published", vehicle.vin, row.bundle, row.version
        )
        return Assignment(vehicle.vin)
    try:
        return plan_assignment(vehicle.vin, vehicle.inventory(), release)
    except InputError as e:  # e.g. an ECU reported a newer image since it was assigned
        log.warning("%s: nothing assigned: %s", vehicle.vin, e)
        return Assignment(vehicle.vin)


@dataclass(frozen=True)
class Poll:
    vehicle: inventory.VehicleView
    signed: SignedVehicle


async def vehicle_metadata(
    session: AsyncSession,
    keys: DirectorKeys,
    catalog: ImageCatalog,
    vin: str,
    now: datetime,
) -> Poll | None:
    """The vehicle's current Director metadata (signed and stored if need be); None if the
    vehicle is unknown."""
    vehicle = await inventory.vehicle(session, vin)
    if vehicle is None:
        return None
    row = await session.get(DirectorMetadata, vin)
    previous = None if row is None else _signed(row)
    signed = sign_vehicle(
        _content(vehicle, catalog), previous, keys.root(), keys.signing, keys.home.policy, now
    )
    if signed is previous:
        return Poll(vehicle, signed)
    values = {
        "version": signed.version,
        "targets": signed.targets,
        "snapshot": signed.snapshot,
        "timestamp": signed.timestamp,
        "signed_at": signed.signed_at,
        "content": signed.content,
        "root_version": signed.root_version,
    }
    try:
        if row is None:
            await session.execute(insert(DirectorMetadata).values(vin=vin, **values))
            stored = True
        else:
            result = await session.execute(
                update(DirectorMetadata)
                .where(DirectorMetadata.vin == vin, DirectorMetadata.version == row.version)
                .values(values)
            )
            stored = result.rowcount == 1  # type: ignore[attr-defined]
    except IntegrityError:
        stored = False
    if not stored:  # another server stored a version first: serve that one
        await session.rollback()
        fresh = await session.get(DirectorMetadata, vin, populate_existing=True)
        assert fresh is not None
        return Poll(vehicle, _signed(fresh))
    await session.commit()
    return Poll(vehicle, signed)


def _signed(row: DirectorMetadata) -> SignedVehicle:
    return SignedVehicle(
        version=row.version,
        targets=row.targets,
        snapshot=row.snapshot,
        timestamp=row.timestamp,
        signed_at=row.signed_at,
        content=row.content,
        root_version=row.root_version,
    )
