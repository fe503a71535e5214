"""maintenance: tracking roll-ups into daily counts and unique deliveries (expand only).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "tracking_daily",
        sa.Column("id", id_type, autoincrement=True, nullable=False),
        sa.Column("campaign_id", id_type, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("url", sa.Text(), nullable=False, server_default=""),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_daily")),
    )
    op.create_index(
        op.f("ix_tracking_daily_campaign_id_kind_day"),
        "tracking_daily",
        ["campaign_id", "kind", "day"],
    )
    op.create_table(
        "tracking_uniques",
        sa.Column("campaign_id", id_type, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("delivery_id", id_type, nullable=False),
        sa.PrimaryKeyConstraint(
            "campaign_id", "kind", "delivery_id", name=op.f("pk_tracking_uniques")
        ),
    )


def downgrade() -> None:
    op.drop_table("tracking_uniques")
    op.drop_index(op.f("ix_tracking_daily_campaign_id_kind_day"), table_name="tracking_daily")
    op.drop_table("tracking_daily")
