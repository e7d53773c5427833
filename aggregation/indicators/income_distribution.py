"""Income distribution: P10, P50 and P90, quintile income shares, the Gini coefficient and the Lorenz
curve, of household income and of per-capita income (with the household as the unit).

Each is one fine DP histogram over public edges with per-bin sums (`lorenz`: every household's offset
inside its bin, so each bin's sum noise is sized to the bin's width, not to the global bound). Quantiles
invert the noisy CDF of the bin counts; the Lorenz curve, quintile shares and Gini come from the noisy bin
totals; intervals by simulating the known noise around the noisy values (`aggregation.distribution`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from aggregation.distribution import lorenz_from_release, quantiles_from_lorenz
from aggregation.indicators import specs
from aggregation.indicators.base import Curves, Template
from aggregation.indicators.model import Figure, IndicatorParams, MonitoringConfig, ReleaseDecl
from aggregation.query import QuerySpec, Statistic, StatisticKind

HOUSEHOLD, PER_CAPITA = "household", "per_capita"
PROBS = (0.1, 0.5, 0.9)
_LABELS = {HOUSEHOLD: "household income", PER_CAPITA: "per-capita income"}


def _number(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


class IncomeDistribution(Template):
    name = "income_distribution"
    title = "Income distribution: deciles, quintile shares, Gini"
    title_zh = "收入分布：P10/P50/P90、五等分收入份额、基尼系数"
    description = (
        "P10, P50, P90, quintile income shares, Gini and the Lorenz curve of household and per-capita "
        "disposable income."
    )

    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        return (
            ReleaseDecl(
                role=HOUSEHOLD,
                what=f"lorenz histogram of household income over {len(config.household_edges)} public edges",
                weight=Fraction(3, 5),
            ),
            ReleaseDecl(
                role=PER_CAPITA,
                what="lorenz histogram of per-capita income over "
                f"{len(config.per_capita_edges)} public edges",
                weight=Fraction(2, 5),
            ),
        )

    def build(
        self, role: str, epsilon: Decimal, params: IndicatorParams, config: MonitoringConfig
    ) -> QuerySpec:
        per_capita = role == PER_CAPITA
        edges = config.per_capita_edges if per_capita else config.household_edges
        return specs.query(
            params,
            indicator=self.name,
            role=role,
            epsilon=epsilon,
            measure=specs.income(
                config,
                per_capita=per_capita,
                lower=None if per_capita else config.distribution_lower,
                upper=None if per_capita else config.distribution_upper,
            ),
            statistics=(Statistic(kind=StatisticKind.LORENZ, edges=edges),),
        )

    def figures(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> tuple[list[Figure], dict[str, str], Curves]:
        figures: list[Figure] = []
        curves: Curves = {}
        for i, role in enumerate((HOUSEHOLD, PER_CAPITA)):
            release = releases[role]
            rng = np.random.default_rng(seed + i)
            (estimate,) = lorenz_from_release(release, rng=rng).values()
            (quantiles,) = quantiles_from_lorenz(release, PROBS, rng=rng).values()
            label = _LABELS[role]

            def add(figure: str, unit: str, f: Any, label: str = label) -> None:
                figures.append(
                    Figure(
                        figure=figure,
                        label=label,
                        group="county",
                        value=_number(f.value),
                        low=_number(f.low),
                        high=_number(f.high),
                        unit=unit,
                    )
                )

            for p, q in zip(PROBS, quantiles, strict=True):
                add(f"P{round(p * 100)}", "yuan", q)
            add("mean", "yuan", estimate.mean)
            add("gini", "index", estimate.gini)
            for k, q in enumerate(estimate.quintile_shares, start=1):
                add(f"quintile {k} share", "share", q)
            curves[f"lorenz {label}"] = [
                {"p": p.value, "share": s.value, "low": s.low, "high": s.high}
                for p, s in zip(estimate.population_shares, estimate.income_shares, strict=True)
                if not (math.isnan(p.value) or math.isnan(s.value))
            ]
        methods = {
            "quantiles": "inverse of the noisy CDF of the lorenz bin counts (linear inside a bin); interval "
            "from the simulated CDF band",
            "gini": "1 - sum_j p_j (L_j-1 + L_j) over the bins' noisy totals (count x bin lower edge + noisy "
            "offset sum): equality within each bin, so it understates the Gini slightly (grouping bias); "
            "interval by simulation",
            "quintile share": "the noisy Lorenz curve at 20%, 40%, 60%, 80% (linear between bin points)",
            "per-capita": "each household's income divided by its registered members, the household the unit",
        }
        return figures, methods, curves
