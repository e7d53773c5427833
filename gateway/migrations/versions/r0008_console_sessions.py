"""The console's server-side sessions: one row per signed-in browser, keyed by the SHA-256 of its cookie.

Revision ID: 0008
Revises: 0007 (the jobs, schedules and archive)

Written out rather than created from the live metadata, so a later change to
`gateway.db.console_sessions` needs a revision of its own. Constraint names follow
`gateway.db.NAMING_CONVENTION`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# gateway.db.UtcDateTime stores through this type; the DDL is the same.
TIMESTAMP = sa.DateTime(timezone=True)

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("principal_id", sa.String(32), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_console_sessions"),
        sa.ForeignKeyConstraint(
            ["principal_id"], ["principals.id"], name="fk_console_sessions_principal_id_principals"
        ),
    )
    op.create_index("ix_console_sessions_principal_id", "console_sessions", ["principal_id"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_principal_id", table_name="console_sessions")
    op.drop_table("console_sessions")
