"""The headline household band query every benchmark times: households by village (or another group) x
annual disposable-income band, edges 100k/200k/500k/600k, over 2025.

The benchmarks own this definition (it was the demo's first query), so that changes to the demo do not
change what is measured, and figures stay comparable between runs.
"""

from __future__ import annotations

from decimal import Decimal

from aggregation.query import Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.config import Unit

BAND_EDGES = (100_000, 200_000, 500_000, 600_000)
INCOME_TERMS = (
    Term(dataset="tax.wages", measure="wage_income"),
    Term(dataset="tax.business_income", measure="business_income"),
    Term(dataset="social.pensions", measure="pension_income"),
    Term(dataset="civil.assistance", measure="assistance_income"),
    Term(dataset="social.contributions", measure="personal_contribution", sign=-1),
)


def headline(group: str, epsilon: str) -> QuerySpec:
    return QuerySpec(
        purpose="Monthly monitoring: households by annual disposable income band, by "
        + group.rsplit(".", 1)[-1],
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=INCOME_TERMS, lower=-200_000, upper=5_000_000, label="disposable income proxy"),
        group_by=(group,),
        statistics=(Statistic(kind=StatisticKind.HISTOGRAM, edges=BAND_EDGES),),
        epsilon=Decimal(epsilon),
    )
