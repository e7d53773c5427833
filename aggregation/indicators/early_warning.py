"""Early warning: households, by village, whose income in the period fell by more than a given share
below the previous period.

Each query rolls the income proxy up over both periods in the same extracts (so one household's two
values link), with household membership fixed at the end of the later period: DP counts of households
by `household.income_trend` (fell / not fell / no income in the earlier period, counted separately),
county-wide and by village. Counts only: differential privacy cannot name a household, and nothing
here does.
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
    IndicatorError,
    IndicatorParams,
    MonitoringConfig,
    ReconciledTable,
    ReleaseDecl,
)
from aggregation.indicators.periods import months_before
from aggregation.query import (
    INCOME_TREND,
    TREND_DOMAIN,
    TREND_FELL,
    TREND_NO_BASELINE,
    TREND_NOT_FELL,
    Baseline,
    QuerySpec,
    Statistic,
    StatisticKind,
)
from privacy.inversion import clamped, noise_half_width, share_by_inversion

TREND, COUNTY = "trend", "county"
UNDEFINED_SHARE = "undefined: the noisy counts of households with earlier income are at most 0"


def baseline_of(params: IndicatorParams, config: MonitoringConfig) -> Baseline:
    """The earlier period (default: as many months just before the period) and the public drop share."""
    start, end = params.baseline_start, params.baseline_end
    if start is None or end is None:
        start, end = months_before(params.period_start, params.period_end)
    try:
        return Baseline(period_start=start, period_end=end, drop_share=params.drop_share or config.drop_share)
    except ValueError as exc:
        raise IndicatorError("baseline", str(exc)) from None


class EarlyWarning(Template):
    name = "early_warning"
    title = "Early warning: households whose income fell"
    title_zh = "家庭收入下降预警（按村/社区计数）"
    description = (
        "Households by village whose income fell by more than the drop share against the previous period; "
        "households without income in the earlier period counted separately. Counts only."
    )

    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        b = baseline_of(params, config)
        against = (
            f"{b.period_start}..{b.period_end}"
            if params.baseline_start
            else "the equally long period just before"
        )
        what = (
            f"count of households by income trend against {against} "
            f"(fell: below {1 - b.drop_share} of the earlier value)"
        )
        return (
            ReleaseDecl(role=COUNTY, what=what + ", county-wide", weight=Fraction(1, 4)),
            ReleaseDecl(role=TREND, what=what + ", by village", weight=Fraction(3, 4)),
        )

    def build(
        self, role: str, epsilon: Decimal, params: IndicatorParams, config: MonitoringConfig
    ) -> QuerySpec:
        return specs.query(
            params,
            indicator=self.name,
            role=role,
            epsilon=epsilon,
            measure=specs.income(config),
            baseline=baseline_of(params, config),
            group_by=(INCOME_TREND,) if role == COUNTY else (config.village, INCOME_TREND),
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
        counts = cells.direct(releases[TREND], "count")
        villages = sorted({k[0] for k in counts if k[0] is not None})
        # County-wide from the county-wide release; each village from the village release. The public
        # "other" cells of the trend are structurally empty (the gateway computes it for every household).
        matrix = np.array(
            [[county.get((t,), 0.0) for t in TREND_DOMAIN]]
            + [[counts.get((v, t), 0.0) for t in TREND_DOMAIN] for v in villages]
        )
        county_scale = cells.scale(releases[COUNTY], "count")
        village_scale = cells.scale(releases[TREND], "count")
        scales = np.array([county_scale] + [village_scale] * len(villages))
        fell, not_fell, none = (
            TREND_DOMAIN.index(t) for t in (TREND_FELL, TREND_NOT_FELL, TREND_NO_BASELINE)
        )
        # Counts: the noisy count clamped at 0 with its exact interval, clamped alike.
        half = np.array([noise_half_width(s) for s in scales])
        counts_of = {j: clamped(matrix[:, j], half, lower=0.0) for j in (fell, none)}
        # The share fallen: fell / (fell + not fell), inverted per noise scale (county, villages).
        county_share = share_by_inversion(matrix[:1, fell], county_scale, matrix[:1, not_fell], county_scale)
        village_share = share_by_inversion(
            matrix[1:, fell], village_scale, matrix[1:, not_fell], village_scale
        )
        share = tuple(
            np.concatenate([getattr(county_share, a), getattr(village_share, a)])
            for a in ("value", "low", "high")
        )
        value = np.stack([counts_of[fell][0], counts_of[none][0], share[0]], axis=-1)
        low = np.stack([counts_of[fell][1], counts_of[none][1], share[1]], axis=-1)
        high = np.stack([counts_of[fell][2], counts_of[none][2], share[2]], axis=-1)
        b = baseline_of(params, config)
        names = ["county", *[str(v) for v in villages]]
        out: list[Figure] = []
        for i, name in enumerate(names):
            for j, (figure, label, unit) in enumerate(
                (
                    ("households_fell", f"income fell by more than {b.drop_share:%}", "households"),
                    (
                        "households_no_baseline",
                        f"no income in {b.period_start}..{b.period_end}",
                        "households",
                    ),
                    ("share_fell", "of households with earlier income", "share"),
                )
            ):
                out.append(
                    Figure(
                        figure=figure,
                        label=label,
                        group=name,
                        value=None if np.isnan(value[i, j]) else float(value[i, j]),
                        note=UNDEFINED_SHARE if np.isnan(value[i, j]) else None,
                        low=float(low[i, j]),
                        high=float(high[i, j]),
                        unit=unit,
                    )
                )
        methods = {
            "households_fell": "noisy count (clamped at 0; 95% interval = noisy ± the integer-Laplace "
            "half-width, clamped alike) of households whose clamped income in the period is below "
            f"(1 - {b.drop_share}) x their clamped income in {b.period_start}..{b.period_end}",
            "households_no_baseline": "noisy count of households with no positive income in the earlier "
            "period",
            "share_fell": "noisy fell / (noisy fell + noisy not fell), each clipped at 0; 95% interval by "
            "inverting the known noise of both counts",
        }
        return out, methods, {}

    def tables(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> list[ReconciledTable]:
        # The trend's "other" column is structurally empty (the gateway computes it for every household).
        table = count_table(
            "households by income trend",
            unit="households",
            releases=releases,
            levels=((COUNTY, "county"), (TREND, "village")),
            columns={t: t for t in TREND_DOMAIN},
            seed=seed,
        )
        return [table]
