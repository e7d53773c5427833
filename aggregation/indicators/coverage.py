"""Personal income monitoring coverage: the share of registered persons with at least one income record
in any department over the period, by village and county-wide.

One DP histogram (a count) of the register's persons by village x covered, so each person falls in one
cell. The household stays the protected unit: at most `size_cap` members of a household are counted, and
the release pays for that many rows per household.
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
from aggregation.query import COVERED, QuerySpec, Statistic, StatisticKind
from connectors.config import Unit

PERSONS = "persons"


class Coverage(Template):
    name = "coverage"
    title = "Personal income monitoring coverage"
    title_zh = "个人收入监测覆盖率"
    counted = "person"
    description = "Share of registered persons with at least one income record in any department."

    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        return (
            ReleaseDecl(
                role=PERSONS,
                what="count of registered persons by village x covered "
                f"(at most {config.size_cap} per household)",
                weight=Fraction(1),
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
            unit=Unit.PERSON,
            member_cap=config.size_cap,
            coverage=config.coverage_datasets,
            group_by=(config.village, COVERED),
            statistics=(Statistic(kind=StatisticKind.COUNT),),
        )

    def figures(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> tuple[list[Figure], dict[str, str], Curves]:
        release = releases[PERSONS]
        counts = cells.direct(release, "count")
        villages = sorted({k[0] for k in counts if k[0] is not None})
        every = [*villages, None]
        yes = np.array([counts.get((v, "1"), 0.0) for v in every])
        # `person.covered` is computed at the gateway and never null: its public "other" cells are
        # structurally empty and left out (adding them would add their noise to the figure).
        no = np.array([counts.get((v, "0"), 0.0) for v in every])

        def shares(y: np.ndarray, n: np.ndarray) -> np.ndarray:
            # Pool raw noisy counts (unbiased), clip each pooled count at 0, then divide.
            pooled_y = np.concatenate([y.sum(axis=-1, keepdims=True), y[..., :-1]], axis=-1)
            pooled_n = np.concatenate([n.sum(axis=-1, keepdims=True), n[..., :-1]], axis=-1)
            pooled_y, pooled_n = np.maximum(pooled_y, 0), np.maximum(pooled_n, 0)
            return cells.safe_ratio(pooled_y, pooled_y + pooled_n)

        value, low, high = cells.simulate(
            [yes, no],
            [cells.scale(release, "count")] * 2,
            shares,
            rng=np.random.default_rng(seed),
            clip=(0, 1),
        )
        groups = ["county", *[str(v) for v in villages]]
        figures = [
            Figure(
                figure="coverage",
                label="persons with an income record",
                group=g,
                value=float(value[i]),
                low=float(low[i]),
                high=float(high[i]),
                unit="share",
            )
            for i, g in enumerate(groups)
        ]
        methods = {
            "coverage": "noisy covered persons / noisy registered persons, each pooled from raw noisy "
            "cells and then clipped at 0; county-wide pools every village and the public 'other' cell; 95% "
            "interval by simulating the integer-Laplace noise of every pooled cell",
        }
        return figures, methods, {}
