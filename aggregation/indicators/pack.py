"""Packs: several indicators run together for one period within one epsilon, split as declared.

The monthly monitoring pack runs the headline indicators for a reference month: income figures over the
twelve months ending in it (annual income, refreshed monthly), early warning over the last three months
against the three before. The pack's epsilon is split among its indicators by fixed weights, and each
indicator splits its share among its releases; every split is exact, so the pack charges its total.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from aggregation.indicators.base import Template
from aggregation.indicators.coverage import Coverage
from aggregation.indicators.early_warning import EarlyWarning
from aggregation.indicators.income_bands import IncomeBands
from aggregation.indicators.income_distribution import IncomeDistribution
from aggregation.indicators.key_groups import KeyGroups
from aggregation.indicators.model import IndicatorParams, MonitoringConfig, split_epsilon
from aggregation.indicators.periods import months_ending
from aggregation.indicators.urban_rural import UrbanRuralRatio
from aggregation.query import MemberGroup

ANNUAL_MONTHS = 12
WARNING_MONTHS = 3


@dataclass(frozen=True)
class Member:
    indicator: Template
    weight: Fraction
    months: int


@dataclass(frozen=True)
class Pack:
    name: str
    title: str
    title_zh: str
    members: tuple[Member, ...]

    def params(
        self,
        *,
        period: str,
        epsilon: Decimal,
        analyst: str,
        groups: tuple[MemberGroup, ...],
    ) -> list[tuple[Template, IndicatorParams]]:
        """Each member indicator with its own period and its exact share of the pack's epsilon."""
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
                "months": f"{m.months} months ending in the period",
            }
            for m in self.members
        ]


MONTHLY = Pack(
    name="monthly",
    title="Monthly household income monitoring pack",
    title_zh="家庭收入月度监测包",
    members=(
        Member(IncomeBands(), Fraction(25, 100), ANNUAL_MONTHS),
        Member(UrbanRuralRatio(), Fraction(15, 100), ANNUAL_MONTHS),
        Member(IncomeDistribution(), Fraction(20, 100), ANNUAL_MONTHS),
        Member(Coverage(), Fraction(10, 100), ANNUAL_MONTHS),
        Member(KeyGroups(), Fraction(20, 100), ANNUAL_MONTHS),
        Member(EarlyWarning(), Fraction(10, 100), WARNING_MONTHS),
    ),
)
