"""public: public lists, consents, unsubscribe reasons, transactional deliveries (expand only).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    # Tables in the order a claim locks them (campaigns, deliveries, then the
    # subscriber tables): the other order deadlocks with the senders of a
    # rolling upgrade (docs/upgrading.md).
    op.add_column(
        "campaigns",
        sa.Column("kind", sa.String(length=16), nullable=False, server_default="campaign"),
    )
    op.add_column("deliveries", sa.Column("data", sa.JSON(), nullable=True))
    op.add_column("deliveries", sa.Column("tx_campaign_id", id_type, nullable=True))
    op.add_column(
        "lists", sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_table(
        "consents",
        sa.Column("id", id_type, autoincrement=True, nullable=False),
        sa.Column("subscriber_id", id_type, nullable=False),
        sa.Column("list_id", id_type, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_consents_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    op.create_index(
        op.f("ix_consents_subscriber_id_list_id"), "consents", ["subscriber_id", "list_id"]
    )
    op.create_table(
        "unsubscribes",
        sa.Column("id", id_type, autoincrement=True, nullable=False),
        sa.Column("subscriber_id", id_type, nullable=False),
        sa.Column("campaign_id", id_type, nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unsubscribes")),
    )
    op.create_index(op.f("ix_unsubscribes_campaign_id"), "unsubscribes", ["campaign_id"])
    op.create_table(
        "public_throttle",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_public_throttle")),
    )


def downgrade() -> None:
    op.drop_table("public_throttle")
    op.drop_index(op.f("ix_unsubscribes_campaign_id"), table_name="unsubscribes")
    op.drop_table("unsubscribes")
    op.drop_index(op.f("ix_consents_subscriber_id_list_id"), table_name="consents")
    op.drop_table("consents")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("tx_campaign_id")
        batch.drop_column("data")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("lists") as batch:
        batch.drop_column("public")
