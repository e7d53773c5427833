"""Key groups (the seed's "X"): households with a member in a named group, counted and banded by village.

Each group is a named filter registered in the gateway (households with a minimum-livelihood recipient,
with a fishery worker, with a pensioner, with no wage earner, in-migrant households, ...). Groups
overlap, so each is measured on its own and charged separately, by two DP histograms of the group's
households over the band edges: one county-wide (the county figures) and one by village (the village
figures). Counts add the bins; band shares are as in the income-band indicator.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from aggregation.bands import UNDEFINED_SHARE, band_shares
from aggregation.indicators import cells, specs
from aggregation.indicators.base import Curves, Template
from aggregation.indicators.families import histogram_table
from aggregation.indicators.income_bands import band_edges, bands_of
from aggregation.indicators.model import (
    Figure,
    IndicatorError,
    IndicatorParams,
    MonitoringConfig,
    ReconciledTable,
    ReleaseDecl,
)
from aggregation.query import Filter, QuerySpec, Statistic, StatisticKind
from privacy.inversion import pooled_sum

COUNTY = ":county"


class KeyGroups(Template):
    name = "key_groups"
    title = "Key groups: households, and their income bands, county-wide and by village"
    title_zh = "重点群体家庭数及收入分档（全县、按村/社区）"
    description = "For each named key group: households with a member in it, and their income-band shares."

    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        if not params.groups:
            raise IndicatorError("groups", "name at least one registered key group")
        share = Fraction(1, 2 * len(params.groups))
        out = []
        for g in params.groups:
            what = f"histogram of households with household.has_{g.name} = 1 over the band edges"
            out.append(ReleaseDecl(role=f"group:{g.name}{COUNTY}", what=what + ", county-wide", weight=share))
            out.append(ReleaseDecl(role=f"group:{g.name}", what=what + ", by village", weight=share))
        return tuple(out)

    def build(
        self, role: str, epsilon: Decimal, params: IndicatorParams, config: MonitoringConfig
    ) -> QuerySpec:
        name = role.removeprefix("group:").removesuffix(COUNTY)
        group = next(g for g in params.groups if g.name == name)
        return specs.query(
            params,
            indicator=self.name,
            role=role,
            epsilon=epsilon,
            measure=specs.income(config),
            member_groups=(group,),
            filters=(Filter(dimension=group.ref, values=("1",)),),
            group_by=() if role.endswith(COUNTY) else (config.village,),
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
        for group in params.groups:
            # County-wide figures from the county-wide release: a village histogram pooled over hundreds
            # of villages would carry the noise of every one of its cells.
            county = releases[f"group:{group.name}{COUNTY}"]
            by_village = releases[f"group:{group.name}"]
            for release, group_key in ((county, None), (by_village, config.village)):
                bins = cells.binned(release, "histogram", edges)
                keys = [k for k in sorted(bins, key=str) if group_key is None or k[0] is not None]
                matrix = np.array([bins[k] for k in keys])
                # Raw noisy bins add up without bias; only the total is clamped at 0, interval alike.
                value, low, high = pooled_sum(matrix, cells.scale(release, "histogram"))
                names = ["county"] if group_key is None else [str(k[0]) for k in keys]
                figures += [
                    Figure(
                        figure="households",
                        label=group.name,
                        group=n,
                        value=float(value[j]),
                        low=float(low[j]),
                        high=float(high[j]),
                        unit="households",
                    )
                    for j, n in enumerate(names)
                ]
                shares = band_shares(
                    release,
                    edges=edges,
                    bands=bands,
                    group_key=group_key,
                    pools={"county": [""]} if group_key is None else {n: [n] for n in names},
                )
                figures += [
                    Figure(
                        figure=f"share {s.band}",
                        label=group.name,
                        group=s.group,
                        value=s.share,
                        note=None if s.share is not None else UNDEFINED_SHARE,
                        low=s.low,
                        high=s.high,
                        unit="share",
                    )
                    for s in shares
                ]
        methods = {
            "households": "sum of the group's raw noisy bins, clamped at 0: county-wide from the county-wide "
            "release, per village from the village release; 95% interval = sum ± the exact 95% quantile of "
            "the summed integer-Laplace noise of its bins, clamped at 0 like the value",
            "share": "as in income_bands, within the group's households",
        }
        return figures, methods, {}

    def tables(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> list[ReconciledTable]:
        return [
            histogram_table(
                f"households with household.has_{group.name} by income bin",
                unit="households",
                releases=releases,
                levels=((f"group:{group.name}{COUNTY}", "county"), (f"group:{group.name}", "village")),
                edges=band_edges(bands_of(params, config)),
                seed=seed + i,
            )
            for i, group in enumerate(params.groups)
        ]
