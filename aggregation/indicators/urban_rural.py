"""Urban–rural income ratio: urban per-capita disposable income over rural per-capita income.

Per-capita income uses the household as the unit: per area, the DP sum of household income over the DP
sum of household members (each household's members clamped to the public size cap). Both sums are
released by urban-rural code and pooled by the public NBS code (1xx urban, 2xx rural). Intervals invert
the known noise of the pooled sums (:mod:`privacy.inversion`); a figure whose denominator is not clearly
positive is undefined, with the reason, rather than a huge number from a floored denominator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from aggregation.indicators import cells, specs
from aggregation.indicators.base import Curves, Template
from aggregation.indicators.model import Figure, IndicatorParams, MonitoringConfig, ReleaseDecl
from aggregation.query import QuerySpec, Statistic, StatisticKind
from privacy.intervals import CONFIDENCE
from privacy.inversion import (
    DENOMINATOR_NOT_POSITIVE,
    InvertedEstimate,
    noise_half_width,
    ratio_by_inversion,
)

INCOME, MEMBERS = "income_sum", "members_sum"
RURAL_NOT_POSITIVE = (
    "undefined: the rural per-capita income's interval reaches 0, so the data cannot tell the ratio from "
    "infinity"
)


class UrbanRuralRatio(Template):
    name = "urban_rural_ratio"
    title = "Urban–rural ratio of per-capita disposable income"
    title_zh = "城乡居民人均可支配收入比"
    description = "Per-capita disposable income of urban and rural households and their ratio."

    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        return (
            ReleaseDecl(
                role=INCOME, what="sum of household income by urban-rural code", weight=Fraction(3, 5)
            ),
            ReleaseDecl(
                role=MEMBERS,
                what=f"sum of household members (each clamped to {config.size_cap}) by urban-rural code",
                weight=Fraction(2, 5),
            ),
        )

    def build(
        self, role: str, epsilon: Decimal, params: IndicatorParams, config: MonitoringConfig
    ) -> QuerySpec:
        return specs.query(
            params,
            indicator=self.name,
            role=role,
            epsilon=epsilon,
            measure=specs.income(config, upper=config.income_sum_upper)
            if role == INCOME
            else specs.members(config),
            group_by=(config.urban_rural,),
            statistics=(Statistic(kind=StatisticKind.SUM),),
        )

    def figures(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> tuple[list[Figure], dict[str, str], Curves]:
        income, members = releases[INCOME], releases[MEMBERS]
        sums, sizes = cells.direct(income, "sum"), cells.direct(members, "sum")
        keys = sorted(sums, key=lambda k: str(k))
        urban = np.array([k[0] is not None and config.is_urban(k[0]) for k in keys])
        rural = np.array([k[0] is not None and not config.is_urban(k[0]) for k in keys])
        noisy_income = np.array([sums[k] for k in keys])
        noisy_members = np.array([sizes[k] for k in keys])
        income_scale, members_scale = cells.scale(income, "sum"), cells.scale(members, "sum")
        pools = {"county": np.ones_like(urban), "urban": urban, "rural": rural}

        def per_capita(mask: np.ndarray, confidence: float = CONFIDENCE) -> InvertedEstimate:
            m = int(mask.sum())
            return ratio_by_inversion(
                noisy_income[mask].sum(),
                (income_scale,) * m,
                noisy_members[mask].sum(),
                (members_scale,) * m,
                confidence=confidence,
            )

        figures = []
        for group, mask in pools.items():
            est = per_capita(mask)
            figures.append(
                Figure(
                    figure="per_capita_income",
                    label="per-capita disposable income",
                    group=group,
                    value=_number(est.value),
                    low=_number(est.low),
                    high=_number(est.high),
                    unit="yuan",
                    note=DENOMINATOR_NOT_POSITIVE if bool(est.undefined) else None,
                )
            )
        ratio, note = urban_rural_ratio_of(
            noisy_income, noisy_members, urban, rural, (income_scale, members_scale)
        )
        figures.append(
            Figure(
                figure="urban_rural_ratio",
                label="urban / rural per-capita income",
                group="county",
                value=_number(ratio[0]),
                low=_number(ratio[1]),
                high=_number(ratio[2]),
                unit="ratio",
                note=note,
            )
        )
        methods = {
            "per_capita_income": "noisy income sum / noisy members sum over the area's urban-rural cells; "
            "95% interval by inverting the known noise of both sums (Fieller: every ratio r for which "
            "income - r x members is within the noise's 95% range); undefined (null) where the members "
            "sum's own interval reaches 0",
            "urban_rural_ratio": "ratio of the urban and rural per-capita figures; undefined (null) unless "
            "the rural one is clearly positive. 95% interval by inverting the known noise (Fieller: every "
            "ratio r for which urban - r x rural per-capita income is within its noise's 95% range; the "
            "per-capita figures' noise is their income and members sums' noise, to first order in the "
            "members sums' relative noise)",
        }
        return figures, methods, {}


def urban_rural_ratio_of(
    noisy_income: np.ndarray,
    noisy_members: np.ndarray,
    urban: np.ndarray,
    rural: np.ndarray,
    scales: tuple[float, float],
) -> tuple[tuple[float, float, float], str | None]:
    """Value, low, high of urban / rural per-capita income, and why it is undefined if it is.

    A Fieller-type inversion of ``A / B`` with ``A = I_u / M_u`` and ``B = I_r / M_r``: ``r`` is accepted
    when ``A - r B`` is within the 95% range of its noise. To first order in the members sums' (small)
    relative noise, the noise of ``A`` is that of ``I_u`` over ``M_u`` plus ``A`` times that of ``M_u`` over
    ``M_u``: a sum of independent integer-Laplace cells with known scales, so the inversion of
    :func:`privacy.inversion.ratio_by_inversion` applies as for any ratio of two noisy totals.
    """
    nan = (math.nan, math.nan, math.nan)
    if not urban.any() or not rural.any():
        return nan, "undefined: the release has no urban or no rural cell"
    income_scale, members_scale = scales
    parts = []
    for mask in (urban, rural):
        m = int(mask.sum())
        size = float(noisy_members[mask].sum())
        if size <= noise_half_width((members_scale,) * m):
            return nan, RURAL_NOT_POSITIVE  # (or urban): its members sum is not clearly positive
        per_capita = float(noisy_income[mask].sum()) / size
        noise = (income_scale / size,) * m + (abs(per_capita) * members_scale / size,) * m
        parts.append((per_capita, noise))
    (a, a_noise), (b, b_noise) = parts
    # The plug-in scales are not on the integer lattice any more: continuous Laplace is their noise.
    est = ratio_by_inversion(a, a_noise, b, b_noise, noise="laplace")
    if bool(est.undefined):
        return nan, RURAL_NOT_POSITIVE
    return (float(est.value), float(est.low), float(est.high)), None


def _number(x: float | np.ndarray) -> float | None:
    v = float(x)
    return None if math.isnan(v) else v
