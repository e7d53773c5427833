"""SQL sources through SQLAlchemy: SQLite, PostgreSQL (psycopg) and MariaDB/MySQL (pymysql).

The roll-up is a SQLAlchemy Core `SELECT ... WHERE <period range> GROUP BY entity` built from
reflected tables, so names are quoted by the dialect and values are bound parameters: nothing from a
request is ever formatted into SQL. The period range is in the column's own type (`sources.periods`), so
the database's indexes apply. Results stream in chunks through a server-side cursor.

`check` refuses what would be read wrongly: a missing column, an ID column of a numeric type (the check
character X cannot be stored, and leading zeros of credit codes are lost), a period format the column's
type or a sample of its values contradicts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.sql.util import ClauseAdapter

from connectors.config import DatasetSpec, PeriodFormat, PeriodSpec, Rollup
from connectors.errors import ConfigError
from connectors.sources import ENTITY, HOUSEHOLD, RollupSpec
from connectors.sources.diagnose import SourceFailure, diagnose, url_names
from connectors.sources.periods import (
    DATE,
    INTEGER,
    SAMPLE_ROWS,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    PeriodPlan,
    month_bounds,
    resolve_plan,
    verify_sample,
    year_month_bounds,
)

_TEMPORAL = (DATE, TIMESTAMP, TIMESTAMPTZ)
_TEXT_FORMATS = (PeriodFormat.TEXT_YYYY_MM, PeriodFormat.TEXT_YYYYMM, PeriodFormat.TEXT_YYYY_MM_DD)


def storage_of(column_type: sa.types.TypeEngine[Any]) -> str:
    """The storage kind of a reflected column type (`sources.periods`), or the type's own name."""
    if isinstance(column_type, sa.DateTime):
        return TIMESTAMPTZ if column_type.timezone else TIMESTAMP
    if isinstance(column_type, sa.Date):
        return DATE
    if isinstance(column_type, sa.Integer):
        return INTEGER
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        return INTEGER if column_type.scale == 0 else f"numeric({column_type.precision}, {column_type.scale})"
    if isinstance(column_type, sa.String):
        return TEXT
    return str(column_type).lower()


def _check_measure_type(
    dataset: str, measure: str, column: str, column_type: sa.types.TypeEngine[Any], scale: int
) -> None:
    """Money and counts must be numbers in the database: SUM over text fails or coerces silently."""
    where = f"dataset {dataset!r}: measure {measure} (column {column!r}, {str(column_type).lower()})"
    if not isinstance(column_type, sa.Numeric | sa.Integer):
        raise ConfigError(
            f"{where} is not numeric: the database cannot add it up reliably; point the measure at an"
            " integer or NUMERIC column (or a view that casts it)"
        )
    decimals = (
        isinstance(column_type, sa.Numeric)
        and not isinstance(column_type, sa.Float)
        and (column_type.scale or 0) > 0
    )
    if scale and decimals:
        raise ConfigError(
            f"{where} already holds decimals: `scale` is for integers holding fractional units (fen);"
            " remove scale from the measure"
        )


def period_where(table: sa.Table, plan: PeriodPlan, start: str, end: str) -> sa.ColumnElement[bool]:
    """The request's month range as a predicate on the period column(s), values bound."""
    col = table.c[plan.column]
    if plan.format is PeriodFormat.YEAR_MONTH:
        assert plan.month_column is not None
        year: Any = col
        month: Any = table.c[plan.month_column]
        if plan.storage == TEXT:
            year, month = sa.cast(year, sa.Integer), sa.cast(month, sa.Integer)
        a, b = year_month_bounds(start, end)
        # The year range alone lets an index on the year column narrow the scan.
        return sa.and_(
            year.between(a.year, b.year),
            sa.or_(year > a.year, month >= a.month),
            sa.or_(year < b.year, month <= b.month),
        )
    bounds = month_bounds(plan, start, end)
    value: Any = sa.type_coerce(col, sa.String) if plan.storage == TEXT else col
    if bounds.closed:
        return value.between(bounds.low, bounds.high)
    return sa.and_(value >= bounds.low, value < bounds.high)


class SqlSource:
    """A department database reached by a SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        try:
            self._engine = sa.create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ValueError) as exc:
            raise ConfigError(f"source.url: not a usable SQLAlchemy URL ({type(exc).__name__})") from None
        self._tables: dict[str, sa.Table] = {}
        self._safe_names = url_names(url)
        self._plans: dict[tuple[str, PeriodSpec], PeriodPlan] = {}

    def _table(self, name: str) -> sa.Table:
        table = self._tables.get(name)
        if table is None:
            try:
                table = sa.Table(name, sa.MetaData(), autoload_with=self._engine)
            except NoSuchTableError:
                raise ConfigError(f"table {name!r} does not exist in the source database") from None
            except SQLAlchemyError as exc:
                raise SourceFailure(
                    "the source database cannot be read", diagnose(exc, [*self._safe_names, name])
                ) from None
            self._tables[name] = table
        return table

    def check(self, dataset: DatasetSpec) -> None:
        assert dataset.table is not None
        table = self._table(dataset.table)
        wanted = [dataset.entity.column]
        wanted += [dataset.period.column] if dataset.period else []
        wanted += [m.column for m in dataset.measures if m.column]
        wanted += [d.column for d in dataset.dimensions if d.column]
        wanted += [dataset.household.column] if dataset.household else []
        wanted += [dataset.watermark] if dataset.watermark else []
        if dataset.period and dataset.period.month_column:
            wanted.append(dataset.period.month_column)
        missing = [c for c in wanted if c not in table.c]
        if missing:
            raise ConfigError(
                f"dataset {dataset.name!r}: table {dataset.table!r} has no column {', '.join(missing)}"
            )
        id_storage = storage_of(table.c[dataset.entity.column].type)
        if id_storage != TEXT:
            raise ConfigError(
                f"dataset {dataset.name!r}: ID column {dataset.entity.column!r} is {id_storage}, not text:"
                " an identity number's check character X (and a credit code's letters and leading zeros)"
                " cannot be stored in it, so its values cannot be trusted; store the IDs as CHAR(18) or"
                " VARCHAR"
            )
        for m in dataset.measures:
            if m.column is not None and m.rollup is not Rollup.COUNT:
                _check_measure_type(dataset.name, m.name, m.column, table.c[m.column].type, m.scale)
        if dataset.period is not None:
            self.period_plan(dataset.table, dataset.period)

    def period_plan(self, relation: str, spec: PeriodSpec) -> PeriodPlan:
        """The dataset's period plan, resolved from the reflected types and verified on a sample."""
        key = (relation, spec)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        t = self._table(relation)
        month_storage = storage_of(t.c[spec.month_column].type) if spec.month_column else None
        storage = storage_of(t.c[spec.column].type)
        if self._engine.dialect.name == "sqlite" and storage in _TEMPORAL and spec.format in _TEXT_FORMATS:
            storage = TEXT  # SQLite keeps every declared type as text underneath: the declaration rules
        plan = resolve_plan(spec, storage, month_storage)
        if isinstance(t.c[spec.column].type, sa.CHAR):
            plan = PeriodPlan(plan.column, plan.storage, plan.format, plan.month_column, plan.timezone, True)
        cols = [plan.column] + ([plan.month_column] if plan.month_column else [])
        # Read raw values (the dialect's own parsing of a DATE would fail on text of another shape).
        raw = [sa.type_coerce(t.c[c], sa.String) for c in cols]
        sample = sa.select(*raw).where(t.c[plan.column].is_not(None)).limit(SAMPLE_ROWS)
        extremes = sa.select(sa.func.min(raw[0]), sa.func.max(raw[0]))
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(sample).all()
                low, high = conn.execute(extremes).one()
        except SQLAlchemyError as exc:
            raise SourceFailure(
                "the source database cannot be read", diagnose(exc, [*self._safe_names, relation, *cols])
            ) from None
        verify_sample(
            plan, [r[0] for r in rows] + [low, high], [r[1] for r in rows] if plan.month_column else ()
        )
        self._plans[key] = plan
        return plan

    def null_periods(self, relation: str, spec: PeriodSpec) -> int:
        t = self._table(relation)
        missing: sa.ColumnElement[bool] = t.c[spec.column].is_(None)
        if spec.month_column:
            missing = sa.or_(missing, t.c[spec.month_column].is_(None))
        try:
            with self._engine.connect() as conn:
                return int(
                    conn.execute(sa.select(sa.func.count()).select_from(t).where(missing)).scalar_one()
                )
        except SQLAlchemyError as exc:
            raise SourceFailure(
                "the source database cannot be read", diagnose(exc, [*self._safe_names, relation])
            ) from None

    def fingerprint(self, dataset: DatasetSpec) -> str | None:
        if dataset.watermark is None:
            return None
        assert dataset.table is not None
        t = self._table(dataset.table)
        stmt = sa.select(sa.func.max(t.c[dataset.watermark]), sa.func.count()).select_from(t)
        try:
            with self._engine.connect() as conn:
                high, rows = conn.execute(stmt).one()
        except SQLAlchemyError as exc:
            raise SourceFailure(
                "the source database cannot be read",
                diagnose(exc, [*self._safe_names, dataset.table, dataset.watermark]),
            ) from None
        return f"watermark {high}; rows {rows}"

    def _statement(self, spec: RollupSpec) -> sa.Select[Any]:
        t = self._table(spec.relation)
        entity = t.c[spec.entity_column]
        cols: list[Any] = [entity.label(ENTITY)]
        for name, column, rollup in spec.measures:
            if rollup is Rollup.COUNT or column is None:
                cols.append(sa.func.count().label(name))
            elif rollup is Rollup.SUM:
                cols.append(sa.func.sum(t.c[column]).label(name))
            else:
                cols.append(sa.func.max(t.c[column]).label(name))
        cols += [sa.func.max(t.c[column]).label(name) for name, column in spec.dimensions]
        if spec.household_column is not None:
            cols.append(sa.func.max(t.c[spec.household_column]).label(HOUSEHOLD))
        keys: list[Any] = [t.c[column] for _name, column in spec.period_keys]
        if spec.by_period is not None and self.period_plan(spec.relation, spec.by_period).storage == TEXT:
            # Read as the text it is: a SQLite DATE column may hold '2025-01', which the dialect's own
            # date parsing refuses (the plan has already verified the text's shape).
            keys = [sa.type_coerce(key, sa.String) for key in keys]
        cols += [key.label(name) for key, (name, _c) in zip(keys, spec.period_keys, strict=True)]
        stmt = sa.select(*cols).group_by(entity, *keys)
        if keys:
            stmt = stmt.where(sa.and_(*(key.is_not(None) for key in keys)))
        if spec.period is not None and spec.period_start is not None and spec.period_end is not None:
            plan = self.period_plan(spec.relation, spec.period)
            stmt = stmt.where(period_where(t, plan, spec.period_start, spec.period_end))
        return stmt

    def rollup(self, spec: RollupSpec) -> Iterator[pd.DataFrame]:
        stmt = self._statement(spec)
        try:
            with self._engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=spec.chunk_rows).execute(stmt)
                for rows in result.partitions():
                    yield pd.DataFrame(rows, columns=list(spec.output_columns))
        except SQLAlchemyError as exc:
            keep = [
                *self._safe_names,
                spec.relation,
                spec.entity_column,
                *(c for _n, c, _r in spec.measures if c),
            ]
            raise SourceFailure("the source database failed the roll-up", diagnose(exc, keep)) from None

    def probe(self, spec: RollupSpec) -> None:
        # The roll-up itself (its period predicate, columns and aggregates, so type errors show) over at
        # most one row that predicate selects: cheap, whatever the table's size.
        stmt = self._statement(spec)
        t = self._table(spec.relation)
        one = sa.select(t).limit(1)
        if stmt.whereclause is not None:
            one = one.where(stmt.whereclause)
        probe = ClauseAdapter(one.subquery()).traverse(stmt)
        try:
            with self._engine.connect() as conn:
                conn.execute(probe).fetchall()
        except SQLAlchemyError as exc:
            keep = [
                *self._safe_names,
                spec.relation,
                spec.entity_column,
                *(c for _n, c, _r in spec.measures if c),
            ]
            raise SourceFailure("the source database failed the probe", diagnose(exc, keep)) from None

    def close(self) -> None:
        self._engine.dispose()
