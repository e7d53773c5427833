"""Rolling 12-month figures from the monthly packs' increments: post-processing, no budget.

Sums over months add up: the 12-month income of an area is the sum of its twelve monthly noisy income
sums, so the monthly calendar releases each month once and the rolling figure costs nothing more. Members
are a stock, not a flow: each monthly release counts the same register's members, so the twelve monthly
member sums are averaged (the year's average household population, as household surveys use).
Per-capita income over the 12 months is summed income over averaged members, by area (county, urban,
rural by the public NBS code), and the ratio of urban to rural; intervals by simulating the known
integer-Laplace noise of every monthly cell around the noisy values.

Only the urban–rural sums are rolled up this way; figures that do not add up over months (band shares,
quantiles, the Gini, coverage as "any record in the year", key groups' bands) come from the year-end pack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aggregation.indicators import cells
from aggregation.indicators.model import Figure, IndicatorResult, MonitoringConfig, QueryRef, SubQuery
from aggregation.indicators.urban_rural import INCOME, MEMBERS, UrbanRuralRatio

ROLLING_MONTHS = 12
NAME = "urban_rural_ratio_12m"


def rolling_urban_rural(
    config: MonitoringConfig,
    months: Sequence[tuple[str, Sequence[SubQuery], Mapping[str, Mapping[str, Any]]]],
    seed: int,
) -> IndicatorResult:
    """Per-capita income and the urban–rural ratio over the months given (reference month, the monthly
    urban–rural queries, role -> release), oldest first; every month must be there."""
    if len(months) != ROLLING_MONTHS:
        raise ValueError(f"a rolling figure needs {ROLLING_MONTHS} monthly releases, got {len(months)}")
    keys = sorted({k for _, _, rel in months for k in cells.direct(rel[INCOME], "sum")}, key=str)
    income = np.array([[cells.direct(rel[INCOME], "sum").get(k, 0.0) for k in keys] for _, _, rel in months])
    members = np.array(
        [[cells.direct(rel[MEMBERS], "sum").get(k, 0.0) for k in keys] for _, _, rel in months]
    )
    income_scales = np.array([[cells.scale(rel[INCOME], "sum")] * len(keys) for _, _, rel in months])
    member_scales = np.array([[cells.scale(rel[MEMBERS], "sum")] * len(keys) for _, _, rel in months])
    urban = np.array([k[0] is not None and config.is_urban(k[0]) for k in keys])
    rural = np.array([k[0] is not None and not config.is_urban(k[0]) for k in keys])

    def figures_of(inc: np.ndarray, mem: np.ndarray) -> np.ndarray:
        total = inc.sum(axis=-2)  # the twelve months' income, per cell
        average = mem.mean(axis=-2)  # the year's average members, per cell
        pools = [np.ones_like(urban), urban, rural]
        out = [cells.safe_ratio(total[..., p].sum(axis=-1), average[..., p].sum(axis=-1)) for p in pools]
        out.append(cells.safe_ratio(out[1], out[2], floor=1e-9))
        return np.stack(out, axis=-1)

    value, low, high = cells.simulate(
        [income, members], [income_scales, member_scales], figures_of, rng=np.random.default_rng(seed)
    )
    first, last = months[0][0], months[-1][0]
    figures = [
        Figure(
            figure="per_capita_income",
            label=f"per-capita disposable income, {first}..{last}",
            group=group,
            value=float(value[i]),
            low=float(low[i]),
            high=float(high[i]),
            unit="yuan",
        )
        for i, group in enumerate(("county", "urban", "rural"))
    ]
    # A ratio over a rural figure that the noise allows to be 0 or below says nothing: undefined, and
    # the notes say why, rather than a huge number from a floored denominator.
    defined = bool(low[2] > 0)
    figures.append(
        Figure(
            figure="urban_rural_ratio",
            label=f"urban / rural per-capita income, {first}..{last}",
            group="county",
            value=float(value[3]) if defined else None,
            low=float(low[3]) if defined else None,
            high=float(high[3]) if defined else None,
            unit="ratio",
        )
    )
    notes = [
        "No new budget: post-processing of the twelve monthly urban–rural releases listed, each charged "
        "once by its monthly pack.",
        "Each household's income is clamped per month to the monthly bounds before it is summed, so a "
        "household with one very large month counts less than in an annual clamp.",
    ]
    if not defined:
        notes.append(
            "The urban–rural ratio is undefined here: the rural per-capita income's 95% interval reaches 0 "
            "or below, so the noise does not tell its denominator from nothing."
        )
    template = UrbanRuralRatio()
    return IndicatorResult(
        indicator=NAME,
        title=f"{template.title}, rolling 12 months",
        title_zh=f"{template.title_zh}（滚动12个月）",
        period_start=first,
        period_end=last,
        epsilon="0",
        counted=template.counted,
        queries=[
            QueryRef(role=f"{ref}:{q.role}", query_id=q.spec.query_id, epsilon=str(q.spec.epsilon))
            for ref, subqueries, _ in months
            for q in subqueries
        ],
        figures=figures,
        notes=notes,
        methods={
            "per_capita_income": "sum of the twelve monthly noisy income sums over the area's urban-rural "
            "cells / mean of the twelve monthly noisy member sums (denominator floored at 1)",
            "urban_rural_ratio": "ratio of the urban and rural figures, undefined when the rural figure's "
            "95% interval reaches 0; 95% interval by simulating the integer-Laplace noise of every monthly "
            "cell around the noisy values",
        },
    )
