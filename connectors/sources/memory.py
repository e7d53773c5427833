"""An in-memory source over pandas frames, with the same roll-up semantics as the SQL adapter.

For tests and examples: it lets the extractor be exercised without a database or a process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pandas as pd

from connectors.config import DatasetSpec
from connectors.errors import ConfigError
from connectors.sources import BAD_VALUES, ENTITY, HOUSEHOLD, RollupSpec, coerce_measures
from connectors.vocabulary import Rollup


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
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ConfigError(f"dataset {dataset.name!r}: no column {', '.join(missing)}")

    def rollup(self, spec: RollupSpec) -> Iterator[pd.DataFrame]:
        frame = self._frame(spec.relation)
        if spec.period_column is not None and spec.period_start is not None:
            period = frame[spec.period_column]
            frame = frame[(period >= spec.period_start) & (period <= spec.period_end)]
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
        out = work.groupby(ENTITY, sort=False, dropna=True).agg(**aggs).reset_index()
        for start in range(0, len(out), spec.chunk_rows):
            yield out.iloc[start : start + spec.chunk_rows][[*spec.output_columns, BAD_VALUES]]

    def close(self) -> None:
        return None
