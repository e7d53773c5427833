"""Rolling 12-month figures from the monthly packs' increments: post-processing, no budget.

Sums over months add up: the 12-month income of an area is the sum of its twelve monthly noisy income
sums, so the monthly calendar releases each month once and the rolling figure costs nothing more. Members
are a stock, not a flow: each monthly release counts the same register's members, so the twelve monthly
member sums are averaged (the year's average household population, as household surveys use).
Per-capita income over the 12 months is summed income over averaged members, by area (county, urban,
rural by the public NBS code), and the ratio of urban to rural; intervals by inverting the known
integer-Laplace noise of every monthly cell (`privacy.inversion`, as the urban–rural indicator does).

Only the urban–rural sums are rolled up this way; figures that do not add up over months (band shares,
quantiles, the Gini, coverage as "any record in the year", key groups' bands) come from the year-end pack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aggregation.indicators import cells
from aggregation.indicators.model import Figure, IndicatorResult, MonitoringConfig, QueryRef, SubQuery
from aggregation.indicators.urban_rural import INCOME, MEMBERS, UrbanRuralRatio, urban_rural_ratio_of
from privacy.inversion import DENOMINATOR_NOT_POSITIVE, ratio_by_inversion

ROLLING_MONTHS = 12
NAME = "urban_rural_ratio_12m"


def rolling_urban_rural(
    config: MonitoringConfig,
    months: Sequence[tuple[str, Sequence[SubQuery], Mapping[str, Mapping[str, Any]]]],
    seed: int,
) -> IndicatorResult:
    """Per-capita income and the urban–rural ratio over the months given (reference month, the monthly
    urban–rural queries, role -> release), oldest first; every month must be there, released at one
    epsilon (so every month's cells have the same public noise scales). `seed` is unused: the intervals
    invert the known noise exactly, with nothing drawn."""
    if len(months) != ROLLING_MONTHS:
        raise ValueError(f"a rolling figure needs {ROLLING_MONTHS} monthly releases, got {len(months)}")
    scales = {(cells.scale(rel[INCOME], "sum"), cells.scale(rel[MEMBERS], "sum")) for _, _, rel in months}
    if len(scales) != 1:
        raise ValueError("the monthly releases of a rolling figure must share their noise scales")
    ((income_scale, members_scale),) = scales
    sums = [cells.direct(rel[INCOME], "sum") for _, _, rel in months]
    sizes = [cells.direct(rel[MEMBERS], "sum") for _, _, rel in months]
    keys = sorted({k for s in sums for k in s}, key=str)
    # One row per (month, cell): the twelve months' cells are independent noisy cells of the same scales.
    income = np.array([s.get(k, 0.0) for s in sums for k in keys])
    members = np.array([s.get(k, 0.0) for s in sizes for k in keys])
    urban = np.array([k[0] is not None and config.is_urban(k[0]) for _ in months for k in keys])
    rural = np.array([k[0] is not None and not config.is_urban(k[0]) for _ in months for k in keys])
    pools = {"county": np.ones_like(urban), "urban": urban, "rural": rural}
    first, last = months[0][0], months[-1][0]
    figures = []
    for group, mask in pools.items():
        m = int(mask.sum())
        # Summed income over the months' mean members = ROLLING_MONTHS x summed income / summed members.
        est = ratio_by_inversion(
            float(income[mask].sum()), (income_scale,) * m, float(members[mask].sum()), (members_scale,) * m
        )
        undefined = bool(est.undefined)
        figures.append(
            Figure(
                figure="per_capita_income",
                label=f"per-capita disposable income, {first}..{last}",
                group=group,
                value=None if undefined else ROLLING_MONTHS * float(est.value),
                low=None if undefined else ROLLING_MONTHS * float(est.low),
                high=None if undefined else ROLLING_MONTHS * float(est.high),
                unit="yuan",
                note=DENOMINATOR_NOT_POSITIVE if undefined else None,
            )
        )
    # The ratio of the two per-capita figures: the months' factor cancels, so it is the urban-rural
    # indicator's own inversion over all the months' cells.
    (value, low, high), note = urban_rural_ratio_of(
        income, members, urban, rural, (income_scale, members_scale)
    )
    defined = note is None
    figures.append(
        Figure(
            figure="urban_rural_ratio",
            label=f"urban / rural per-capita income, {first}..{last}",
            group="county",
            value=value if defined else None,
            low=low if defined else None,
            high=high if defined else None,
            unit="ratio",
            note=note,
        )
    )
    notes = [
        "No new budget: post-processing of the twelve monthly urban–rural releases listed, each charged "
        "once by its monthly pack.",
        "Each household's income is clamped per month to the monthly bounds before it is summed, so a "
        "household with one very large month counts less than in an annual clamp.",
    ]
    if not defined:
        notes.append(f"The urban–rural ratio is {note}.")
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
            "cells / mean of the twelve monthly noisy member sums; 95% interval by inverting the known "
            "noise of every monthly cell (Fieller); undefined where the members' interval reaches 0",
            "urban_rural_ratio": "ratio of the urban and rural figures, undefined unless the rural one is "
            "clearly positive; 95% interval by inverting the known noise of every monthly cell, as the "
            "urban_rural_ratio indicator does",
        },
    )
