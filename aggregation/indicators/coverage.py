"""Personal income monitoring coverage: the share of registered persons with at least one income record
in any department over the period, by village and county-wide.

DP counts of the register's persons by covered (county-wide) and by village x covered, so each person
falls in one cell of each. The household stays the protected unit: at most `size_cap` members of a
household are counted, and each release pays for that many rows per household.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from aggregation.indicators import cells, specs
from aggregation.indicators.base import Curves, Template
from aggregation.indicators.families import count_table
from aggregation.indicators.model import (
    Figure,
    IndicatorParams,
    MonitoringConfig,
    ReconciledTable,
    ReleaseDecl,
)
from aggregation.query import COVERED, QuerySpec, Statistic, StatisticKind
from connectors.config import Unit

PERSONS, COUNTY = "persons", "county"


class Coverage(Template):
    name = "coverage"
    title = "Personal income monitoring coverage"
    title_zh = "个人收入监测覆盖率"
    counted = "person"
    description = "Share of registered persons with at least one income record in any department."

    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        what = f"count of registered persons (at most {config.size_cap} per household)"
        return (
            ReleaseDecl(role=COUNTY, what=what + " by covered, county-wide", weight=Fraction(1, 4)),
            ReleaseDecl(role=PERSONS, what=what + " by village x covered", weight=Fraction(3, 4)),
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
            group_by=(COVERED,) if role == COUNTY else (config.village, COVERED),
            statistics=(Statistic(kind=StatisticKind.COUNT),),
        )

    def figures(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> tuple[list[Figure], dict[str, str], Curves]:
        county = cells.direct(releases[COUNTY], "count")
        counts = cells.direct(releases[PERSONS], "count")
        villages = sorted({k[0] for k in counts if k[0] is not None})
        # `person.covered` is computed at the gateway and never null: its public "other" cells are
        # structurally empty and left out (adding them would add their noise to the figure).
        yes = np.array([county.get(("1",), 0.0), *(counts.get((v, "1"), 0.0) for v in villages)])
        no = np.array([county.get(("0",), 0.0), *(counts.get((v, "0"), 0.0) for v in villages)])
        scales = np.array(
            [cells.scale(releases[COUNTY], "count")]
            + [cells.scale(releases[PERSONS], "count")] * len(villages)
        )

        def shares(y: np.ndarray, n: np.ndarray) -> np.ndarray:
            y, n = np.maximum(y, 0), np.maximum(n, 0)
            return cells.safe_ratio(y, y + n)

        value, low, high = cells.simulate(
            [yes, no], [scales, scales], shares, rng=np.random.default_rng(seed), clip=(0, 1)
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
            "coverage": "noisy covered persons / noisy registered persons (each clipped at 0), county-wide "
            "from the county-wide release, per village from the village release; 95% interval by "
            "simulating the integer-Laplace noise of both counts",
        }
        return figures, methods, {}

    def tables(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> list[ReconciledTable]:
        # person.covered's "other" column is structurally empty (the gateway computes it for everyone).
        table = count_table(
            "registered persons by income record",
            unit="persons",
            releases=releases,
            levels=((COUNTY, "county"), (PERSONS, "village")),
            columns={"1": "covered", "0": "not covered"},
            seed=seed,
        )
        return [table]
