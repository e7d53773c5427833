"""Release families as reconciled tables: reading an indicator's county, urban–rural and village releases
into the levels `aggregation.reconcile` makes consistent, and its estimates back into result tables.

A release's public "other" cell (values outside the code list) is a level's cell like any other, shown as
"other", so that each level visibly adds up to the total; columns the gateway computes for every unit
(covered, income trend) have structurally empty "other" columns, which are left out as known zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aggregation.indicators import cells
from aggregation.indicators.model import FigureUnit, ReconciledTable, TableCell
from aggregation.reconcile import Estimate, NoisyTable

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
