"""Rules identified by (department, rule id) and kept as versions; analysts' registered keys; the
analyst's signature of each query.

Revision ID: 0009
Revises: 0006 (the latest revision on this branch; re-chained after 0007 and 0008 where those exist)

`rules` had one row per rule id, replaced in place and deleted on replacement. It becomes one row per
version of a department's rule: a version is never deleted, only revoked or superseded by the next
(the next names the SHA-256 of the one it replaces). Existing rows become version 1 of their
department's rule. Written out rather than created from the live metadata; constraint names follow
`gateway.db.NAMING_CONVENTION`.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

TIMESTAMP = sa.DateTime(timezone=True)

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_versions",
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(80), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("signed_json", sa.Text(), nullable=False),
        sa.Column("signed_digest", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_by", sa.String(100), nullable=True),
        sa.Column("superseded_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("department", "rule_id", "version", name="pk_rule_versions"),
        sa.CheckConstraint("version >= 1", name="ck_rule_versions_version_positive"),
    )
    old = sa.table(
        "rules",
        sa.column("id", sa.String),
        sa.column("department", sa.String),
        sa.column("signed_json", sa.Text),
        sa.column("created_by", sa.String),
        sa.column("created_at", TIMESTAMP),
        sa.column("revoked_at", TIMESTAMP),
    )
    new = sa.table(
        "rule_versions",
        sa.column("department", sa.String),
        sa.column("rule_id", sa.String),
        sa.column("version", sa.Integer),
        sa.column("signed_json", sa.Text),
        sa.column("signed_digest", sa.String),
        sa.column("created_by", sa.String),
        sa.column("created_at", TIMESTAMP),
        sa.column("revoked_at", TIMESTAMP),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(old)).all()
    for r in rows:
        conn.execute(
            new.insert().values(
                department=r.department,
                rule_id=r.id,
                version=1,
                signed_json=r.signed_json,
                signed_digest=hashlib.sha256(r.signed_json.encode()).hexdigest(),
                created_by=r.created_by,
                created_at=r.created_at,
                revoked_at=r.revoked_at,
            )
        )
    op.drop_index("ix_rules_department", table_name="rules")
    op.drop_table("rules")
    op.create_table(
        "analyst_keys",
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("analyst", sa.String(100), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("registered_by", sa.String(100), nullable=False),
        sa.Column("registered_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("revoked_by", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_analyst_keys"),
    )
    op.create_index("ix_analyst_keys_analyst", "analyst_keys", ["analyst"])
    op.create_table(
        "query_signatures",
        sa.Column("query_id", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(["query_id"], ["queries.id"], name="fk_query_signatures_query_id_queries"),
        sa.ForeignKeyConstraint(
            ["key_fingerprint"],
            ["analyst_keys.fingerprint"],
            name="fk_query_signatures_key_fingerprint_analyst_keys",
        ),
        sa.PrimaryKeyConstraint("query_id", name="pk_query_signatures"),
    )


def downgrade() -> None:
    op.drop_table("query_signatures")
    op.drop_index("ix_analyst_keys_analyst", table_name="analyst_keys")
    op.drop_table("analyst_keys")
    op.create_table(
        "rules",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("signed_json", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rules"),
    )
    op.create_index("ix_rules_department", "rules", ["department"])
    op.drop_table("rule_versions")
