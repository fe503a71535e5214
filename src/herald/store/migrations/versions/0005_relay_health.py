"""relay health: recent latency and when the breaker state last changed (expand only).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("relays", sa.Column("latency_ms", sa.Float(), nullable=True))
    op.add_column("relays", sa.Column("state_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("relays") as batch:
        batch.drop_column("state_at")
        batch.drop_column("latency_ms")
