"""tracking: open and click events, and a per-campaign switch (expand only).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.add_column(
        "campaigns",
        sa.Column("track", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "tracking_events",
        sa.Column("id", id_type, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("delivery_id", id_type, nullable=False),
        sa.Column("campaign_id", id_type, nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_tracking_events_event_id")),
    )
    op.create_index(
        op.f("ix_tracking_events_campaign_id_kind"),
        "tracking_events",
        ["campaign_id", "kind"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_tracking_events_campaign_id_kind"), table_name="tracking_events")
    op.drop_table("tracking_events")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("track")
