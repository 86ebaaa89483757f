"""The fleet database's tables (SQLAlchemy 2 typed declarative models): vehicles, ECUs, events.

One schema for SQLite and PostgreSQL (DESIGN §6), so only portable types: strings with a
length, integers, booleans, ``JSON`` and timestamps that are always timezone-aware UTC
(``UtcDateTime``: SQLite keeps no time zone, PostgreSQL's ``timestamptz`` does; both read back
as aware UTC). Lengths follow the shared identifier rules (``ota_client.metadata.names``: 64
characters; target paths 255). Constraint names come from one naming convention, so a
migration can always name what it alters.

The inventory (``vehicles``, ``ecus``) is filled by provisioning; ``assignments`` and
``director_metadata`` are the Director's (what each vehicle is assigned, and its signed
metadata). ``events.vin``
is deliberately not a foreign key yet: reports arrive from vehicles that are not provisioned
(nor authenticated) until a later step. The models hold no behaviour; queries live in the
modules that use them (``fleet.events``). ``migrations/`` must create exactly these tables
(``tests/test_fleet_db.py`` compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

IDENTIFIER = 64  # vehicle ids, ECU serials, hardware ids (ota_client.metadata.names)
TARGET_PATH = 255
HEX_DIGEST = 64  # sha256 and key ids, hex
REPORT_ID = 64  # reports use 32 hex digits today
EVENT_KIND = 32
ATTACK = 256  # an ECU's attacks_detected text
ACTOR = 128  # who made a change: 'cli', 'token:<name>', 'rollout:<id>'

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is written and read as an aware UTC ``datetime`` on every backend.

    Naive datetimes are refused: a time without a zone is a bug waiting for a server in
    another zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("fleet database timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
    }


class Vehicle(Base):
    __tablename__ = "vehicles"

    vin: Mapped[str] = mapped_column(String(IDENTIFIER), primary_key=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    # The serial of the TLS client certificate issued at provisioning (hex, up to 20 octets).
    cert_serial: Mapped[str | None] = mapped_column(String(HEX_DIGEST))
    tags: Mapped[dict[str, str]] = mapped_column(JSON(), default=dict)
    # The counter of the last vehicle manifest accepted (each must be higher: no replays).
    manifest_counter: Mapped[int | None] = mapped_column(BigInteger())
    last_manifest_at: Mapped[datetime | None]


class Ecu(Base):
    __tablename__ = "ecus"

    serial: Mapped[str] = mapped_column(String(IDENTIFIER), primary_key=True)  # fleet-unique
    vin: Mapped[str] = mapped_column(ForeignKey("vehicles.vin"), index=True)
    hardware_id: Mapped[str] = mapped_column(String(IDENTIFIER))
    is_primary: Mapped[bool]
    public_key: Mapped[dict[str, Any]]  # securesystemslib key dict: keytype, scheme, keyval
    keyid: Mapped[str] = mapped_column(String(HEX_DIGEST))
    # The installed image as last reported in a signed version report.
    installed_target: Mapped[str | None] = mapped_column(String(TARGET_PATH))
    installed_length: Mapped[int | None] = mapped_column(BigInteger())
    installed_sha256: Mapped[str | None] = mapped_column(String(HEX_DIGEST))
    release_counter: Mapped[int | None] = mapped_column(BigInteger())
    reported_at: Mapped[datetime | None]
    # The counter of its last accepted signed version report (each must be higher).
    report_counter: Mapped[int | None] = mapped_column(BigInteger())
    attacks_detected: Mapped[str | None] = mapped_column(String(ATTACK))


class Event(Base):
    """One stored vehicle report. ``(vin, report_id)`` is unique: a resent report (same id)
    fails the insert, atomically, whichever server process stores it first."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("vin", "report_id"),
        # A vehicle's reports in order: listing them, dropping the oldest.
        Index("ix_events_vin_id", "vin", "id"),
    )

    # BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incremented rowid.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    vin: Mapped[str] = mapped_column(String(IDENTIFIER))  # not a foreign key yet (see above)
    report_id: Mapped[str] = mapped_column(String(REPORT_ID))
    ecu: Mapped[str | None] = mapped_column(String(IDENTIFIER))
    kind: Mapped[str] = mapped_column(String(EVENT_KIND))  # commit, rollback, …
    received_at: Mapped[datetime]
    body: Mapped[dict[str, Any]]  # the report as stored (Report.to_dict())
    size: Mapped[int] = mapped_column(Integer())  # bytes of ``body`` as JSON: what the caps count


class AssignmentRow(Base):
    """The release the Director assigns a vehicle (at most one; none: keep what it runs)."""

    __tablename__ = "assignments"

    vin: Mapped[str] = mapped_column(ForeignKey("vehicles.vin"), primary_key=True)
    bundle: Mapped[str] = mapped_column(String(IDENTIFIER))
    version: Mapped[str] = mapped_column(String(IDENTIFIER))
    assigned_at: Mapped[datetime]
    assigned_by: Mapped[str] = mapped_column(String(ACTOR))


class DirectorMetadata(Base):
    """A vehicle's signed Director targets, snapshot and timestamp, as served (``director.sign``).

    ``version`` numbers all three; an update is made only from the version it replaces
    (``WHERE version = old``), so two servers re-signing one vehicle never go backwards."""

    __tablename__ = "director_metadata"

    vin: Mapped[str] = mapped_column(ForeignKey("vehicles.vin"), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger())
    targets: Mapped[bytes] = mapped_column(LargeBinary())
    snapshot: Mapped[bytes] = mapped_column(LargeBinary())
    timestamp: Mapped[bytes] = mapped_column(LargeBinary())
    signed_at: Mapped[datetime]
    content: Mapped[str] = mapped_column(String(HEX_DIGEST))
    root_version: Mapped[int] = mapped_column(Integer())


class Token(Base):
    """An operator's API token: only the sha256 of its secret is kept (``fleet.tokens``)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    name: Mapped[str] = mapped_column(String(IDENTIFIER), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    secret_sha256: Mapped[str] = mapped_column(String(HEX_DIGEST))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
