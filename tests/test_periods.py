"""Periods as departments store them: every form gives the extract that `'YYYY-MM'` text gives.

Each form is written to a real store (SQLite, PostgreSQL, MariaDB, CSV, Parquet) with rows on the very
last instant of the last requested month (in) and on the first instant after it (out), and the extract is
compared byte for byte with the same rows stored as `'YYYY-MM'` text. A declaration the data contradicts
is refused at start, naming the column, its type and the fix.
"""

from __future__ import annotations

import calendar
import datetime
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
import yaml
from connector_fixture import PERSON_B, PERSON_C, Department, make_department, wage_rows
from dbservers import mariadb_url, postgres_url  # noqa: F401 (fixtures)

from connectors.config import PeriodSpec, load_config
from connectors.errors import ConfigError
from connectors.extract import Extractor
from connectors.federation_keys import load_keyring
from connectors.service import build_service
from connectors.snapshot import SnapshotStore
from connectors.sources import open_source
from connectors.sources.memory import MemorySource
from connectors.sources.periods import Month

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


def _rows() -> pd.DataFrame:
    rows = wage_rows()
    # The edges of the range 2025-01..2025-12: in on its last day, out on the first day after it.
    rows.append({"pid": PERSON_C, "month": "2025-12", "amount": 3_000, "district": "B"})
    rows.append({"pid": PERSON_B, "month": "2026-01", "amount": 77_777, "district": "B"})
    rows.append({"pid": PERSON_C, "month": "2026-01", "amount": 66_666, "district": "A"})
    return pd.DataFrame(rows)


def _instant(month: str, index: int) -> datetime.datetime:
    """Alternately the first and the very last second of the month (local time)."""
    m = Month.parse(month)
    if index % 2 == 0:
        return datetime.datetime(m.year, m.month, 1)
    last = calendar.monthrange(m.year, m.month)[1]
    return datetime.datetime(m.year, m.month, last, 23, 59, 59)


def _as_date(s: pd.Series) -> pd.Series:
    return pd.Series([_instant(v, i).date() for i, v in enumerate(s)], index=s.index)


def _as_timestamp(s: pd.Series) -> pd.Series:
    return pd.Series([_instant(v, i) for i, v in enumerate(s)], index=s.index)


def _as_timestamptz(s: pd.Series) -> pd.Series:
    return pd.to_datetime(_as_timestamp(s)).dt.tz_localize(SHANGHAI)


FORMS: dict[str, tuple[Callable[[pd.Series], Any], dict[str, Any], Any]] = {
    # name: (month text -> stored column, period config, SQL type)
    "date": (_as_date, {}, sa.Date()),
    "timestamp": (_as_timestamp, {}, sa.DateTime()),
    "timestamptz": (_as_timestamptz, {}, sa.DateTime(timezone=True)),
    "yyyymm": (lambda s: s.str.replace("-", "").astype("int64"), {}, sa.Integer()),
    "text_yyyymm": (lambda s: s.str.replace("-", ""), {"format": "text_yyyymm"}, sa.String(6)),
    "text_yyyy_mm_dd": (
        lambda s: _as_date(s).map(lambda d: d.isoformat()),
        {"format": "text_yyyy_mm_dd"},
        sa.String(10),
    ),
    "char_padded": (lambda s: s, {}, sa.CHAR(9)),
    "year_month": (None, {"column": "pay_year", "month_column": "pay_month"}, sa.SmallInteger()),
}


def _stored(form: str) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    frame = _rows()
    convert, period, sql_type = FORMS[form]
    dtype: dict[str, Any] = {"pid": sa.String(32), "district": sa.String(4), "amount": sa.BigInteger()}
    if form == "year_month":
        frame["pay_year"] = frame["month"].str[:4].astype("int64")
        frame["pay_month"] = frame["month"].str[5:7].astype("int64")
        frame = frame.drop(columns=["month"])
        dtype |= {"pay_year": sql_type, "pay_month": sql_type}
    else:
        frame["month"] = convert(frame["month"])
        dtype["month"] = sql_type
    return frame, {"column": "month", **period}, dtype


def _department(tmp_path: Path, kind: str, form: str, url: str | None = None) -> Department:
    dept = make_department(tmp_path, "sqlite")
    frame, period, dtype = _stored(form)
    doc = yaml.safe_load(dept.config_path.read_text())
    ds = doc["datasets"][0]
    ds["period"] = period
    if kind in ("sqlite", "postgres", "mariadb"):
        url = url or f"sqlite:///{tmp_path / 'periods.db'}"
        engine = sa.create_engine(url)
        frame.to_sql("wages", engine, if_exists="replace", index=False, dtype=dtype)
        engine.dispose()
        doc["source"] = {"url": url}
    else:
        files = tmp_path / "pfiles"
        files.mkdir(exist_ok=True)
        ds.pop("table", None)
        ds["file"] = f"wages.{kind}"
        if kind == "csv":
            frame.to_csv(files / "wages.csv", index=False)
        else:
            frame.to_parquet(files / "wages.parquet", index=False)
        doc["source"] = {"url": str(files), "kind": "files"}
    dept.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dept


def _extract(dept: Department, source: Any) -> pa.Table:
    loaded = load_config(dept.config_path)
    dataset = loaded.config.dataset("wages")
    assert dataset is not None
    source.check(dataset)
    return (
        Extractor(loaded, source, load_keyring(dept.keyring_path))
        .run(dept.request("q-period-0001"), dataset)
        .table
    )


def _truth(dept: Department) -> pa.Table:
    """The same rows with the period as `'YYYY-MM'` text, through the in-memory source."""
    loaded = load_config(dept.config_path)
    dataset = loaded.config.dataset("wages")
    assert dataset is not None
    dataset = dataset.model_copy(
        update={"period": PeriodSpec(column="month"), "table": "wages", "file": None}
    )
    source = MemorySource({"wages": _rows()})
    source.check(dataset)
    return (
        Extractor(loaded, source, load_keyring(dept.keyring_path))
        .run(dept.request("q-period-0001"), dataset)
        .table
    )


def _snapshot_extract(dept: Department, source: Any) -> pa.Table:
    """The same extract from a snapshot of the store: each raw period value read as its month."""
    loaded = load_config(dept.config_path)
    dataset = loaded.config.dataset("wages")
    assert dataset is not None
    keyring = load_keyring(dept.keyring_path)
    store = SnapshotStore(loaded, source, state_dir=dept.directory / "snapshot-state")
    return Extractor(loaded, source, keyring, store).run(dept.request("q-period-0001"), dataset).table


def _assert_same_as_text(dept: Department) -> None:
    loaded = load_config(dept.config_path)
    source = open_source(loaded.config.source)
    try:
        got = _extract(dept, source)
        snapped = _snapshot_extract(dept, source)
    finally:
        source.close()
    truth = _truth(dept)
    assert got.num_rows == 3
    assert got.equals(truth), (got.to_pylist(), truth.to_pylist())
    assert snapped.to_pylist() == truth.to_pylist()


SQLITE_FORMS = list(FORMS)


@pytest.mark.parametrize("form", SQLITE_FORMS)
def test_each_form_in_sqlite_gives_the_text_extract(tmp_path: Path, form: str) -> None:
    _assert_same_as_text(_department(tmp_path, "sqlite", form))


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["date", "timestamp", "timestamptz", "yyyymm", "char_padded", "year_month"])
def test_each_form_in_postgresql_gives_the_text_extract(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    form: str,
) -> None:
    _assert_same_as_text(_department(tmp_path, "postgres", form, postgres_url))


@pytest.mark.mariadb
@pytest.mark.parametrize("form", ["date", "timestamp", "yyyymm", "text_yyyy_mm_dd", "year_month"])
def test_each_form_in_mariadb_gives_the_text_extract(
    tmp_path: Path,
    mariadb_url: str,  # noqa: F811
    form: str,
) -> None:
    _assert_same_as_text(_department(tmp_path, "mariadb", form, mariadb_url))


@pytest.mark.parametrize(
    ("kind", "form"),
    [
        ("parquet", "date"),
        ("parquet", "timestamp"),
        ("parquet", "timestamptz"),
        ("parquet", "yyyymm"),
        ("parquet", "year_month"),
        ("csv", "text_yyyymm"),
        ("csv", "text_yyyy_mm_dd"),
        ("csv", "year_month"),
    ],
)
def test_each_form_in_files_gives_the_text_extract(tmp_path: Path, kind: str, form: str) -> None:
    _assert_same_as_text(_department(tmp_path, kind, form))


def _declare(dept: Department, **period: Any) -> None:
    doc = yaml.safe_load(dept.config_path.read_text())
    doc["datasets"][0]["period"].update(period)
    dept.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize(
    ("kind", "form", "declared", "expected"),
    [
        # integer YYYYMM declared as text: the column type says otherwise
        ("sqlite", "yyyymm", {"format": "text_yyyy_mm"}, "integer"),
        # a DATE column declared as yyyymm
        ("sqlite", "date", {"format": "yyyymm"}, "set period.format: date or leave it out"),
        # text YYYYMM left to the default YYYY-MM: the sample shows the real shape
        ("sqlite", "text_yyyymm", {"format": None}, "set period.format: text_yyyymm"),
        ("csv", "text_yyyy_mm_dd", {"format": "text_yyyy_mm"}, "set period.format: text_yyyy_mm_dd"),
        ("parquet", "yyyymm", {"format": "date"}, "integer"),
    ],
)
def test_a_declaration_the_data_contradicts_is_refused_at_start(
    tmp_path: Path, kind: str, form: str, declared: dict[str, Any], expected: str
) -> None:
    dept = _department(tmp_path, kind, form)
    _declare(dept, **declared)
    with pytest.raises(ConfigError) as info:
        build_service(load_config(dept.config_path))
    message = str(info.value)
    assert "'month'" in message and expected in message
    assert "2025-" not in message and "20250" not in message  # shapes, never the values


def test_a_date_column_holding_month_text_is_refused(tmp_path: Path) -> None:
    # SQLite keeps a DATE column as text: a department may well have written '2025-01' into it.
    dept = _department(tmp_path, "sqlite", "char_padded")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'periods.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE wages"))
        conn.execute(sa.text("CREATE TABLE wages (pid TEXT, month DATE, amount INTEGER, district TEXT)"))
        conn.execute(
            sa.text("INSERT INTO wages VALUES (:pid, :month, :amount, :district)"), _rows().to_dict("records")
        )
    engine.dispose()
    with pytest.raises(ConfigError, match=r"period column 'month' \(date\).*set period.format: text_yyyy_mm"):
        build_service(load_config(dept.config_path))
    # SQLite's DATE is text underneath, so the declared text format is then read as text.
    _declare(dept, format="text_yyyy_mm")
    _assert_same_as_text(dept)
