"""Release families as reconciled tables: reading an indicator's county, urban–rural and village releases
into the levels `aggregation.reconcile` makes consistent, and its estimates back into result tables.

A release's public "other" cell (values outside the code list) is a level's cell like any other, shown as
"other", so that each level visibly adds up to the total; columns the gateway computes for every unit
(covered, income trend) have structurally empty "other" columns, which are left out as known zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from aggregation.indicators import cells
from aggregation.indicators.model import FigureUnit, ReconciledTable, TableCell
from aggregation.reconcile import Estimate, NoisyTable, reconcile
from privacy.vocabulary import histogram_bin_labels

OTHER_CELL = "other"
COUNTY = "county"
METHOD = (
    "weighted least squares with the releases' known noise variances (every level adds up to one county "
    "total per column), then the total rounded to a whole number >= 0 and each level's cells projected "
    "onto non-negative values with that sum and rounded keeping it (largest remainders); 95% interval = "
    "the linear estimate ± the 95% quantile of its simulated noise (public scales only), clamped at 0 and "
    "holding the whole number. Raw values are the releases' noisy measurements, with their own intervals"
)


def _cell_name(value: str | None) -> str:
    return OTHER_CELL if value is None else str(value)


def histogram_level(release: Mapping[str, Any], level: str, edges: Sequence[int]) -> NoisyTable:
    """A histogram release as a level: one cell per group value (an ungrouped release: one county cell)."""
    bins = cells.binned(release, "histogram", edges)
    keys = sorted(bins, key=lambda k: (k[:1] == (None,), str(k)))
    names = tuple(_cell_name(k[0]) if k else COUNTY for k in keys)
    return NoisyTable(level, names, np.array([bins[k] for k in keys]), cells.scale(release, "histogram"))


def count_level(release: Mapping[str, Any], level: str, columns: Sequence[str]) -> NoisyTable:
    """A count release grouped by (cell?, column) as a level; without a cell group it is one county cell."""
    counts = cells.direct(release, "count")
    rows = sorted({k[:-1] for k in counts}, key=lambda k: (k == (None,), str(k)))
    names = tuple(_cell_name(r[0]) if r else COUNTY for r in rows)
    values = np.array([[counts.get((*r, c), 0.0) for c in columns] for r in rows])
    return NoisyTable(level, names, values, cells.scale(release, "count"))


def histogram_table(
    name: str,
    *,
    unit: FigureUnit,
    releases: Mapping[str, Mapping[str, Any]],
    levels: Sequence[tuple[str, str]],
    edges: Sequence[int],
    seed: int,
    is_urban: Callable[[str], bool] | None = None,
) -> ReconciledTable:
    """The reconciled table of histogram releases (role, level) over `edges`' bins.

    With `is_urban` (the public NBS rule) the first level holds urban–rural codes: it is also shown pooled
    as the county and as urban and rural, which are rounded as a whole before their codes."""
    tables = [histogram_level(releases[role], level, edges) for role, level in levels]
    areas: dict[str, list[str]] = {}
    if is_urban is not None:
        known = [c for c in tables[0].cells if c != OTHER_CELL]
        areas = {"urban": [c for c in known if is_urban(c)], "rural": [c for c in known if not is_urban(c)]}
        tables[0] = replace(tables[0], groups=tuple(tuple(cells) for cells in areas.values()))
    reconciled = reconcile(tables, seed=seed)
    shown: list[tuple[str, Estimate]] = []
    if areas:
        codes = reconciled[tables[0].level]
        shown += [(COUNTY, codes.pooled({COUNTY: codes.cells})), ("area", codes.pooled(areas))]
    shown += [(t.level, reconciled[t.level].estimate()) for t in tables]
    return table(
        name,
        unit=unit,
        releases=[role for role, _ in levels],
        columns=list(histogram_bin_labels(edges)),
        levels=shown,
    )


def count_table(
    name: str,
    *,
    unit: FigureUnit,
    releases: Mapping[str, Mapping[str, Any]],
    levels: Sequence[tuple[str, str]],
    columns: Mapping[str, str],
    seed: int,
) -> ReconciledTable:
    """The reconciled table of count releases (role, level) grouped by (cell?, column); `columns` maps
    each released column code to its label (codes left out are structurally empty)."""
    tables = [count_level(releases[role], level, tuple(columns)) for role, level in levels]
    reconciled = reconcile(tables, seed=seed)
    return table(
        name,
        unit=unit,
        releases=[role for role, _ in levels],
        columns=list(columns.values()),
        levels=[(t.level, reconciled[t.level].estimate()) for t in tables],
    )


def table(
    name: str,
    *,
    unit: FigureUnit,
    releases: Sequence[str],
    columns: Sequence[str],
    levels: Sequence[tuple[str, Estimate]],
) -> ReconciledTable:
    """A result table from reconciled estimates, level by level in the order given."""
    out = []
    for level, est in levels:
        for i, group in enumerate(est.cells):
            for j, column in enumerate(columns):
                out.append(
                    TableCell(
                        level=level,
                        group=group,
                        column=column,
                        raw=float(est.raw[i, j]),
                        raw_low=float(est.raw_low[i, j]),
                        raw_high=float(est.raw_high[i, j]),
                        value=int(est.value[i, j]),
                        low=int(est.low[i, j]),
                        high=int(est.high[i, j]),
                    )
                )
    return ReconciledTable(
        table=name,
        unit=unit,
        releases=list(releases),
        columns=list(columns),
        levels=list(dict.fromkeys(level for level, _ in levels)),
        cells=out,
        method=METHOD,
    )
