"""Public clip bounds of the synthetic county's measures.

A bound is public: it is written into the connector configurations and the truth file, and it is what
every extract clips one entity's roll-up over the requested periods to. The values are chosen from
public rules, not from the generated data, so that publishing them reveals nothing about any household:

* incomes: two million yuan a year is far above the county's ordinary earners; the few above it are the
  documented clipping bias of the as-linked truth;
* personal social-insurance contributions: 10.5% of the top contribution base (about 25,000 yuan a month)
  is under 32,000 yuan a year, so 100,000 leaves room for multi-year ranges;
* the monthly record counts: one record per month, two for people holding a second job.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

__all__ = ["BOUNDS", "bounds"]

BOUNDS: Final = MappingProxyType(
    {
        # tax
        "wage_income": (0, 2_000_000),
        "wage_records": (0, 24),
        "business_income": (0, 2_000_000),
        "business_records": (0, 12),
        "employer_wage_bill": (0, 200_000_000),
        "employer_wage_records": (0, 100_000),
        # social insurance
        "personal_contribution": (0, 100_000),
        "months_paid": (0, 12),
        "pension_income": (0, 300_000),
        "pension_months": (0, 12),
        # civil affairs
        "assistance_income": (0, 60_000),
        "assistance_months": (0, 12),
        # utilities
        "electricity_kwh": (0, 20_000),
        "electricity_bill": (0, 15_000),
        "water_m3": (0, 1_000),
        "water_bill": (0, 10_000),
    }
)


def bounds(measure: str) -> tuple[int, int]:
    """The public clip bounds of one measure."""
    try:
        return BOUNDS[measure]
    except KeyError:
        raise KeyError(
            f"no public bounds for measure {measure!r}; known: {', '.join(sorted(BOUNDS))}"
        ) from None
