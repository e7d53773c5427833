"""`connector init`'s proposal: the entity, period and format, measures and candidate dimensions read
from a reflected table and a sample of its rows."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dbservers import postgres_url  # noqa: F401 (fixture)

from connectors.config import DatasetSpec
from connectors.ids import make_credit_code, make_resident_id
from connectors.propose import propose, reflect_file, reflect_sql, round_up

PEOPLE = [
    make_resident_id("330922", datetime.date(1960 + i, 1 + i % 12, 1 + i), i, male=i % 2 == 0)
    for i in range(20)
]
CREDIT = make_credit_code("330922", "MA2C6ELT8")  # an employer's unified social credit code (GB 32100)


def _table(url: str) -> None:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    t = sa.Table(
        "pension_paid",
        meta,
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("employer", sa.String(18)),
        sa.Column("sfz", sa.CHAR(18)),
        sa.Column("paid_on", sa.Date),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("scheme", sa.String(4)),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            t.insert(),
            [
                {
                    "seq": i,
                    "employer": CREDIT,
                    "sfz": pid if i not in (3, 7) else "12345",
                    "paid_on": datetime.date(2025, 1 + i % 12, 1),
                    "amount": Decimal("1830.50") + i,
                    "scheme": "U" if i % 2 else "R",
                }
                for i, pid in enumerate(PEOPLE)
            ],
        )
    engine.dispose()


def _check_proposal(url: str) -> None:
    _table(url)
    proposal = propose("pension_paid", {"table": "pension_paid"}, reflect_sql(url, "pension_paid"))
    ds = proposal.dataset
    assert ds["entity"] == {"column": "sfz", "kind": "person"}  # a person beats the employer's code
    assert ds["period"] == {"column": "paid_on"}
    (amount,) = ds["measures"]
    assert amount["bounds"] == [0, 30_000]  # twelve months of at most 1849.50, rounded up
    assert [d["name"] for d in ds["dimensions"]] == ["sex", "birth_year_band"]
    notes = "\n".join(proposal.notes)
    assert "employer also holds organisation numbers" in notes
    assert "paid_on is not 'YYYY-MM' text" in notes and "looks like date" in notes
    assert "some sampled values of sfz are not valid" in notes
    assert "seq is the table's primary key" in notes
    assert "dimension? scheme looks like a coded category" in notes
    DatasetSpec.model_validate(ds)  # what is proposed is a valid dataset


def test_a_sqlite_table_is_proposed_with_person_entity_date_period_and_measures(tmp_path: Path) -> None:
    _check_proposal(f"sqlite:///{tmp_path / 'hrss.db'}")


@pytest.mark.postgres
def test_a_postgresql_table_is_proposed_the_same_way(postgres_url: str) -> None:  # noqa: F811
    _check_proposal(postgres_url)


def test_a_csv_with_integer_months_and_no_identity_column(tmp_path: Path) -> None:
    pd.DataFrame(
        {"acct": [f"A{i}" for i in range(10)], "ym": [202501 + i for i in range(10)], "kwh": range(10)}
    ).to_csv(tmp_path / "meters.csv", index=False)
    proposal = propose("meters", {"file": "meters.csv"}, reflect_file(tmp_path, "meters.csv"))
    assert proposal.dataset["period"] == {"column": "ym"}
    notes = "\n".join(proposal.notes)
    assert "no text column holds mostly valid resident IDs" in notes
    assert "looks like integer YYYYMM" in notes


def test_round_up_keeps_one_significant_figure() -> None:
    assert [round_up(v) for v in (0, 7, 87_345, 100_000, -1_234, 0.4)] == [0, 7, 90_000, 100_000, -2_000, 1]
