"""The Director: each vehicle's assignment and its signed metadata; ECU report counters;
operators' API tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _vin() -> sa.Column[str]:
    return sa.Column("vin", sa.String(64), nullable=False)


def upgrade() -> None:
    op.add_column("ecus", sa.Column("report_counter", sa.BigInteger(), nullable=True))
    op.add_column("ecus", sa.Column("attacks_detected", sa.String(256), nullable=True))
    op.create_table(
        "assignments",
        _vin(),
        sa.Column("bundle", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assigned_by", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["vin"], ["vehicles.vin"], name=op.f("fk_assignments_vin_vehicles")
        ),
        sa.PrimaryKeyConstraint("vin", name=op.f("pk_assignments")),
    )
    op.create_table(
        "director_metadata",
        _vin(),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("targets", sa.LargeBinary(), nullable=False),
        sa.Column("snapshot", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp", sa.LargeBinary(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", sa.String(64), nullable=False),
        sa.Column("root_version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vin"], ["vehicles.vin"], name=op.f("fk_director_metadata_vin_vehicles")
        ),
        sa.PrimaryKeyConstraint("vin", name=op.f("pk_director_metadata")),
    )

    op.create_table(
        "tokens",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_tokens_name")),
    )


def downgrade() -> None:
    op.drop_table("tokens")
    op.drop_table("director_metadata")
    op.drop_table("assignments")
    with op.batch_alter_table("ecus") as batch:
        batch.drop_column("attacks_detected")
        batch.drop_column("report_counter")
