"""Urban–rural income ratio: urban per-capita disposable income over rural per-capita income.

Per-capita income uses the household as the unit: per area, the DP sum of household income over the DP
sum of household members (each household's members clamped to the public size cap). Both sums are
released by urban-rural code and pooled by the public NBS code (1xx urban, 2xx rural); the ratio of
ratios and its interval come from simulating the known noise of every pooled cell around the noisy sums.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from aggregation.indicators import cells, specs
from aggregation.indicators.base import Curves, Template
from aggregation.indicators.model import Figure, IndicatorParams, MonitoringConfig, ReleaseDecl
from aggregation.query import QuerySpec, Statistic, StatisticKind

INCOME, MEMBERS = "income_sum", "members_sum"


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

        def per_capita(inc: np.ndarray, mem: np.ndarray) -> np.ndarray:
            pools = [np.ones_like(urban), urban, rural]
            out = [cells.safe_ratio(inc[..., p].sum(axis=-1), mem[..., p].sum(axis=-1)) for p in pools]
            out.append(cells.safe_ratio(out[1], out[2], floor=1e-9))
            return np.stack(out, axis=-1)

        rng = np.random.default_rng(seed)
        value, low, high = cells.simulate(
            [noisy_income, noisy_members],
            [cells.scale(income, "sum"), cells.scale(members, "sum")],
            per_capita,
            rng=rng,
        )
        figures = [
            Figure(
                figure="per_capita_income",
                label="per-capita disposable income",
                group=group,
                value=float(value[i]),
                low=float(low[i]),
                high=float(high[i]),
                unit="yuan",
            )
            for i, group in enumerate(("county", "urban", "rural"))
        ]
        figures.append(
            Figure(
                figure="urban_rural_ratio",
                label="urban / rural per-capita income",
                group="county",
                value=float(value[3]),
                low=float(low[3]),
                high=float(high[3]),
                unit="ratio",
            )
        )
        methods = {
            "per_capita_income": "noisy income sum / noisy members sum over the area's urban-rural cells "
            "(denominator floored at 1)",
            "urban_rural_ratio": "ratio of the urban and rural per-capita figures; 95% interval by "
            "simulating the integer-Laplace noise of every pooled sum around the noisy values",
        }
        return figures, methods, {}
