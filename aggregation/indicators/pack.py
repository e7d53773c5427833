"""Packs: several indicators run together for one period within one epsilon, split as declared; and the
default monitoring calendar they make up.

Budgets are per **data year** (the protected unit is a household over a data year; a query is charged
in full to every year its period or baseline reads), so the calendar is built so that each month's data
is released by few queries:

- ``monthly`` (any reference month): the month's **increments** only: the urban–rural sums of income and
  members of that month (12-month rolling per-capita income and ratio are the sum of the last twelve
  monthly releases: post-processing, see `aggregation/indicators/rolling.py`), the month's coverage, and
  early warning for the month against the month before;
- ``year_end`` (December only): the figures that do not add up over months, over the whole data year:
  income bands, the income distribution, key groups, annual coverage, and the annual urban–rural ratio and
  the fourth quarter's early warning against the third, so the year's figures are one release family.

:data:`CALENDAR` holds the default epsilon of each; :func:`calendar_charges` says, from public parameters
only, what the calendar charges each data year (twelve monthly packs, the year-end pack, and the next
January's early warning whose baseline is December).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from aggregation.data_years import query_data_years
from aggregation.indicators.base import Template
from aggregation.indicators.coverage import Coverage
from aggregation.indicators.early_warning import EarlyWarning
from aggregation.indicators.income_bands import IncomeBands
from aggregation.indicators.income_distribution import IncomeDistribution
from aggregation.indicators.key_groups import KeyGroups
from aggregation.indicators.model import IndicatorError, IndicatorParams, MonitoringConfig, split_epsilon
from aggregation.indicators.periods import months_ending
from aggregation.indicators.urban_rural import UrbanRuralRatio
from aggregation.query import MemberGroup

ANNUAL_MONTHS = 12
WARNING_MONTHS = 3

MONTHLY_INCOME_LOWER = -20_000
MONTHLY_INCOME_SUM_UPPER = 125_000
"""Public clamp of one household's income in one month, for the monthly sums (a twelfth of the annual
sum's bound, rounded): a sum's noise grows with its bound, and twelve monthly sums at the annual bound
would carry the noise of twelve annual releases."""


@dataclass(frozen=True)
class Member:
    indicator: Template
    weight: Fraction
    months: int
    config: Mapping[str, Any] = field(default_factory=dict)
    """Public policy this member uses instead of the pack's (e.g. the monthly sums' bounds)."""


@dataclass(frozen=True)
class Pack:
    name: str
    title: str
    title_zh: str
    members: tuple[Member, ...]
    default_epsilon: Decimal | None = None
    """The pack's epsilon when a run names none (the calendar's); None: the smallest department cap."""
    reference_months: tuple[int, ...] = tuple(range(1, 13))
    """The calendar months the pack may be run for (the year-end pack: December only)."""
    rolling_member: str | None = None
    """The member whose monthly releases add up to rolling 12-month figures (`rolling.py`)."""

    def check_period(self, period: str) -> None:
        """Refuse a reference month the pack is not meant for (IndicatorError naming `period`)."""
        if int(period.split("-")[1]) not in self.reference_months:
            raise IndicatorError(
                "period",
                f"the {self.name} pack runs for a data year's December (YYYY-12) only, so that it reads "
                "one data year",
            )

    def config_for(self, indicator: str, config: MonitoringConfig) -> MonitoringConfig:
        """The public policy the pack's member `indicator` is built and evaluated with."""
        for m in self.members:
            if m.indicator.name == indicator and m.config:
                return config.model_copy(update=dict(m.config))
        return config

    def params(
        self,
        *,
        period: str,
        epsilon: Decimal,
        analyst: str,
        groups: tuple[MemberGroup, ...],
    ) -> list[tuple[Template, IndicatorParams]]:
        """Each member indicator with its own period and its exact share of the pack's epsilon."""
        self.check_period(period)
        split = split_epsilon(epsilon, {m.indicator.name: m.weight for m in self.members})
        out = []
        for m in self.members:
            start, end = months_ending(period, m.months)
            out.append(
                (
                    m.indicator,
                    IndicatorParams(
                        period_start=start,
                        period_end=end,
                        epsilon=split[m.indicator.name],
                        analyst=analyst,
                        groups=groups if isinstance(m.indicator, KeyGroups) else (),
                    ),
                )
            )
        return out

    def description(self, config: MonitoringConfig | None = None) -> list[dict[str, str]]:
        whole = sum((m.weight for m in self.members), Fraction(0))
        return [
            {
                "indicator": m.indicator.name,
                "share": f"{m.weight / whole}",
                "months": "the reference month"
                if m.months == 1
                else f"{m.months} months ending in the period",
            }
            for m in self.members
        ]


MONTHLY = Pack(
    name="monthly",
    title="Monthly household income monitoring pack (the month's increments)",
    title_zh="家庭收入月度监测包（当月增量）",
    members=(
        Member(
            UrbanRuralRatio(),
            Fraction(50, 100),
            1,
            {"income_lower": MONTHLY_INCOME_LOWER, "income_sum_upper": MONTHLY_INCOME_SUM_UPPER},
        ),
        Member(Coverage(), Fraction(20, 100), 1),
        Member(EarlyWarning(), Fraction(30, 100), 1),
    ),
    default_epsilon=Decimal("0.7"),
    rolling_member=UrbanRuralRatio.name,
)

YEAR_END = Pack(
    name="year_end",
    title="Year-end household income figures for one data year",
    title_zh="家庭收入年度监测包（数据年度年末）",
    members=(
        Member(IncomeBands(), Fraction(25, 100), ANNUAL_MONTHS),
        Member(UrbanRuralRatio(), Fraction(15, 100), ANNUAL_MONTHS),
        Member(IncomeDistribution(), Fraction(20, 100), ANNUAL_MONTHS),
        Member(Coverage(), Fraction(10, 100), ANNUAL_MONTHS),
        Member(KeyGroups(), Fraction(20, 100), ANNUAL_MONTHS),
        Member(EarlyWarning(), Fraction(10, 100), WARNING_MONTHS),
    ),
    default_epsilon=Decimal(1),
    reference_months=(12,),
)

CALENDAR: tuple[Pack, ...] = (MONTHLY, YEAR_END)
"""The default monitoring calendar: ``monthly`` for every month, ``year_end`` for each December."""


def calendar_runs(year: int) -> list[tuple[Pack, str]]:
    """Every pack run of the default calendar that reads data year `year`, in the order they run: its
    twelve monthly packs, its year-end pack, and the next January's monthly pack (whose early warning
    compares January with this December)."""
    runs: list[tuple[Pack, str]] = [(MONTHLY, f"{year:04d}-{m:02d}") for m in range(1, 13)]
    runs.append((YEAR_END, f"{year:04d}-12"))
    runs.append((MONTHLY, f"{year + 1:04d}-01"))
    return runs


def calendar_charges(
    year: int, config: MonitoringConfig, groups: tuple[MemberGroup, ...], analyst: str = "-"
) -> Decimal:
    """What the default calendar, at each pack's default epsilon, charges data year `year` in all.

    Built from public parameters only, query by query with the ledger's rule (each query's full epsilon
    to every data year its period or baseline reads), so a change to a pack's members, periods or
    epsilons shows here before any budget is spent.
    """
    total = Decimal(0)
    for pack, period in calendar_runs(year):
        assert pack.default_epsilon is not None
        for template, params in pack.params(
            period=period, epsilon=pack.default_epsilon, analyst=analyst, groups=groups
        ):
            for q in template.queries(params, pack.config_for(template.name, config)):
                if f"{year:04d}" in query_data_years(q.spec):
                    total += q.spec.epsilon
    return total


__all__ = [
    "ANNUAL_MONTHS",
    "CALENDAR",
    "MONTHLY",
    "WARNING_MONTHS",
    "YEAR_END",
    "Member",
    "Pack",
    "calendar_charges",
    "calendar_runs",
]
