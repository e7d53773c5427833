"""Public limits on what one query may ask the release to build, checked when the query is planned.

The memory and time of a release grow with the number of noisy quantities it draws: every cell (each
combination of the grouped domains' codes and their public "other" bucket) times every bin of every
statistic. A query past the limit is refused at planning, before anything is reserved or fetched, with
the field to change. The limit is public policy, like the domains and bounds it is computed from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from aggregation.query import Statistic, StatisticKind

MAX_CELLS_X_BINS = 50_000
"""noisy quantities one query may release (cells x bins, summed over its statistics)"""


def bins_of(statistic: Statistic) -> int:
    """Noisy quantities per cell: one per bin (two for lorenz, count and income; two for mean)."""
    if statistic.kind in (StatisticKind.COUNT, StatisticKind.SUM):
        return 1
    if statistic.kind is StatisticKind.MEAN:
        return 2
    bins = len(statistic.edges or ()) + 1
    return 2 * bins if statistic.kind is StatisticKind.LORENZ else bins


def cells_of(domain_sizes: Sequence[int]) -> int:
    """Cells of a group-by: every code of each domain plus its public other bucket, crossed."""
    return math.prod(size + 1 for size in domain_sizes)


def cells_x_bins(domain_sizes: Sequence[int], statistics: Sequence[Statistic]) -> int:
    return cells_of(domain_sizes) * sum(bins_of(s) for s in statistics)
