"""Building the queries indicators ask for: the income measure, the household-size measure, purposes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aggregation.indicators.model import IndicatorParams, MonitoringConfig
from aggregation.query import HOUSEHOLD_MEMBERS, MEMBERS_MEASURE, Measure, QuerySpec, Statistic, Term
from connectors.config import Unit


def income(
    config: MonitoringConfig, *, per_capita: bool = False, lower: int | None = None, upper: int | None = None
) -> Measure:
    """The disposable-income proxy per household (or per member of it), clamped to public bounds.

    `lower` and `upper` replace the household bounds where a release needs its own (a sum's sensitivity
    grows with the bound; the Gini is defined for non-negative incomes)."""
    if per_capita:
        return Measure(
            terms=config.income_terms,
            lower=config.per_capita_lower,
            upper=config.per_capita_upper,
            label="per-capita disposable income proxy",
            per_capita=True,
        )
    return Measure(
        terms=config.income_terms,
        lower=config.income_lower if lower is None else lower,
        upper=config.income_upper if upper is None else upper,
        label="household disposable income proxy",
    )


def members(config: MonitoringConfig) -> Measure:
    """The household's registered members, clamped to the public size cap."""
    return Measure(
        terms=(Term(dataset=HOUSEHOLD_MEMBERS, measure=MEMBERS_MEASURE),),
        lower=0,
        upper=config.size_cap,
        label="household members (clamped to the size cap)",
    )


def query(
    params: IndicatorParams,
    *,
    indicator: str,
    role: str,
    epsilon: Decimal,
    statistics: tuple[Statistic, ...],
    unit: Unit = Unit.HOUSEHOLD,
    **fields: Any,
) -> QuerySpec:
    """One release of an indicator, as an ordinary query; its purpose names the indicator and the role."""
    return QuerySpec(
        purpose=(
            f"Household income monitoring, indicator {indicator} ({role}), period {params.period_start} to "
            f"{params.period_end}, requested by {params.analyst}"
        ),
        unit=unit,
        period_start=fields.pop("period_start", params.period_start),
        period_end=fields.pop("period_end", params.period_end),
        statistics=statistics,
        epsilon=epsilon,
        **fields,
    )
