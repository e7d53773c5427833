"""A whole county whose departments store the month in other ordinary ways answers like the original.

The synthetic county stores every period as `'YYYY-MM'` text. Here each store is rewritten in another
form — tax in PostgreSQL (DATE, a year/month pair), social insurance in MariaDB (integer YYYYMM,
TIMESTAMP), utilities in Parquet (TIMESTAMP WITH TIME ZONE, text YYYYMM), civil affairs in CSV (text
YYYY-MM-DD) — and the headline household query must give exactly the truth file's as-linked figures.
"""

from __future__ import annotations

import calendar
import datetime
import shutil
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from county_fixture import headline_query, truth
from dbservers import mariadb_url, postgres_url  # noqa: F401 (fixtures)
from test_aggregation import CONNECTORS, _run

from aggregation.planner import plan_query
from connectors.config import load_config
from connectors.service import build_service
from connectors.synth import generate_county

Convert = Callable[[pd.DataFrame], pd.DataFrame]


def _last_day(month: str) -> datetime.date:
    year, m = int(month[:4]), int(month[5:7])
    return datetime.date(year, m, calendar.monthrange(year, m)[1])


def _date(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(month=frame["month"].map(_last_day))


def _timestamp(frame: pd.DataFrame) -> pd.DataFrame:
    stamps = frame["month"].map(lambda m: datetime.datetime.combine(_last_day(m), datetime.time(23, 59, 59)))
    return frame.assign(month=pd.to_datetime(stamps))


def _timestamptz(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(month=_timestamp(frame)["month"].dt.tz_localize(zoneinfo.ZoneInfo("Asia/Shanghai")))


def _yyyymm(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(month=frame["month"].str.replace("-", "").astype("int64"))


def _text_yyyymm(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(month=frame["month"].str.replace("-", ""))


def _text_day(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(month=frame["month"] + "-15")


def _pair(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.assign(
        pay_year=frame["month"].str[:4].astype(int), pay_month=frame["month"].str[5:7].astype(int)
    )
    return out.drop(columns=["month"])


PAIR = {"column": "pay_year", "month_column": "pay_month"}


def _move_sql(county: Path, name: str, url: str, forms: dict[str, tuple[Convert, dict[str, Any]]]) -> None:
    """Copy a department's SQLite store to `url`, converting the named tables' month column."""
    src = sa.create_engine(f"sqlite:///{county / f'{name}.db'}")
    dst = sa.create_engine(url)
    with src.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
    for table in tables:
        frame = pd.read_sql_table(table, src)
        convert = forms.get(table, (lambda f: f, {}))[0]
        frame = convert(frame)
        text = {c: sa.String(32) for c in frame.columns if isinstance(frame[c].iloc[0], str)}
        frame.to_sql(table, dst, index=False, dtype=text, chunksize=5_000)  # type: ignore[arg-type]
    src.dispose()
    dst.dispose()
    _reconfigure(county, name, {"url": url, "kind": "sql"}, {t: p for t, (_c, p) in forms.items()})


def _reconfigure(county: Path, name: str, source: dict[str, Any] | None, periods: dict[str, Any]) -> None:
    path = county / "connectors" / f"{name}.yaml"
    doc = yaml.safe_load(path.read_text())
    if source is not None:
        doc["source"] = source
    for ds in doc["datasets"]:
        where = ds.get("table") or ds.get("file")
        if periods.get(where):
            ds["period"] = {"column": "month", **periods[where]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("periods-county")
    generate_county(out, persons=1_200, seed=13)
    return out


@pytest.mark.postgres
@pytest.mark.mariadb
def test_a_county_storing_periods_in_every_form_gives_the_truth(
    original: Path,
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    mariadb_url: str,  # noqa: F811
) -> None:
    county = tmp_path / "county"
    shutil.copytree(original, county)
    _move_sql(county, "tax", postgres_url, {"wages": (_date, {}), "business_income": (_pair, PAIR)})
    _move_sql(county, "social", mariadb_url, {"contributions": (_yyyymm, {}), "pensions": (_timestamp, {})})
    for file, convert, period in (
        ("electricity.parquet", _timestamptz, {}),
        ("water.parquet", _text_yyyymm, {"format": "text_yyyymm"}),
    ):
        path = county / "utility" / file
        convert(pd.read_parquet(path)).to_parquet(path, index=False)
        _reconfigure(county, "utility", None, {file: period})
    path = county / "civil" / "assistance.csv"
    _text_day(pd.read_csv(path, dtype=str)).to_csv(path, index=False)
    _reconfigure(county, "civil", None, {"assistance.csv": {"format": "text_yyyy_mm_dd"}})

    services = {n: build_service(load_config(county / "connectors" / f"{n}.yaml")) for n in CONNECTORS}
    try:
        catalog = {n: s.schema for n, s in services.items()}
        plan = plan_query(headline_query(group_by=()), catalog)
        frame = _run(plan, services)
    finally:
        for s in services.values():
            s.source.close()
    linked = truth(county)["as_linked"]
    assert frame.height == linked["household_count"]
    from test_aggregation import _share

    assert _share(frame, 100_000, 500_000) == pytest.approx(
        linked["share_income_100k_500k"]["county"], abs=1e-12
    )
    assert _share(frame, 200_000, 600_000) == pytest.approx(
        linked["share_income_200k_600k"]["county"], abs=1e-12
    )
