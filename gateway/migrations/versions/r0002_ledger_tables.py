"""The federation budget ledger's tables (`privacy.ledger`), as they were at this revision.

Revision ID: 0002
Revises: 0001

Written out rather than created from the live metadata, so a later change to the ledger's tables needs a
revision of its own and this one always creates the same schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_analyst_quotas",
        sa.Column("analyst", sa.String(length=200), nullable=False),
        sa.Column("quota_nano", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("analyst"),
    )
    op.create_table(
        "ledger_dataset_caps",
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("cap_nano", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dataset"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("query_id", sa.String(length=200), nullable=False),
        sa.Column("budget_window", sa.String(length=16), nullable=False),
        sa.Column("analyst", sa.String(length=200), nullable=False),
        sa.Column("epsilon_nano", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("data_arrived", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('reserved', 'charged', 'refunded', 'spent_failed')", name="ck_ledger_entries_state"
        ),
        sa.CheckConstraint("epsilon_nano > 0", name="ck_ledger_entries_epsilon_positive"),
        sa.PrimaryKeyConstraint("query_id"),
    )
    op.create_index(
        "ix_ledger_entries_analyst_window", "ledger_entries", ["analyst", "budget_window"], unique=False
    )
    op.create_index(
        "ix_ledger_entries_window_state", "ledger_entries", ["budget_window", "state"], unique=False
    )
    op.create_table(
        "ledger_windows",
        sa.Column("budget_window", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("budget_window"),
    )
    op.create_table(
        "ledger_entry_datasets",
        sa.Column("query_id", sa.String(length=200), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["query_id"],
            ["ledger_entries.query_id"],
        ),
        sa.PrimaryKeyConstraint("query_id", "dataset"),
    )
    op.create_index("ix_ledger_entry_datasets_dataset", "ledger_entry_datasets", ["dataset"], unique=False)
    op.create_table(
        "ledger_results",
        sa.Column("query_id", sa.String(length=200), nullable=False),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["query_id"],
            ["ledger_entries.query_id"],
        ),
        sa.PrimaryKeyConstraint("query_id"),
    )


def downgrade() -> None:
    op.drop_table("ledger_results")
    op.drop_table("ledger_entry_datasets")
    op.drop_table("ledger_windows")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_dataset_caps")
    op.drop_table("ledger_analyst_quotas")
