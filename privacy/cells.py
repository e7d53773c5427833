"""The exact per-cell aggregates a release adds its noise to: which tables, their public keys, the row map.

A release's noisy quantities (:func:`quantities`) are sums over the public cells of the rows of a frame
with one row per privacy unit: a count of units, the sum of the clamped measure, and, for the Lorenz
figures, the sum of each unit's normalised offset in its bin. This module says which aggregate tables a
spec needs (:class:`CellTable`), maps each unit row to its cell (:meth:`CellLayout.unit_rows`: a group value
outside its code list goes to the public ``OTHER`` key, the measure is clamped, bins and offsets are computed
from the clamped value; a row-wise map, so it changes no distance between frames), aggregates exactly
(:meth:`CellLayout.aggregate`) and completes partial aggregates over every public cell with zeros
(:meth:`CellLayout.complete`), so an empty cell is released with noise like any other.

An engine (:mod:`aggregation.engines`) computes these tables wherever the rows live; :mod:`privacy.release`
adds OpenDP's noise to them. Adding or removing one household moves at most ``d_in`` unit rows, each in
exactly one cell, so the L1 distance of a count table is at most ``d_in``, of a measure sum
``d_in * max(|lower|, |upper|)`` and of an offset sum ``d_in * LORENZ_RESOLUTION``: the sensitivities the
noise scales are built from.

It loads polars and numpy, never OpenDP.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import polars as pl

from privacy import intervals
from privacy.errors import ReleaseInputError
from privacy.vocabulary import (
    COLUMN_PREFIX,
    LORENZ_RESOLUTION,
    OTHER,
    GroupDomain,
    Histogram,
    Lorenz,
    Quantiles,
    ReleaseSpec,
    histogram_bin_labels,
    quantiles_share_histogram,
)

__all__ = [
    "BIN_INDEX",
    "COUNT",
    "HBIN",
    "LBIN",
    "LOFFSET",
    "QBIN",
    "SUM",
    "CellLayout",
    "CellTable",
    "bins_frame",
    "cell_layout",
    "keys_frame",
    "quantities",
]

COUNT: Final = COLUMN_PREFIX + "count"
SUM: Final = COLUMN_PREFIX + "sum"
HBIN: Final = COLUMN_PREFIX + "hbin"
QBIN: Final = COLUMN_PREFIX + "qbin"
LBIN: Final = COLUMN_PREFIX + "lbin"
LOFFSET: Final = COLUMN_PREFIX + "loffset"
BIN_INDEX: Final = COLUMN_PREFIX + "bin_index"


def quantities(spec: ReleaseSpec) -> list[tuple[str, Decimal]]:
    """Names and L1 sensitivities of the noisy quantities the statistics need, in a fixed order."""
    kinds = {s.kind for s in spec.statistics}
    m = Decimal(spec.d_in)
    out: list[tuple[str, Decimal]] = []
    if kinds & {"count", "mean"}:
        out.append(("count", m))
    if kinds & {"sum", "mean"}:
        out.append(("sum", m * max(abs(spec.lower), abs(spec.upper))))
    if "histogram" in kinds:
        out.append(("histogram", m))
    if "quantiles" in kinds and not quantiles_share_histogram(spec):
        out.append(("quantile_histogram", m))
    if "lorenz" in kinds:
        out.append(("lorenz_count", m))
        out.append(("lorenz_sum", m * LORENZ_RESOLUTION))
    return out


# Where each quantity's exact values live: (table, column).
QUANTITY_CELLS: Final = {
    "count": ("cells", COUNT),
    "sum": ("cells", SUM),
    "histogram": ("histogram", COUNT),
    "quantile_histogram": ("quantile_histogram", COUNT),
    "lorenz_count": ("lorenz", COUNT),
    "lorenz_sum": ("lorenz", SUM),
}


def keys_frame(groups: Sequence[GroupDomain]) -> pl.DataFrame:
    """Every public cell of the group domains, in their fixed order (the cross product of the keys)."""
    schema = {g.name: pl.String for g in groups}
    rows = list(itertools.product(*(g.keys for g in groups)))
    return pl.DataFrame(rows, schema=schema, orient="row")


def bins_frame(column: str, edges: Sequence[int]) -> pl.DataFrame:
    labels = histogram_bin_labels(edges)
    return pl.DataFrame(
        {column: list(labels), BIN_INDEX: list(range(len(labels)))},
        schema={column: pl.String, BIN_INDEX: pl.Int64},
    )


@dataclass(frozen=True)
class CellTable:
    """One table of exact aggregates: the group columns, optionally one bin column, and its sums.

    ``summed`` is the column whose sum is ``SUM`` (the clamped measure, or ``LOFFSET`` for the Lorenz
    offsets), or None when the table holds only the count."""

    name: str
    bin_column: str | None
    edges: tuple[int, ...] | None
    summed: str | None
    counted: bool = True


class CellLayout:
    """The aggregate tables of one spec, and how unit rows become cells (see the module docstring)."""

    def __init__(self, spec: ReleaseSpec) -> None:
        self.spec = spec
        names = {name for name, _ in quantities(spec)}
        tables: list[CellTable] = []
        counted, summed = "count" in names, "sum" in names
        if counted or summed:
            tables.append(CellTable("cells", None, None, spec.measure if summed else None, counted))
        hist, quant, lorenz = (
            spec.statistic("histogram"),
            spec.statistic("quantiles"),
            spec.statistic("lorenz"),
        )
        if "histogram" in names and isinstance(hist, Histogram):
            tables.append(CellTable("histogram", HBIN, hist.edges, None))
        if "quantile_histogram" in names and isinstance(quant, Quantiles):
            tables.append(CellTable("quantile_histogram", QBIN, quant.edges, None))
        if isinstance(lorenz, Lorenz):
            tables.append(CellTable("lorenz", LBIN, lorenz.edges, LOFFSET))
        self.tables: tuple[CellTable, ...] = tuple(tables)
        self.group_names = [g.name for g in spec.groups]
        self._keys = keys_frame(spec.groups)

    @property
    def lorenz(self) -> CellTable | None:
        return next((t for t in self.tables if t.name == "lorenz"), None)

    def by(self, table: CellTable) -> list[str]:
        return [*self.group_names, *([table.bin_column] if table.bin_column else [])]

    def keys(self, table: CellTable) -> pl.DataFrame:
        """The public cells of a table, in their fixed order (bins inside cells)."""
        if table.bin_column is None:
            return self._keys
        bins = bins_frame(table.bin_column, table.edges or ()).drop(BIN_INDEX)
        return bins if not self.group_names else self._keys.join(bins, how="cross")

    def check_schema(self, schema: Mapping[str, pl.DataType]) -> None:
        """Refuse a frame whose group columns are not strings or whose measure is not an integer."""
        spec = self.spec
        missing = [c for c in [*self.group_names, spec.measure] if c and c not in schema]
        if missing:
            raise ReleaseInputError(f"the frame lacks the column(s) {missing}")
        for name in self.group_names:
            dtype = schema[name]
            if not (dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)):
                raise ReleaseInputError(f"group column {name!r} must hold strings, not {dtype}")
        if spec.measure is not None and not schema[spec.measure].is_integer():
            raise ReleaseInputError(
                f"measure {spec.measure!r} must be an integer column, not {schema[spec.measure]}"
            )

    def unit_rows(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """Each unit row mapped to its cell: public keys, clamped measure, bins and Lorenz offset."""
        spec = self.spec
        exprs: list[pl.Expr] = []
        for group in spec.groups:
            col = pl.col(group.name).cast(pl.String)
            exprs.append(
                pl.when(col.is_in(list(group.values))).then(col).otherwise(pl.lit(OTHER)).alias(group.name)
            )
        if spec.measure is not None:
            measure = pl.col(spec.measure).cast(pl.Int64).clip(spec.lower, spec.upper)
            exprs.append(measure.alias(spec.measure))
            for table in self.tables:
                if table.bin_column is not None and table.edges is not None:
                    labels = list(histogram_bin_labels(table.edges))
                    binned = measure.cut(list(table.edges), labels=labels, left_closed=True).cast(pl.String)
                    exprs.append(binned.alias(table.bin_column))
            lorenz = self.lorenz
            if lorenz is not None and lorenz.edges is not None:
                exprs.append(lorenz_offset(measure, lorenz.edges, spec.lower, spec.upper))
        return frame.select(exprs)

    def aggregate(self, rows: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
        """Exact aggregates of mapped unit rows per cell that has rows (partial: no empty cells)."""
        out: dict[str, pl.LazyFrame] = {}
        for table in self.tables:
            aggs = [pl.len().cast(pl.Int64).alias(COUNT)]
            if table.summed is not None:
                aggs.append(pl.col(table.summed).cast(pl.Int64).sum().alias(SUM))
            by = self.by(table)
            out[table.name] = rows.group_by(by).agg(aggs) if by else rows.select(aggs)
        return out

    def complete(self, partials: Mapping[str, Sequence[pl.DataFrame]]) -> dict[str, pl.DataFrame]:
        """Partial aggregates (any number per table, e.g. one per bucket) added up over every public cell,
        in the keys' fixed order, 0 where a cell has no rows."""
        out: dict[str, pl.DataFrame] = {}
        for table in self.tables:
            by = self.by(table)
            columns = [COUNT, *([SUM] if table.summed is not None else [])]
            parts = [
                p.select([*by, *columns]).cast({c: pl.Int64 for c in columns}) for p in partials[table.name]
            ]
            schema = {**{b: pl.String for b in by}, **{c: pl.Int64 for c in columns}}
            stacked = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
            if not by:
                out[table.name] = stacked.select(pl.col(c).sum() for c in columns)
                continue
            summed = stacked.group_by(by).agg(pl.col(c).sum() for c in columns)
            full = self.keys(table).join(summed, on=by, how="left", nulls_equal=True)
            out[table.name] = full.with_columns(pl.col(c).fill_null(0) for c in columns)
        return out


def cell_layout(spec: ReleaseSpec) -> CellLayout:
    return CellLayout(spec)


def lorenz_offset(clamped: pl.Expr, edges: Sequence[int], lower: int, upper: int) -> pl.Expr:
    """Each unit's offset inside its bin, normalised to ``[0, LORENZ_RESOLUTION]`` (a row-wise map).

    Bin j holds e_{j-1} <= x < e_j (polars' left-closed cut); the clamped upper bound falls in the last bin.
    The offset is ``rint((x - b_j) * R / w_j)`` in float64, 0 for a bin of zero width."""
    bounds = intervals.histogram_boundaries(edges, lower, upper)
    widths = [float(w) for w in (bounds[1:] - bounds[:-1])]
    starts = [float(b) for b in bounds[:-1]]
    x = clamped.cast(pl.Float64)
    # j = the number of edges <= x, as numpy's searchsorted(side="right").
    j = pl.sum_horizontal([(x >= float(e)).cast(pl.Int32) for e in edges])
    start = j.replace_strict(list(range(len(starts))), starts, return_dtype=pl.Float64)
    width = j.replace_strict(list(range(len(widths))), widths, return_dtype=pl.Float64)
    t = pl.when(width > 0).then(((x - start) * float(LORENZ_RESOLUTION) / width).round(0)).otherwise(0.0)
    return t.clip(0, LORENZ_RESOLUTION).cast(pl.Int64).alias(LOFFSET)
