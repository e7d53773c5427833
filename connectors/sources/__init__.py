"""Source adapters: where a department's rows live, behind one protocol.

Every adapter runs the per-entity roll-up over the requested periods as close to the data as it can
(SQL `GROUP BY` inside the database; a filtered, projected scan for files) and yields the partial
results in chunks. A chunk may hold the same raw ID more than once (files are aggregated per batch);
the extractor re-aggregates by the normalised ID anyway, because sloppy and legacy forms of one number
are distinct raw IDs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from connectors.config import DatasetSpec, PeriodSpec, Rollup, SourceSpec

if TYPE_CHECKING:
    from connectors.sources.periods import PeriodPlan

ENTITY = "entity"
HOUSEHOLD = "household"
PERIOD = "_period"
PERIOD_MONTH = "_period_month"
"""With `RollupSpec.by_period`: the raw period value (and for a year and month pair, the month) of a row."""
BAD_VALUES = "_bad_values"
"""Optional column: per raw ID, how many measure values were not numbers (counted, then skipped)."""


def coerce_measures(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Make measure columns numeric; values that are not numbers become missing and are counted."""
    bad = pd.Series(0, index=frame.index)
    for name in names:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad += (values.isna() & frame[name].notna()).astype(int)
        frame[name] = values
    frame[BAD_VALUES] = bad
    return frame


@dataclass(frozen=True)
class RollupSpec:
    """One roll-up, built only from configuration names (never from request text)."""

    relation: str
    """table name (SQL) or file name (files)"""
    entity_column: str
    period_column: str | None = None
    period_start: str | None = None
    period_end: str | None = None
    period: PeriodSpec | None = None
    """the declared period: each adapter reads it in the column's own type (`sources.periods`)"""
    measures: tuple[tuple[str, str | None, Rollup], ...] = ()
    """(output name, source column, roll-up)"""
    dimensions: tuple[tuple[str, str], ...] = ()
    """(output name, source column): taken as the maximum over the entity's rows"""
    household_column: str | None = None
    chunk_rows: int = 50_000
    by_period: PeriodSpec | None = None
    """group by the entity and this period's raw value(s) instead of the entity alone, over every row
    that has a period (a snapshot's build: one pass over the table instead of one per month)"""
    output_columns: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        cols = [ENTITY, *(m[0] for m in self.measures), *(d[0] for d in self.dimensions)]
        if self.household_column is not None:
            cols.append(HOUSEHOLD)
        if self.by_period is not None:
            cols.append(PERIOD)
            if self.by_period.month_column is not None:
                cols.append(PERIOD_MONTH)
        object.__setattr__(self, "output_columns", tuple(cols))

    @property
    def period_keys(self) -> list[tuple[str, str]]:
        """(output name, source column) of the period columns grouped by, with `by_period`."""
        if self.by_period is None:
            return []
        keys = [(PERIOD, self.by_period.column)]
        if self.by_period.month_column is not None:
            keys.append((PERIOD_MONTH, self.by_period.month_column))
        return keys


class Source(Protocol):
    """A department's data, read only through per-entity roll-ups."""

    def check(self, dataset: DatasetSpec) -> None:
        """Raise `SourceError` or `ConfigError` if the dataset's table/file or columns are missing."""
        ...

    def period_plan(self, relation: str, spec: PeriodSpec) -> PeriodPlan:
        """How the period column is read (`sources.periods`), verified on a sample; `ConfigError` if not."""
        ...

    def null_periods(self, relation: str, spec: PeriodSpec) -> int:
        """Rows whose period is NULL: they belong to no period (reported by `connector check`)."""
        ...

    def fingerprint(self, dataset: DatasetSpec) -> str | None:
        """A short text that changes when the dataset's rows change (its watermark column's maximum and
        the row count, or a file's checksum); `None` where the source cannot tell without reading it all."""
        ...

    def rollup(self, spec: RollupSpec) -> Iterator[pd.DataFrame]:
        """Yield chunks with columns `spec.output_columns`."""
        ...

    def probe(self, spec: RollupSpec) -> None:
        """Read at most one row of the roll-up's columns under its period filter (a preflight's probe:
        the source is reachable and the period and columns read); raise `SourceError` otherwise."""
        ...

    def close(self) -> None: ...


def open_source(spec: SourceSpec) -> Source:
    """The adapter for a configured source."""
    if spec.kind == "files":
        from connectors.sources.files import FileSource

        return FileSource(spec.url)
    from connectors.sources.sql import SqlSource

    return SqlSource(spec.url)
