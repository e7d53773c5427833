"""Revision 0005: ledger entries made before budgets followed the data's years get their data years."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from dbservers import private_database

from gateway.db import alembic_config, make_engine, migrate
from privacy.errors import BudgetExceeded
from privacy.ledger import Ledger, entry_years_table, windows_table

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _upgrade(engine: sa.Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def _spec(start: str, end: str, baseline: tuple[str, str] | None = None) -> str:
    spec: dict[str, object] = {"period_start": start, "period_end": end, "unit": "household"}
    if baseline is not None:
        spec["baseline"] = {"period_start": baseline[0], "period_end": baseline[1], "drop_share": "0.3"}
    return json.dumps(spec)


def _old_entry(conn: sa.Connection, query_id: str, window: str, state: str = "charged") -> None:
    conn.execute(
        sa.text(
            "INSERT INTO ledger_entries (query_id, budget_window, analyst, epsilon_nano, state, "
            "data_arrived, created_at, updated_at) VALUES (:q, :w, 'ana', 400000000, :s, :a, :t, :t)"
        ),
        {"q": query_id, "w": window, "s": state, "a": True, "t": NOW},
    )


def _old_query(conn: sa.Connection, query_id: str, spec_json: str) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO queries (id, digest, spec_json, analyst, state, created_at, updated_at) "
            "VALUES (:q, :d, :s, 'ana', 'released', :t, :t)"
        ),
        {"q": query_id, "d": "d" + query_id, "s": spec_json, "t": NOW},
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "postgres":
        database = private_database("postgres")
        url = next(database)
    else:
        database, url = iter(()), f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    eng = make_engine(url)
    try:
        yield eng
    finally:
        eng.dispose()
        next(database, None)


def test_old_entries_are_charged_to_the_years_their_queries_read(engine: sa.Engine) -> None:
    _upgrade(engine, "0004")
    with engine.begin() as conn:
        # Run in 2026 over July 2024 to June 2025: its old window was 2026, its data years 2024 and 2025.
        _old_query(conn, "q-cross", _spec("2024-07", "2025-06"))
        _old_entry(conn, "q-cross", "2026")
        # A baseline in 2023 counts too.
        _old_query(conn, "q-base", _spec("2024-01", "2024-03", baseline=("2023-10", "2023-12")))
        _old_entry(conn, "q-base", "2026")
        # An entry whose query the gateway does not hold keeps the only year it recorded.
        _old_entry(conn, "q-orphan", "2022")
        _old_entry(conn, "q-refunded", "2022", state="refunded")
    migrate(engine)
    ledger = Ledger(engine, year_cap=Decimal("1"), default_analyst_quota=None, clock=lambda: NOW)
    years = {q: ledger.entry(q).data_years for q in ("q-cross", "q-base", "q-orphan", "q-refunded")}  # type: ignore[union-attr]
    assert years == {
        "q-cross": ("2024", "2025"),
        "q-base": ("2023", "2024"),
        "q-orphan": ("2022",),
        "q-refunded": ("2022",),
    }
    assert [(y.year, y.spent) for y in ledger.remaining("ana").years] == [
        ("2022", Decimal("0.4")),
        ("2023", Decimal("0.4")),
        ("2024", Decimal("0.8")),
        ("2025", Decimal("0.4")),
    ]
    # The old spending counts against each year's lifetime cap from now on.
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("q-new", analyst="bob", datasets=[], epsilon=Decimal("0.3"), data_years=("2024",))
    assert info.value.data_year == "2024" and info.value.remaining == Decimal("0.2")
    with engine.connect() as conn:
        locks = set(conn.execute(sa.select(windows_table.c.budget_window)).scalars())
    assert {"2022", "2023", "2024", "2025"} <= locks


def test_the_revision_goes_down_and_up_again(engine: sa.Engine) -> None:
    migrate(engine)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
        assert "ledger_entry_years" not in sa.inspect(conn).get_table_names()
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(entry_years_table)).scalar_one() == 0
