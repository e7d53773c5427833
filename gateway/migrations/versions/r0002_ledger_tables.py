"""The federation budget ledger's tables (`privacy.ledger`).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

from privacy.ledger import ledger_metadata

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The ledger package owns its table definitions; this revision freezes them into the history.
    ledger_metadata.create_all(bind=op.get_bind(), checkfirst=True)


def downgrade() -> None:
    ledger_metadata.drop_all(bind=op.get_bind(), checkfirst=True)
