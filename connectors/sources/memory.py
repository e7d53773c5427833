"""An in-memory source over pandas frames, with the same roll-up semantics as the SQL adapter.

For tests and examples: it lets the extractor be exercised without a database or a process.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping

import pandas as pd

from connectors.config import DatasetSpec, PeriodFormat, PeriodSpec, Rollup
from connectors.errors import ConfigError, SourceError
from connectors.sources import BAD_VALUES, ENTITY, HOUSEHOLD, RollupSpec, coerce_measures
from connectors.sources.periods import (
    DATE,
    INTEGER,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    PeriodPlan,
    month_bounds,
    resolve_plan,
    verify_sample,
    year_month_bounds,
)


def frame_storage(column: pd.Series) -> str:
    """The storage kind of a frame column (`sources.periods`)."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return TIMESTAMPTZ
    if pd.api.types.is_datetime64_dtype(column.dtype):
        return TIMESTAMP
    if pd.api.types.is_integer_dtype(column.dtype):
        return INTEGER
    first = column.dropna().head(1).tolist()
    if first and isinstance(first[0], datetime.date):
        return DATE
    return TEXT if column.dtype == object or pd.api.types.is_string_dtype(column.dtype) else str(column.dtype)


def period_mask(frame: pd.DataFrame, plan: PeriodPlan, start: str, end: str) -> pd.Series:
    if plan.format is PeriodFormat.YEAR_MONTH:
        assert plan.month_column is not None
        year = pd.to_numeric(frame[plan.column], errors="coerce")
        month = pd.to_numeric(frame[plan.month_column], errors="coerce")
        a, b = year_month_bounds(start, end)
        key = year * 100 + month
        return (key >= a.year * 100 + a.month) & (key <= b.year * 100 + b.month)
    bounds = month_bounds(plan, start, end)
    values = frame[plan.column]
    low, high = bounds.low, bounds.high
    if plan.storage == TEXT:
        values = values.astype("string").str.rstrip()
    elif plan.storage in (TIMESTAMP, TIMESTAMPTZ):
        low, high = pd.Timestamp(low), pd.Timestamp(high)
    mask = (values >= low) & ((values <= high) if bounds.closed else (values < high))
    return mask.fillna(False).astype(bool)


class MemorySource:
    """Tables held as frames, keyed by table (or file) name."""

    def __init__(self, tables: Mapping[str, pd.DataFrame]) -> None:
        self._tables = dict(tables)

    def _frame(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            raise ConfigError(f"table {name!r} does not exist in the in-memory source")
        return self._tables[name]

    def check(self, dataset: DatasetSpec) -> None:
        frame = self._frame(dataset.table or dataset.file or "")
        wanted = [dataset.entity.column, *(m.column for m in dataset.measures if m.column)]
        wanted += [d.column for d in dataset.dimensions if d.column]
        wanted += [dataset.period.column] if dataset.period else []
        wanted += [dataset.household.column] if dataset.household else []
        wanted += [dataset.watermark] if dataset.watermark else []
        wanted += [dataset.period.month_column] if dataset.period and dataset.period.month_column else []
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ConfigError(f"dataset {dataset.name!r}: no column {', '.join(missing)}")
        if frame_storage(frame[dataset.entity.column]) != TEXT:
            raise ConfigError(
                f"dataset {dataset.name!r}: ID column {dataset.entity.column!r} is not text: the check"
                " character X cannot be stored in it"
            )
        if dataset.period is not None:
            self.period_plan(dataset.table or dataset.file or "", dataset.period)

    def period_plan(self, relation: str, spec: PeriodSpec) -> PeriodPlan:
        frame = self._frame(relation)
        month = frame_storage(frame[spec.month_column]) if spec.month_column else None
        plan = resolve_plan(spec, frame_storage(frame[spec.column]), month)
        if plan.storage == TEXT:
            plan = PeriodPlan(plan.column, plan.storage, plan.format, plan.month_column, plan.timezone, True)
        present = frame[spec.column].dropna().tolist()
        values = [v.to_pydatetime() if isinstance(v, pd.Timestamp) else v for v in present]
        months = frame[spec.month_column].tolist() if spec.month_column else []
        verify_sample(plan, values, months)
        return plan

    def null_periods(self, relation: str, spec: PeriodSpec) -> int:
        frame = self._frame(relation)
        missing = frame[spec.column].isna()
        if spec.month_column:
            missing |= frame[spec.month_column].isna()
        return int(missing.sum())

    def fingerprint(self, dataset: DatasetSpec) -> str | None:
        # A checksum of the whole frame: in memory it costs little, and any change shows.
        frame = self._frame(dataset.table or dataset.file or "")
        digest = int(pd.util.hash_pandas_object(frame, index=False).sum()) & 0xFFFFFFFFFFFFFFFF
        return f"checksum {digest:016x}; rows {len(frame)}"

    def rollup(self, spec: RollupSpec) -> Iterator[pd.DataFrame]:
        frame = self._frame(spec.relation)
        if spec.period is not None and spec.period_start is not None and spec.period_end is not None:
            plan = self.period_plan(spec.relation, spec.period)
            frame = frame[period_mask(frame, plan, spec.period_start, spec.period_end)]
        work = pd.DataFrame({ENTITY: frame[spec.entity_column]})
        aggs: dict[str, tuple[str, str]] = {BAD_VALUES: (BAD_VALUES, "sum")}
        for name, column, rollup in spec.measures:
            if rollup is Rollup.COUNT or column is None:
                work[name] = 1
                aggs[name] = (name, "sum")
            else:
                work[name] = frame[column].to_numpy()
                aggs[name] = (name, "sum" if rollup is Rollup.SUM else "max")
        work = coerce_measures(
            work, [n for n, c, r in spec.measures if r is not Rollup.COUNT and c is not None]
        )
        for name, column in spec.dimensions:
            work[name] = frame[column]
            aggs[name] = (name, "max")
        if spec.household_column is not None:
            work[HOUSEHOLD] = frame[spec.household_column]
            aggs[HOUSEHOLD] = (HOUSEHOLD, "max")
        for name, column in spec.period_keys:
            work[name] = frame[column]
        keys = [ENTITY, *(name for name, _c in spec.period_keys)]
        out = work.groupby(keys, sort=False, dropna=True).agg(**aggs).reset_index()
        for start in range(0, len(out), spec.chunk_rows):
            yield out.iloc[start : start + spec.chunk_rows][[*spec.output_columns, BAD_VALUES]]

    def probe(self, spec: RollupSpec) -> None:
        try:
            next(iter(self.rollup(spec)), None)
        except (ConfigError, KeyError, TypeError) as exc:
            raise SourceError(f"the in-memory table failed the probe ({type(exc).__name__})") from None

    def close(self) -> None:
        return None
