"""api: CSV imports run through the API, their error rows, and complaints (expand only).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    count = sa.BigInteger()
    op.create_table(
        "imports",
        sa.Column("id", id_type, autoincrement=True, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("list_ids", sa.JSON(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False, server_default=""),
        sa.Column("node", sa.String(length=255), nullable=False),
        *(
            sa.Column(name, count, nullable=False, server_default="0")
            for name in ("rows", "added", "updated", "skipped", "errors", "bytes_read")
        ),
        sa.Column("bytes_total", count, nullable=True),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imports")),
    )
    op.create_table(
        "import_errors",
        sa.Column("import_id", id_type, nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["imports.id"],
            name=op.f("fk_import_errors_import_id_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("import_id", "line", name=op.f("pk_import_errors")),
    )
    op.create_table(
        "complaints",
        sa.Column("id", id_type, autoincrement=True, nullable=False),
        sa.Column("delivery_id", id_type, nullable=False),
        sa.Column("campaign_id", id_type, nullable=True),
        sa.Column("subscriber_id", id_type, nullable=True),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_complaints")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_complaints_delivery_id")),
    )
    op.create_index(op.f("ix_complaints_at"), "complaints", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_complaints_at"), table_name="complaints")
    op.drop_table("complaints")
    op.drop_table("import_errors")
    op.drop_table("imports")
