"""File sources: CSV and Parquet files in one directory, read with pyarrow.

Only the needed columns are read and the period filter is pushed into the scan (Parquet row groups are
skipped by their statistics); each batch is rolled up per raw ID before it is yielded, so memory holds
one batch of rows, not the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pds

from connectors.config import DatasetSpec
from connectors.errors import ConfigError, SourceError
from connectors.sources import BAD_VALUES, ENTITY, HOUSEHOLD, RollupSpec, coerce_measures
from connectors.vocabulary import Rollup

_AGG = {Rollup.SUM: "sum", Rollup.COUNT: "sum", Rollup.MAX: "max"}


class FileSource:
    """A directory of CSV or Parquet files, one file per dataset."""

    def __init__(self, directory: str) -> None:
        self._dir = Path(directory)
        if not self._dir.is_dir():
            raise ConfigError(f"source.url: {directory!r} is not a directory")

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
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ConfigError(
                f"dataset {dataset.name!r}: {dataset.file!r} has no column {', '.join(missing)}"
            )

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
        if spec.period_column is not None and spec.period_start is not None:
            period = pc.field(spec.period_column)
            where = (period >= spec.period_start) & (period <= spec.period_end)
        try:
            scanner = data.scanner(columns=columns, filter=where, batch_size=spec.chunk_rows)
            for batch in scanner.to_batches():
                if batch.num_rows:
                    yield self._rollup_batch(batch.to_pandas(), spec)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"the source file failed the roll-up ({type(exc).__name__})") from None

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
        out = frame.groupby(ENTITY, sort=False, dropna=True).agg(**aggs).reset_index()
        return out[[*spec.output_columns, BAD_VALUES]]

    def close(self) -> None:
        return None
