"""The household income monitoring indicators of the county's plan, as DP templates.

    indicator(params) -> queries (each an ordinary query: approved, charged, audited)
    released results  -> figures with 95% intervals (post-processing only: no extra budget)

:data:`INDICATORS` lists every template by name; :data:`PACKS` the packs (the monthly monitoring pack).
:func:`evaluate` turns the releases of one indicator into its :class:`IndicatorResult`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from aggregation.indicators.base import Template
from aggregation.indicators.coverage import Coverage
from aggregation.indicators.early_warning import EarlyWarning
from aggregation.indicators.income_bands import IncomeBands
from aggregation.indicators.income_distribution import IncomeDistribution
from aggregation.indicators.key_groups import KeyGroups
from aggregation.indicators.model import (
    PROXY_NOTE,
    Figure,
    IndicatorError,
    IndicatorParams,
    IndicatorResult,
    MonitoringConfig,
    QueryRef,
    SubQuery,
)
from aggregation.indicators.pack import MONTHLY, Pack
from aggregation.indicators.periods import months_ending
from aggregation.indicators.urban_rural import UrbanRuralRatio

__all__ = [
    "INDICATORS",
    "PACKS",
    "Figure",
    "IndicatorError",
    "IndicatorParams",
    "IndicatorResult",
    "MonitoringConfig",
    "Pack",
    "SubQuery",
    "Template",
    "evaluate",
    "months_ending",
]

INDICATORS: dict[str, Template] = {
    t.name: t
    for t in (IncomeBands(), UrbanRuralRatio(), IncomeDistribution(), Coverage(), KeyGroups(), EarlyWarning())
}
PACKS: dict[str, Pack] = {MONTHLY.name: MONTHLY}

COUNTS_ONLY = (
    "Counts only: differential privacy cannot name households, and this indicator does not; no list of "
    "households exists anywhere in the federation's output."
)


def simulation_seed(digests: Sequence[str]) -> int:
    """Intervals are simulated with a seed fixed by the releases, so re-serving a result repeats them."""
    return int.from_bytes(hashlib.sha256("|".join(digests).encode()).digest()[:8], "big")


def evaluate(
    indicator: Template,
    params: IndicatorParams,
    config: MonitoringConfig,
    queries: Sequence[SubQuery],
    releases: Mapping[str, Mapping[str, Any]],
) -> IndicatorResult:
    """The figures of one indicator from its released results (role -> the release's JSON dict)."""
    seed = simulation_seed([q.spec.digest for q in queries])
    figures, methods, curves = indicator.figures(params, config, releases, seed)
    notes = [PROXY_NOTE]
    if indicator.name == EarlyWarning.name:
        notes.append(COUNTS_ONLY)
    notes.append(
        "Every figure is post-processing of the listed DP releases; its 95% interval reflects the DP noise "
        "only, not the proxy's definition or the clipping to public bounds."
    )
    return IndicatorResult(
        indicator=indicator.name,
        title=indicator.title,
        title_zh=indicator.title_zh,
        period_start=params.period_start,
        period_end=params.period_end,
        epsilon=str(params.epsilon),
        counted=indicator.counted,
        queries=[
            QueryRef(role=q.role, query_id=q.spec.query_id, epsilon=str(q.spec.epsilon)) for q in queries
        ],
        figures=figures,
        notes=notes,
        methods=methods,
        curves=curves,
        tables=indicator.tables(params, config, releases, seed),
    )
