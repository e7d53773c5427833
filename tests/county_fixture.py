"""A small synthetic county shared by aggregation and gateway tests, plus the headline query."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from aggregation.query import Filter, Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.config import Unit

INCOME_TERMS = (
    Term(dataset="tax.wages", measure="wage_income"),
    Term(dataset="tax.business_income", measure="business_income"),
    Term(dataset="social.pensions", measure="pension_income"),
    Term(dataset="civil.assistance", measure="assistance_income"),
    Term(dataset="social.contributions", measure="personal_contribution", sign=-1),
)
BAND_EDGES = (100_000, 200_000, 500_000, 600_000)


def headline_query(
    *, group_by: tuple[str, ...] = ("register.persons.village",), epsilon: str = "1"
) -> QuerySpec:
    """Households by annual disposable income band (the seed's two bands), by village."""
    return QuerySpec(
        purpose="Household income bands for the monthly monitoring report",
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=INCOME_TERMS, lower=-200_000, upper=5_000_000, label="disposable income proxy"),
        group_by=group_by,
        statistics=(Statistic(kind=StatisticKind.HISTOGRAM, edges=BAND_EDGES),),
        epsilon=Decimal(epsilon),
    )


def urban_filter() -> Filter:
    return Filter(dimension="register.persons.urban_rural", values=("111", "112", "121", "122", "123"))


def truth(county: Path) -> dict[str, Any]:
    return json.loads((county / "truth.json").read_text())  # type: ignore[no-any-return]
