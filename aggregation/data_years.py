"""Which data years a query reads: the ledger charges its full epsilon to each of them.

The protected unit is a household over a data year, so a query's period and its baseline period both
count (a query over 2024-07..2025-06 reads 2024 and 2025; an early warning for January whose baseline is
December reads the year before too). The year arithmetic itself is the ledger's
(`privacy.ledger.data_years`); this module only says which of a query's ranges it reads.
"""

from __future__ import annotations

from aggregation.query import QuerySpec
from privacy.ledger import data_years


def query_data_years(spec: QuerySpec) -> tuple[str, ...]:
    """The data years (``'YYYY'``, sorted) of the query's period and baseline period."""
    ranges = [(spec.period_start, spec.period_end)]
    if spec.baseline is not None:
        ranges.append((spec.baseline.period_start, spec.baseline.period_end))
    return data_years(ranges)
