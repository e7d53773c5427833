"""Budgets on the data's own years: each ledger entry charges every data year its query reads.

Revision ID: 0005
Revises: 0004

Adds `ledger_entry_years` (query id, data year) and fills it for the entries already there: from the
query's own period and baseline in `queries.spec_json` when the gateway holds the query (the years the
query really read), otherwise the calendar year it was reserved in (`budget_window`, the only year such an
entry ever recorded). `ledger_windows` keeps one lock row per data year from now on; the rows of the
years filled here are added. Written out rather than created from the live metadata, so a later change
to the ledger's tables needs a revision of its own and this one always does the same.
"""

from __future__ import annotations

import datetime
import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _years_read(spec_json: str | None) -> set[str]:
    """The data years of a stored query spec's period and baseline; empty if the spec says none."""
    if not spec_json:
        return set()
    try:
        spec = json.loads(spec_json)
        ranges = [(spec["period_start"], spec["period_end"])]
        baseline = spec.get("baseline")
        if baseline:
            ranges.append((baseline["period_start"], baseline["period_end"]))
        years: set[str] = set()
        for start, end in ranges:
            years.update(f"{y:04d}" for y in range(int(start[:4]), int(end[:4]) + 1))
        return years
    except (ValueError, KeyError, TypeError):
        return set()


def upgrade() -> None:
    op.create_table(
        "ledger_entry_years",
        sa.Column("query_id", sa.String(length=200), nullable=False),
        sa.Column("data_year", sa.String(length=4), nullable=False),
        sa.ForeignKeyConstraint(["query_id"], ["ledger_entries.query_id"]),
        sa.PrimaryKeyConstraint("query_id", "data_year"),
    )
    op.create_index("ix_ledger_entry_years_data_year", "ledger_entry_years", ["data_year"], unique=False)

    conn = op.get_bind()
    entries = sa.table("ledger_entries", sa.column("query_id"), sa.column("budget_window"))
    queries = sa.table("queries", sa.column("id"), sa.column("spec_json"))
    entry_years = sa.table("ledger_entry_years", sa.column("query_id"), sa.column("data_year"))
    windows = sa.table("ledger_windows", sa.column("budget_window"), sa.column("created_at"))
    rows = conn.execute(
        sa.select(entries.c.query_id, entries.c.budget_window, queries.c.spec_json).select_from(
            entries.outerjoin(queries, queries.c.id == entries.c.query_id)
        )
    ).all()
    filled = []
    for query_id, window, spec_json in rows:
        years = _years_read(spec_json) or {str(window)[:4]}
        filled += [{"query_id": query_id, "data_year": y} for y in sorted(years)]
    if filled:
        conn.execute(sa.insert(entry_years), filled)
    present = set(conn.execute(sa.select(windows.c.budget_window)).scalars())
    missing = sorted({r["data_year"] for r in filled} - present)
    if missing:
        now = datetime.datetime.now(datetime.UTC)
        conn.execute(sa.insert(windows), [{"budget_window": y, "created_at": now} for y in missing])


def downgrade() -> None:
    op.drop_index("ix_ledger_entry_years_data_year", table_name="ledger_entry_years")
    op.drop_table("ledger_entry_years")
