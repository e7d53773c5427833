"""Income bands: the share of households whose disposable income lies in each band (the seed's
100k–500k and 200k–600k yuan, or any bands given), county-wide, urban, rural and by village.

Two DP histograms of households over the bands' edges (disjoint bins, so each household is in one bin of
each): one by village, one by urban-rural code. Shares are noisy in-band bins over the noisy total;
county, urban and rural pool the urban-rural cells by their public NBS code (1xx urban, 2xx rural).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

from aggregation.bands import UNDEFINED_SHARE, band_shares
from aggregation.indicators import specs
from aggregation.indicators.base import Curves, Template
from aggregation.indicators.families import histogram_table
from aggregation.indicators.model import (
    Figure,
    IndicatorError,
    IndicatorParams,
    MonitoringConfig,
    ReconciledTable,
    ReleaseDecl,
)
from aggregation.query import QuerySpec, Statistic, StatisticKind

BY_VILLAGE, BY_CODE = "by_village", "by_urban_rural"


def bands_of(params: IndicatorParams, config: MonitoringConfig) -> dict[str, tuple[int, int]]:
    bands = params.bands or config.bands
    for name, (low, high) in bands.items():
        if not low < high:
            raise IndicatorError("bands", f"band {name}: its low end must be below its high end")
        if low < config.income_lower or high > config.income_upper:
            raise IndicatorError(
                "bands",
                f"band {name}: its ends must lie within the public bounds "
                f"[{config.income_lower}, {config.income_upper}]",
            )
    return dict(bands)


def band_edges(bands: Mapping[str, tuple[int, int]]) -> tuple[int, ...]:
    return tuple(sorted({end for pair in bands.values() for end in pair}))


def pools_by_code(codes: list[str], config: MonitoringConfig) -> dict[str, list[str]]:
    """County, urban and rural as pools of urban-rural cells (the public 'other' cell counts county-wide)."""
    known = [c for c in codes if c != "None"]
    return {
        "county": codes,
        "urban": [c for c in known if config.is_urban(c)],
        "rural": [c for c in known if not config.is_urban(c)],
    }


class IncomeBands(Template):
    name = "income_bands"
    title = "Households by disposable income band"
    title_zh = "家庭年可支配收入分档占比（10万–50万元、20万–60万元）"
    description = (
        "Share of households per annual disposable-income band, county-wide, urban, rural and by village."
    )

    def releases(self, params: IndicatorParams, config: MonitoringConfig) -> tuple[ReleaseDecl, ...]:
        return (
            ReleaseDecl(
                role=BY_VILLAGE,
                what="histogram of households over the band edges, by village",
                weight=Fraction(3, 5),
            ),
            ReleaseDecl(
                role=BY_CODE,
                what="histogram of households over the band edges, by urban-rural code",
                weight=Fraction(2, 5),
            ),
        )

    def build(
        self, role: str, epsilon: Decimal, params: IndicatorParams, config: MonitoringConfig
    ) -> QuerySpec:
        edges = band_edges(bands_of(params, config))
        return specs.query(
            params,
            indicator=self.name,
            role=role,
            epsilon=epsilon,
            measure=specs.income(config),
            group_by=(config.village if role == BY_VILLAGE else config.urban_rural,),
            statistics=(Statistic(kind=StatisticKind.HISTOGRAM, edges=edges),),
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
        by_code = releases[BY_CODE]
        codes = sorted({str(c["groups"].get(config.urban_rural)) for c in by_code["cells"]})
        pooled = band_shares(
            by_code,
            edges=edges,
            bands=bands,
            pools=pools_by_code(codes, config),
            group_key=config.urban_rural,
        )
        villages = [
            s
            for s in band_shares(releases[BY_VILLAGE], edges=edges, bands=bands, group_key=config.village)
            if s.group != "None"
        ]
        figures = [
            Figure(
                figure="share",
                label=s.band,
                group=s.group,
                value=s.share,
                note=None if s.share is not None else UNDEFINED_SHARE,
                low=s.low,
                high=s.high,
                unit="share",
            )
            for s in pooled + villages
        ]
        methods = {
            "share": "X / (X + Y), X the raw noisy households in the band's bins and Y those in the other "
            "bins, each clipped at 0 once added up; county, urban and rural pool the urban-rural cells by "
            "NBS code; 95% interval by inverting the known integer-Laplace noise of X and Y (every share "
            "whose X and Y the noise makes plausible), so it holds in small noisy cells; undefined (null, "
            "[0, 1]) where X and Y are both at most 0",
        }
        return figures, methods, {}

    def tables(
        self,
        params: IndicatorParams,
        config: MonitoringConfig,
        releases: Mapping[str, Mapping[str, Any]],
        seed: int,
    ) -> list[ReconciledTable]:
        table = histogram_table(
            "households by income bin",
            unit="households",
            releases=releases,
            levels=((BY_CODE, "urban_rural"), (BY_VILLAGE, "village")),
            edges=band_edges(bands_of(params, config)),
            seed=seed,
            is_urban=config.is_urban,
        )
        return [table]
