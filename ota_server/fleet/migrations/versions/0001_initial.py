"""The fleet inventory (vehicles, ECUs) and vehicle events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "vehicles",
        sa.Column("vin", sa.String(64), nullable=False),
        _time("created_at", nullable=False),
        _time("revoked_at", nullable=True),
        sa.Column("cert_serial", sa.String(64), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("manifest_counter", sa.BigInteger(), nullable=True),
        _time("last_manifest_at", nullable=True),
        sa.PrimaryKeyConstraint("vin", name=op.f("pk_vehicles")),
    )
    op.create_table(
        "ecus",
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("vin", sa.String(64), nullable=False),
        sa.Column("hardware_id", sa.String(64), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("public_key", sa.JSON(), nullable=False),
        sa.Column("keyid", sa.String(64), nullable=False),
        sa.Column("installed_target", sa.String(255), nullable=True),
        sa.Column("installed_length", sa.BigInteger(), nullable=True),
        sa.Column("installed_sha256", sa.String(64), nullable=True),
        sa.Column("release_counter", sa.BigInteger(), nullable=True),
        _time("reported_at", nullable=True),
        sa.ForeignKeyConstraint(["vin"], ["vehicles.vin"], name=op.f("fk_ecus_vin_vehicles")),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_ecus")),
    )
    op.create_index(op.f("ix_ecus_vin"), "ecus", ["vin"])
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("vin", sa.String(64), nullable=False),
        sa.Column("report_id", sa.String(64), nullable=False),
        sa.Column("ecu", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        _time("received_at", nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("vin", "report_id", name=op.f("uq_events_vin_report_id")),
    )
    op.create_index(op.f("ix_events_vin_id"), "events", ["vin", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_events_vin_id"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_ecus_vin"), table_name="ecus")
    op.drop_table("ecus")
    op.drop_table("vehicles")
