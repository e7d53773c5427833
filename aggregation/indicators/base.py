"""The shared part of every indicator template: declared releases, the epsilon split, building queries."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from aggregation.indicators.model import (
    Figure,
    IndicatorParams,
    MonitoringConfig,
    ReleaseDecl,
    SubQuery,
    split_epsilon,
)
from aggregation.query import QuerySpec

Curves = dict[str, list[dict[str, float]]]


class Template:
    """Subclasses declare `releases` and implement `build` (one query per role) and `figures`."""

    name: str = ""
    title: str = ""
    title_zh: str = ""
    counted: str = "household"
    description: str = ""

    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        raise NotImplementedError

    def build(
        self, role: str, epsilon: Decimal, params: IndicatorParams, config: MonitoringConfig
    ) -> QuerySpec:
        raise NotImplementedError

    def queries(self, params: IndicatorParams, config: MonitoringConfig) -> list[SubQuery]:
        """One query per declared release, with epsilon split exactly by the declared weights."""
        decls = self.releases(params, config)
        split = split_epsilon(params.epsilon, {d.role: d.weight for d in decls})
        return [SubQuery(role=d.role, spec=self.build(d.role, split[d.role], params, config)) for d in decls]

    def figures(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> tuple[list[Figure], dict[str, str], Curves]:
        raise NotImplementedError
