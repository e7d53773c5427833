"""File sources: CSV and Parquet files in one directory, read with pyarrow.

Only the needed columns are read and the period filter is pushed into the scan (Parquet row groups are
skipped by their statistics); each batch is rolled up per raw ID before it is yielded, so memory holds
one batch of rows, not the file. CSV columns are all text (IDs keep their leading zeros and X), so a CSV
period is read by its declared format (default `text_yyyy_mm`); Parquet columns keep their types and the
format is taken from the type as for SQL (`sources.periods`). Trailing blanks of text periods are ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pds

from connectors.config import DatasetSpec, PeriodFormat, PeriodSpec, Rollup
from connectors.errors import ConfigError, SourceError
from connectors.sources import BAD_VALUES, ENTITY, HOUSEHOLD, RollupSpec, coerce_measures
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


def arrow_storage(column_type: pa.DataType) -> str:
    """The storage kind of an Arrow column type (`sources.periods`), or the type's own name."""
    if pa.types.is_date(column_type):
        return DATE
    if pa.types.is_timestamp(column_type):
        return TIMESTAMPTZ if column_type.tz else TIMESTAMP
    if pa.types.is_integer(column_type):
        return INTEGER
    if pa.types.is_string(column_type) or pa.types.is_large_string(column_type):
        return TEXT
    return str(column_type)


def _period_filter(plan: PeriodPlan, schema: pa.Schema, start: str, end: str) -> pc.Expression:
    if plan.format is PeriodFormat.YEAR_MONTH:
        assert plan.month_column is not None
        year, month = pc.field(plan.column), pc.field(plan.month_column)
        if plan.storage == TEXT:
            year, month = year.cast(pa.int64()), month.cast(pa.int64())
        a, b = year_month_bounds(start, end)
        return (
            (year >= a.year)
            & (year <= b.year)
            & ((year > a.year) | (month >= a.month))
            & ((year < b.year) | (month <= b.month))
        )
    bounds = month_bounds(plan, start, end)
    field = pc.field(plan.column)
    column_type = schema.field(plan.column).type
    if plan.storage == TEXT:
        # Only CSV text is trimmed: on Parquet a bare column comparison keeps row-group skipping.
        field = pc.utf8_rtrim_whitespace(field) if plan.padded else field
        low, high = pa.scalar(bounds.low), pa.scalar(bounds.high)
    else:
        low, high = pa.scalar(bounds.low, type=column_type), pa.scalar(bounds.high, type=column_type)
    return (field >= low) & ((field <= high) if bounds.closed else (field < high))


_AGG = {Rollup.SUM: "sum", Rollup.COUNT: "sum", Rollup.MAX: "max"}


class FileSource:
    """A directory of CSV or Parquet files, one file per dataset."""

    def __init__(self, directory: str) -> None:
        self._dir = Path(directory)
        if not self._dir.is_dir():
            raise ConfigError(f"source.url: {directory!r} is not a directory")
        self._plans: dict[tuple[str, PeriodSpec], PeriodPlan] = {}

    def _dataset(self, name: str) -> pds.Dataset:
        path = self._dir / name
        if not path.is_file():
            raise ConfigError(f"file {name!r} does not exist in {self._dir}")
        fmt = "parquet" if name.endswith(".parquet") else "csv"
        if fmt == "csv":
            # Everything is read as text first: IDs must keep leading zeros and trailing x.
            schema = pds.dataset(path, format="csv").schema
            opts = pacsv.ConvertOptions(column_types={f.name: pa.string() for f in schema})
            return pds.dataset(path, format=pds.CsvFileFormat(convert_options=opts))
        return pds.dataset(path, format="parquet")

    def check(self, dataset: DatasetSpec) -> None:
        assert dataset.file is not None
        try:
            names = set(self._dataset(dataset.file).schema.names)
        except pa.ArrowInvalid as exc:
            raise ConfigError(f"dataset {dataset.name!r}: {dataset.file!r} cannot be read ({exc})") from None
        wanted = [dataset.entity.column]
        wanted += [dataset.period.column] if dataset.period else []
        wanted += [m.column for m in dataset.measures if m.column]
        wanted += [d.column for d in dataset.dimensions if d.column]
        wanted += [dataset.household.column] if dataset.household else []
        wanted += [dataset.watermark] if dataset.watermark else []
        wanted += [dataset.period.month_column] if dataset.period and dataset.period.month_column else []
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ConfigError(
                f"dataset {dataset.name!r}: {dataset.file!r} has no column {', '.join(missing)}"
            )
        schema = self._dataset(dataset.file).schema
        id_storage = arrow_storage(schema.field(dataset.entity.column).type)
        if id_storage != TEXT:
            raise ConfigError(
                f"dataset {dataset.name!r}: ID column {dataset.entity.column!r} is {id_storage}, not text:"
                " an identity number's check character X (and a credit code's letters and leading zeros)"
                " cannot be stored in it, so its values cannot be trusted; write the IDs as strings"
            )
        if dataset.period is not None:
            self.period_plan(dataset.file, dataset.period)

    def period_plan(self, relation: str, spec: PeriodSpec) -> PeriodPlan:
        """The dataset's period plan from the file's column types, verified on the first rows and extremes."""
        key = (relation, spec)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        data = self._dataset(relation)
        schema = data.schema
        month = arrow_storage(schema.field(spec.month_column).type) if spec.month_column else None
        plan = resolve_plan(spec, arrow_storage(schema.field(spec.column).type), month)
        if plan.storage == TEXT and relation.endswith(".csv"):
            plan = PeriodPlan(plan.column, plan.storage, plan.format, plan.month_column, plan.timezone, True)
        cols = [plan.column] + ([plan.month_column] if plan.month_column else [])
        try:
            head = data.head(SAMPLE_ROWS, columns=cols, filter=pc.field(plan.column).is_valid())
            # The extremes batch by batch: one column of one batch in memory, whatever the file's size.
            extremes: list[Any] = []
            for batch in data.scanner(columns=[plan.column]).to_batches():
                if batch.num_rows:
                    low_high = pc.min_max(batch.column(0))
                    extremes += [low_high["min"].as_py(), low_high["max"].as_py()]
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{relation!r} cannot be read ({type(exc).__name__})") from None
        present = [v for v in extremes if v is not None]
        values = [*head.column(plan.column).to_pylist(), *([min(present), max(present)] if present else [])]
        months = head.column(plan.month_column).to_pylist() if plan.month_column else []
        verify_sample(plan, values, months)
        self._plans[key] = plan
        return plan

    def null_periods(self, relation: str, spec: PeriodSpec) -> int:
        missing = pc.field(spec.column).is_null()
        if spec.month_column:
            missing = missing | pc.field(spec.month_column).is_null()
        try:
            return int(self._dataset(relation).count_rows(filter=missing))
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{relation!r} cannot be read ({type(exc).__name__})") from None

    def fingerprint(self, dataset: DatasetSpec) -> str | None:
        # The file's checksum: a department rewrites its export in place, with or without a new date.
        assert dataset.file is not None
        digest = hashlib.sha256()
        try:
            with (self._dir / dataset.file).open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise SourceError(f"{dataset.file!r} cannot be read ({type(exc).__name__})") from None
        return f"sha256 {digest.hexdigest()}"

    def rollup(self, spec: RollupSpec) -> Iterator[pd.DataFrame]:
        data = self._dataset(spec.relation)
        columns = {ENTITY: pc.field(spec.entity_column)}
        for name, column, rollup in spec.measures:
            if rollup is not Rollup.COUNT:
                assert column is not None
                columns[name] = pc.field(column)
        for name, column in spec.dimensions:
            columns[name] = pc.field(column)
        if spec.household_column is not None:
            columns[HOUSEHOLD] = pc.field(spec.household_column)
        where = None
        for name, column in spec.period_keys:
            columns[name] = pc.field(column)
            where = pc.field(column).is_valid() if where is None else where & pc.field(column).is_valid()
        if spec.period is not None and spec.period_start is not None and spec.period_end is not None:
            plan = self.period_plan(spec.relation, spec.period)
            where = _period_filter(plan, data.schema, spec.period_start, spec.period_end)
        try:
            scanner = data.scanner(columns=columns, filter=where, batch_size=spec.chunk_rows)
            for batch in scanner.to_batches():
                if batch.num_rows:
                    yield self._rollup_batch(batch.to_pandas(), spec)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"the source file failed the roll-up ({type(exc).__name__})") from None

    def probe(self, spec: RollupSpec) -> None:
        # The first batch of the roll-up's own filtered, projected scan: reads the period and columns.
        try:
            next(iter(self.rollup(spec)), None)
        except ConfigError as exc:
            raise SourceError(str(exc)) from None

    @staticmethod
    def _rollup_batch(frame: pd.DataFrame, spec: RollupSpec) -> pd.DataFrame:
        aggs: dict[str, tuple[str, str]] = {BAD_VALUES: (BAD_VALUES, "sum")}
        frame = coerce_measures(frame, [n for n, _c, r in spec.measures if r is not Rollup.COUNT])
        for name, _column, rollup in spec.measures:
            if rollup is Rollup.COUNT:
                frame[name] = 1
            aggs[name] = (name, _AGG[rollup])
        for name, _column in spec.dimensions:
            aggs[name] = (name, "max")
        if spec.household_column is not None:
            aggs[HOUSEHOLD] = (HOUSEHOLD, "max")
        keys = [ENTITY, *(name for name, _c in spec.period_keys)]
        out = frame.groupby(keys, sort=False, dropna=True).agg(**aggs).reset_index()
        return out[[*spec.output_columns, BAD_VALUES]]

    def close(self) -> None:
        return None
