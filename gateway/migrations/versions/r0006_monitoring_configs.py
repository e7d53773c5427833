"""Versions of the monitoring configuration: one row per version, never changed once written.

Revision ID: 0006
Revises: 0004

Written out rather than created from the live metadata, so a later change to
`gateway.db.monitoring_configs` needs a revision of its own. Constraint names follow
`gateway.db.NAMING_CONVENTION`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# gateway.db.UtcDateTime stores through this type; the DDL is the same.
TIMESTAMP = sa.DateTime(timezone=True)

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitoring_configs",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("config_digest", sa.String(64), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_monitoring_configs"),
        sa.CheckConstraint("version >= 1", name="ck_monitoring_configs_version_positive"),
    )


def downgrade() -> None:
    op.drop_table("monitoring_configs")
