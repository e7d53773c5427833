"""The shared part of every indicator template: declared releases, the epsilon split, building queries."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from aggregation.indicators.model import (
    Figure,
    IndicatorParams,
    MonitoringConfig,
    ReconciledTable,
    ReleaseDecl,
    SubQuery,
    split_epsilon,
)
from aggregation.query import QuerySpec

Curves = dict[str, list[dict[str, float]]]


class Template(ABC):
    """An indicator: it declares its releases, builds one query per release and derives its figures."""

    name: str = ""
    title: str = ""
    title_zh: str = ""
    counted: str = "household"
    description: str = ""

    @abstractmethod
    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        """The releases this indicator needs, each with its weight in the indicator's epsilon."""

    @abstractmethod
    def build(
        self, role: str, epsilon: Decimal, params: IndicatorParams, config: MonitoringConfig
    ) -> QuerySpec:
        """The query of one declared release, at its share of epsilon."""

    def queries(self, params: IndicatorParams, config: MonitoringConfig) -> list[SubQuery]:
        """One query per declared release, with epsilon split exactly by the declared weights."""
        decls = self.releases(params, config)
        split = split_epsilon(params.epsilon, {d.role: d.weight for d in decls})
        return [SubQuery(role=d.role, spec=self.build(d.role, split[d.role], params, config)) for d in decls]

    @abstractmethod
    def figures(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> tuple[list[Figure], dict[str, str], Curves]:
        """Figures, the method of each, and curves, from the released results (role -> release JSON);
        post-processing only, its simulations seeded by `seed`."""

    def tables(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> list[ReconciledTable]:
        """The raw and reconciled count tables of the indicator's release family (county, urban-rural,
        village levels of one population); an indicator whose releases form no such family has none."""
        return []
