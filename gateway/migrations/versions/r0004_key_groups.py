"""Named key groups ("X" groups): one row per version of a registered `MemberGroup` definition.

Revision ID: 0004
Revises: 0003

Written out rather than created from the live metadata, so a later change to `gateway.db.key_groups`
needs a revision of its own and this one always creates the same schema. Constraint names follow
`gateway.db.NAMING_CONVENTION`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# gateway.db.UtcDateTime stores through this type; the DDL is the same.
TIMESTAMP = sa.DateTime(timezone=True)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_groups",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("definition_json", sa.Text(), nullable=False),
        sa.Column("definition_digest", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("title_zh", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("retired_at", TIMESTAMP, nullable=True),
        sa.Column("retired_by", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("name", "version", name="pk_key_groups"),
        sa.CheckConstraint("version >= 1", name="ck_key_groups_version_positive"),
        sa.CheckConstraint(
            "(retired_at IS NULL) = (retired_by IS NULL)", name="ck_key_groups_retired_at_iff_retired_by"
        ),
    )


def downgrade() -> None:
    op.drop_table("key_groups")
