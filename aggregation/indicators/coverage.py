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
from privacy.inversion import share_by_inversion

PERSONS, COUNTY = "persons", "county"
UNDEFINED_COVERAGE = "undefined: both noisy counts are at most 0"


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
        # County-wide and village cells have different noise scales: one inversion each.
        county_est = share_by_inversion(
            yes[:1], cells.scale(releases[COUNTY], "count"), no[:1], cells.scale(releases[COUNTY], "count")
        )
        village_scale = cells.scale(releases[PERSONS], "count")
        village_est = share_by_inversion(yes[1:], village_scale, no[1:], village_scale)
        value, low, high = (
            np.concatenate([getattr(county_est, a), getattr(village_est, a)])
            for a in ("value", "low", "high")
        )
        groups = ["county", *[str(v) for v in villages]]
        figures = [
            Figure(
                figure="coverage",
                label="persons with an income record",
                group=g,
                value=None if np.isnan(value[i]) else float(value[i]),
                note=UNDEFINED_COVERAGE if np.isnan(value[i]) else None,
                low=float(low[i]),
                high=float(high[i]),
                unit="share",
            )
            for i, g in enumerate(groups)
        ]
        methods = {
            "coverage": "noisy covered / (noisy covered + noisy not covered), each clipped at 0, county-wide "
            "from the county-wide release, per village from the village release; 95% interval by inverting "
            "the known integer-Laplace noise of both counts (every share they make plausible)",
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
