"""Key groups (the seed's "X"): households with a member in a named group, counted and banded by village.

Each group is a named filter registered in the gateway (households with a minimum-livelihood recipient,
with a fishery worker, with a pensioner, with no wage earner, in-migrant households, ...). Groups
overlap, so each is its own DP histogram, charged separately: households of the group by village over
the band edges. Counts pool the bins; band shares are as in the income-band indicator.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from aggregation.bands import band_shares
from aggregation.indicators import cells, specs
from aggregation.indicators.base import Curves, Template
from aggregation.indicators.income_bands import band_edges, bands_of
from aggregation.indicators.model import (
    Figure,
    IndicatorError,
    IndicatorParams,
    MonitoringConfig,
    ReleaseDecl,
)
from aggregation.query import Filter, QuerySpec, Statistic, StatisticKind


class KeyGroups(Template):
    name = "key_groups"
    title = "Key groups: households, and their income bands, by village"
    title_zh = "重点群体家庭数及收入分档（按村/社区）"
    description = "For each named key group: households with a member in it, and their income-band shares."

    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        if not params.groups:
            raise IndicatorError("groups", "name at least one registered key group")
        return tuple(
            ReleaseDecl(
                role=f"group:{g.name}",
                what=f"histogram of households with household.has_{g.name} = 1 over the band edges, "
                "by village",
                weight=Fraction(1, len(params.groups)),
            )
            for g in params.groups
        )

    def build(
        self, role: str, epsilon: Decimal, params: IndicatorParams, config: MonitoringConfig
    ) -> QuerySpec:
        group = next(g for g in params.groups if f"group:{g.name}" == role)
        return specs.query(
            params,
            indicator=self.name,
            role=role,
            epsilon=epsilon,
            measure=specs.income(config),
            member_groups=(group,),
            filters=(Filter(dimension=group.ref, values=("1",)),),
            group_by=(config.village,),
            statistics=(Statistic(kind=StatisticKind.HISTOGRAM, edges=band_edges(bands_of(params, config))),),
        )

    def figures(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> tuple[list[Figure], dict[str, str], Curves]:
        bands = bands_of(params, config)
        edges = band_edges(bands)
        figures: list[Figure] = []
        for i, group in enumerate(params.groups):
            release = releases[f"group:{group.name}"]
            bins = cells.binned(release, "histogram", edges)
            keys = sorted(bins, key=str)
            villages = [k for k in keys if k[0] is not None]
            matrix = np.array([bins[k] for k in keys])
            real = np.array([k[0] is not None for k in keys])

            def totals(m: np.ndarray, real: np.ndarray = real) -> np.ndarray:
                # Raw noisy bins add up without bias; only the pooled total is clipped at 0.
                per_cell = m.sum(axis=-1)
                pooled = np.concatenate([per_cell.sum(axis=-1, keepdims=True), per_cell[..., real]], axis=-1)
                return np.maximum(pooled, 0)

            value, low, high = cells.simulate(
                [matrix], [cells.scale(release, "histogram")], totals, rng=np.random.default_rng(seed + i)
            )
            names = ["county", *[str(k[0]) for k in villages]]
            figures += [
                Figure(
                    figure="households",
                    label=group.name,
                    group=name,
                    value=float(value[j]),
                    low=float(low[j]),
                    high=float(high[j]),
                    unit="households",
                )
                for j, name in enumerate(names)
            ]
            all_keys = [str(k[0]) for k in keys]
            shares = band_shares(
                release,
                edges=edges,
                bands=bands,
                group_key=config.village,
                seed=seed + 100 + i,
                pools={"county": all_keys, **{n: [n] for n in names[1:]}},
            )
            figures += [
                Figure(
                    figure=f"share {s.band}",
                    label=group.name,
                    group=s.group,
                    value=s.share,
                    low=s.low,
                    high=s.high,
                    unit="share",
                )
                for s in shares
            ]
        methods = {
            "households": "sum of the group's raw noisy bins per village, pooled county-wide, then clipped "
            "at 0; 95% interval by simulating the integer-Laplace noise of every bin",
            "share": "as in income_bands, within the group's households",
        }
        return figures, methods, {}
