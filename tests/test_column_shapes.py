"""Ordinary column shapes of departments' tables: read as documented, or refused at start.

CHAR(n) padded and lower-case IDs, decimal money (NUMERIC(12,2)), fen stored as integers with a declared
scale, negative values and NULLs are read; ID columns of a numeric type are refused.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from connector_fixture import PERSON_A, PERSON_B, PERSON_C, Department, make_department
from dbservers import postgres_url  # noqa: F401 (fixtures)

from connectors.config import load_config
from connectors.errors import ConfigError
from connectors.extract import Extractor
from connectors.federation_keys import load_keyring
from connectors.ids import IdKind, normalize
from connectors.service import build_service
from connectors.sources import open_source


def _rows() -> list[dict[str, Any]]:
    return [
        # padded, lower-case x: one person with the clean form
        {"pid": f"{PERSON_A[:-1]}x", "month": datetime.date(2025, 1, 31), "amount": Decimal("1000.40")},
        {"pid": PERSON_A, "month": datetime.date(2025, 2, 1), "amount": Decimal("2000.35")},
        # a refund: negative, clipped to the lower bound of the sum
        {"pid": PERSON_B, "month": datetime.date(2025, 3, 5), "amount": Decimal("-500.00")},
        {"pid": PERSON_B, "month": datetime.date(2025, 4, 5), "amount": Decimal("300.00")},
        # NULL amount: SUM skips it; NULL period: outside every range; NULL ID: invalid, counted
        {"pid": PERSON_C, "month": datetime.date(2025, 5, 5), "amount": None},
        {"pid": PERSON_C, "month": datetime.date(2025, 6, 5), "amount": Decimal("10.00")},
        {"pid": PERSON_C, "month": None, "amount": Decimal("99999.00")},
        {"pid": None, "month": datetime.date(2025, 6, 5), "amount": Decimal("5.00")},
    ]


def _configure(dept: Department, source: dict[str, Any], **measure: Any) -> None:
    doc = yaml.safe_load(dept.config_path.read_text())
    doc["source"] = source
    ds = doc["datasets"][0]
    ds["measures"][0].update(measure)
    ds["dimensions"] = [d for d in ds["dimensions"] if d["name"] != "district"]
    dept.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _extract(dept: Department) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """(sorted (wage_income, months_paid) per person, quality counters) of one extract."""
    loaded = load_config(dept.config_path)
    source = open_source(loaded.config.source)
    dataset = loaded.config.dataset("wages")
    assert dataset is not None
    try:
        source.check(dataset)
        req = dept.request("q-shape-0001", dimensions=("sex",))
        result = Extractor(loaded, source, load_keyring(dept.keyring_path)).run(req, dataset)
    finally:
        source.close()
    values = sorted((r["wage_income"], r["months_paid"]) for r in result.table.to_pylist())
    return values, result.quality.as_dict()


@pytest.mark.postgres
def test_char_padded_ids_and_numeric_money_in_postgresql(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    dept = make_department(tmp_path, "sqlite")
    engine = sa.create_engine(postgres_url)
    dtype = {"pid": sa.CHAR(20), "month": sa.Date(), "amount": sa.Numeric(12, 2)}
    pd.DataFrame(_rows()).to_sql("wages", engine, index=False, dtype=dtype)  # type: ignore[arg-type]
    engine.dispose()
    _configure(dept, {"url": postgres_url}, bounds=[0, 100_000])
    got, quality = _extract(dept)
    # A: 3000.75 rounds to 3001 over two months; B: -200 clips to 0; C: 10 over two rows (one NULL amount)
    assert got == [(0, 2), (10, 2), (3001, 2)]
    assert quality["invalid_ids"] == 1 and quality["bad_values"] == 0
    assert quality["cleaned_ids"] >= 1  # the padded and lower-case forms


def test_fen_as_integers_with_a_declared_scale(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    frame = pd.DataFrame(_rows())
    frame["amount"] = [None if v is None else int(v * 100) for v in frame["amount"]]
    frame["amount"] = frame["amount"].astype("Int64")
    url = f"sqlite:///{tmp_path / 'fen.db'}"
    engine = sa.create_engine(url)
    frame.to_sql("wages", engine, index=False, dtype={"month": sa.Date(), "pid": sa.String(20)})  # type: ignore[arg-type]
    engine.dispose()
    _configure(dept, {"url": url}, bounds=[-1_000, 100_000], scale=2)
    got, _quality = _extract(dept)
    # With a negative lower bound the refund stays: B is -200 yuan.
    assert got == [(-200, 2), (10, 2), (3001, 2)]


def test_an_integer_id_column_is_refused_at_start(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    url = f"sqlite:///{tmp_path / 'intid.db'}"
    engine = sa.create_engine(url)
    frame = pd.DataFrame({"pid": [int(PERSON_B)], "month": ["2025-01"], "amount": [1], "district": ["A"]})
    frame.to_sql("wages", engine, index=False, dtype={"pid": sa.BigInteger()})  # type: ignore[arg-type]
    engine.dispose()
    doc = yaml.safe_load(dept.config_path.read_text())
    doc["source"] = {"url": url}
    dept.config_path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"ID column 'pid' is integer, not text: .*check character X"):
        build_service(load_config(dept.config_path))


def test_an_integer_id_column_in_parquet_is_refused(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "parquet")
    frame = pd.DataFrame({"pid": [int(PERSON_B)], "month": ["2025-01"], "amount": [1], "district": ["A"]})
    frame.to_parquet(tmp_path / "files" / "wages.parquet", index=False)
    with pytest.raises(ConfigError, match=r"ID column 'pid' is integer"):
        build_service(load_config(dept.config_path))


def test_the_padded_form_is_the_clean_one() -> None:
    assert normalize(IdKind.RESIDENT_ID, f"{PERSON_A[:-1]}x      ") == PERSON_A


def _measure_table(tmp_path: Path, amount_type: Any, **measure: Any) -> Department:
    dept = make_department(tmp_path, "sqlite")
    url = f"sqlite:///{tmp_path / 'measure.db'}"
    engine = sa.create_engine(url)
    frame = pd.DataFrame({"pid": [PERSON_B], "month": ["2025-01"], "amount": ["12.50"], "district": ["A"]})
    frame.to_sql("wages", engine, index=False, dtype={"amount": amount_type})  # type: ignore[arg-type]
    engine.dispose()
    _configure(dept, {"url": url}, **measure)
    return dept


def test_a_text_measure_column_is_refused(tmp_path: Path) -> None:
    dept = _measure_table(tmp_path, sa.String(12))
    with pytest.raises(
        ConfigError, match=r"measure wage_income \(column 'amount', varchar\(12\)\) is not numeric"
    ):
        build_service(load_config(dept.config_path))


def test_a_scale_on_a_decimal_column_is_refused(tmp_path: Path) -> None:
    dept = _measure_table(tmp_path, sa.Numeric(12, 2), scale=2)
    with pytest.raises(ConfigError, match=r"already holds decimals: `scale` is for integers"):
        build_service(load_config(dept.config_path))
