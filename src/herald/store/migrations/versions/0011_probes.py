"""probes: built-in probe results and their hourly roll-ups (expand only).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "probe_results",
        sa.Column("id", id_type, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_results")),
    )
    op.create_index(op.f("ix_probe_results_at"), "probe_results", ["at"])
    op.create_index(
        op.f("ix_probe_results_kind_target_at"), "probe_results", ["kind", "target", "at"]
    )
    op.create_table(
        "probe_hours",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probes", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("buckets", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "target", "hour", name=op.f("pk_probe_hours")),
    )
    op.create_index(op.f("ix_probe_hours_hour"), "probe_hours", ["hour"])


def downgrade() -> None:
    op.drop_index(op.f("ix_probe_hours_hour"), table_name="probe_hours")
    op.drop_table("probe_hours")
    op.drop_index(op.f("ix_probe_results_kind_target_at"), table_name="probe_results")
    op.drop_index(op.f("ix_probe_results_at"), table_name="probe_results")
    op.drop_table("probe_results")
