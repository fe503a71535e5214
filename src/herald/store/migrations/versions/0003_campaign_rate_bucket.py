"""campaigns.rate_tokens, rate_at: a cluster-wide send rate limit (expand only).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("rate_tokens", sa.Float(), nullable=True))
    op.add_column("campaigns", sa.Column("rate_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("rate_at")
        batch.drop_column("rate_tokens")
