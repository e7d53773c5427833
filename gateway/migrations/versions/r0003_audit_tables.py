"""The tamper-evident audit log's tables (`audit.store`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit.entries import GENESIS_HASH
from audit.store import audit_head, audit_metadata

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The audit package owns its table definitions; this revision freezes them into the history.
    bind = op.get_bind()
    audit_metadata.create_all(bind=bind, checkfirst=True)
    # The head row the appender locks: an empty tree, chained from the genesis hash.
    if bind.execute(sa.select(audit_head.c.id)).first() is None:
        bind.execute(audit_head.insert().values(id=1, size=0, last_hash=GENESIS_HASH.hex(), frontier=""))


def downgrade() -> None:
    audit_metadata.drop_all(bind=op.get_bind(), checkfirst=True)
