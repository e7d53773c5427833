"""The tamper-evident audit log's tables (`audit.store`), as they were at this revision.

Revision ID: 0003
Revises: 0002

Written out rather than created from the live metadata, so a later change to the audit tables needs a
revision of its own and this one always creates the same schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GENESIS_HASH_HEX = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("size", "key_id"),
    )
    op.create_table(
        "audit_entries",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False
        ),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=True),
        sa.Column("query_id", sa.Text(), nullable=True),
        sa.Column("connector", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("audit_entries_action", "audit_entries", ["action", "seq"], unique=False)
    op.create_index("audit_entries_actor", "audit_entries", ["actor", "seq"], unique=False)
    op.create_index("audit_entries_connector", "audit_entries", ["connector", "seq"], unique=False)
    op.create_index("audit_entries_outcome", "audit_entries", ["outcome", "seq"], unique=False)
    op.create_index("audit_entries_query_id", "audit_entries", ["query_id", "seq"], unique=False)
    op.create_index("audit_entries_ts", "audit_entries", ["ts_us", "seq"], unique=False)
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("frontier", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # The head row the appender locks: an empty tree, chained from the genesis hash.
    head = sa.table(
        "audit_head",
        sa.column("id", sa.Integer),
        sa.column("size", sa.BigInteger),
        sa.column("last_hash", sa.String),
        sa.column("frontier", sa.Text),
    )
    op.bulk_insert(head, [{"id": 1, "size": 0, "last_hash": GENESIS_HASH_HEX, "frontier": ""}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_table("audit_entries")
    op.drop_table("audit_checkpoints")
