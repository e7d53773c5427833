"""A small county's extracts for a spread of query shapes, and their exact per-cell aggregates computed
the way the gateway computed them before the engines (the eager unit frame, then a plain group-by), so
every engine is checked against the same independent reference."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from county_fixture import BAND_EDGES, INCOME_TERMS, headline_query

from aggregation.executor import VALUE, unit_frame
from aggregation.planner import Plan, plan_query
from aggregation.query import Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.config import Unit, load_config
from connectors.extract import Extractor
from connectors.service import build_service
from connectors.synth import generate_county
from gateway.runner import release_spec
from privacy import intervals
from privacy.cells import COUNT, SUM, CellLayout
from privacy.vocabulary import LORENZ_RESOLUTION, OTHER, histogram_bin_labels

CONNECTORS = ("register", "tax", "social", "utility", "civil")
LORENZ_EDGES = (20_000, 50_000, 100_000, 200_000, 400_000)


def queries() -> dict[str, QuerySpec]:
    """Every shape the join takes: household bands, key groups and filters, per capita with a baseline,
    Lorenz with quantiles, a person query with a member cap, a coverage query."""
    headline = headline_query()
    groups = headline_query(group_by=("household.has_assistance", "household.size_band")).model_dump()
    groups["member_groups"] = [
        {"name": "assistance", "measure": "civil.assistance.assistance_income", "at_least": 1},
        {"name": "fishery", "dimension": "social.occupations.occupation_medium", "values": ["5-04"]},
        {"name": "nowage", "measure": "tax.wages.wage_income", "at_least": 1, "negate": True},
    ]
    groups["filters"] = [{"dimension": "household.has_fishery", "values": ["0"]}]
    groups["statistics"] = [{"kind": "count"}, {"kind": "sum"}, {"kind": "mean"}]
    trend = headline_query(group_by=("household.income_trend",)).model_dump()
    trend["measure"] = Measure(terms=INCOME_TERMS, lower=0, upper=2_000_000, per_capita=True).model_dump()
    trend["period_start"], trend["period_end"] = "2025-07", "2025-12"
    trend["baseline"] = {"period_start": "2025-01", "period_end": "2025-06", "drop_share": "0.3"}
    trend["statistics"] = [{"kind": "count"}, {"kind": "sum"}]
    lorenz = headline_query(group_by=("register.persons.urban_rural",)).model_dump()
    lorenz["statistics"] = [
        {"kind": "lorenz", "edges": list(LORENZ_EDGES)},
        {"kind": "quantiles", "probs": [0.5], "edges": list(BAND_EDGES)},
        {"kind": "histogram", "edges": [50_000, 150_000]},
    ]
    person = QuerySpec(
        purpose="Persons with wage income, by sex, capped per household",
        unit=Unit.PERSON,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=(Term(dataset="tax.wages", measure="wage_income"),), lower=0, upper=1_000_000),
        group_by=("tax.wages.sex",),
        statistics=(Statistic(kind=StatisticKind.COUNT), Statistic(kind=StatisticKind.SUM)),
        epsilon=Decimal("0.5"),
        member_cap=2,
    )
    coverage = QuerySpec(
        purpose="Registered persons with a wage record",
        unit=Unit.PERSON,
        period_start="2025-01",
        period_end="2025-12",
        coverage=("tax.wages",),
        group_by=("person.covered",),
        statistics=(Statistic(kind=StatisticKind.COUNT),),
        epsilon=Decimal("0.5"),
        member_cap=8,
    )
    return {
        "headline": headline,
        "groups": QuerySpec.model_validate(groups),
        "trend": QuerySpec.model_validate(trend),
        "lorenz": QuerySpec.model_validate(lorenz),
        "person": person,
        "coverage": coverage,
    }


def county(root: Path) -> Path:
    generate_county(root, persons=3_000, seed=11)
    return root


def extracts(root: Path) -> dict[str, tuple[Plan, dict[str, pa.Table]]]:
    """Each query's plan and its extracts, made in process by the connectors' own extractor."""
    services = {name: build_service(load_config(root / "connectors" / f"{name}.yaml")) for name in CONNECTORS}
    catalog = {name: s.schema for name, s in services.items()}
    out = {}
    for name, query in queries().items():
        plan = plan_query(query, catalog)
        tables = {}
        for e in plan.extracts:
            service = services[e.connector]
            req = e.unsafe_unapproved_request(plan.query, epoch=service.keyring.current_epoch)
            dataset = service.cfg.dataset(e.dataset)
            assert dataset is not None
            tables[e.ref] = Extractor(service.loaded, service.source, service.keyring).run(req, dataset).table
        out[name] = (plan, tables)
    return out


def layout(plan: Plan) -> CellLayout:
    return CellLayout(release_spec(plan))


def _offsets(clamped: np.ndarray, edges: tuple[int, ...], lower: int, upper: int) -> np.ndarray:
    """The Lorenz offsets as the release computed them before the engines (numpy over a column)."""
    bounds = intervals.histogram_boundaries(edges, lower, upper)
    widths = np.diff(bounds)
    x = clamped.astype(np.float64)
    j = np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right")
    width = widths[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(width > 0, np.rint((x - bounds[j]) * LORENZ_RESOLUTION / width), 0.0)
    return np.clip(t, 0, LORENZ_RESOLUTION).astype(np.int64)


def reference_cells(plan: Plan, tables: Mapping[str, pa.Table]) -> dict[str, pl.DataFrame]:
    """The exact aggregates of every public cell, from the eager unit frame and a plain group-by."""
    cells = layout(plan)
    spec = cells.spec
    frame = unit_frame(plan, tables)
    for g in spec.groups:
        frame = frame.with_columns(
            pl.when(pl.col(g.name).is_in(list(g.values))).then(pl.col(g.name)).otherwise(OTHER).alias(g.name)
        )
    out = {}
    for table in cells.tables:
        rows = frame
        if table.bin_column is not None and table.edges is not None:
            assert spec.measure is not None
            clamped = rows[spec.measure].to_numpy().clip(spec.lower, spec.upper)
            j = np.searchsorted(np.asarray(table.edges), clamped, side="right")
            labels = np.asarray(histogram_bin_labels(table.edges))
            rows = rows.with_columns(pl.Series(table.bin_column, labels[j]))
            if table.summed is not None:
                rows = rows.with_columns(
                    pl.Series(table.summed, _offsets(clamped, table.edges, spec.lower, spec.upper))
                )
        by = cells.by(table)
        aggs = [pl.len().cast(pl.Int64).alias(COUNT)]
        if table.summed is not None:
            aggs.append(pl.col(table.summed).cast(pl.Int64).sum().alias(SUM))
        exact = rows.group_by(by).agg(aggs) if by else rows.select(aggs)
        if by:
            exact = cells.keys(table).join(exact, on=by, how="left", nulls_equal=True).fill_null(0)
        out[table.name] = exact
    return out


def assert_same_cells(got: Mapping[str, pl.DataFrame], want: Mapping[str, pl.DataFrame]) -> None:
    assert set(got) == set(want)
    for name, frame in want.items():
        columns = frame.columns
        assert got[name].select(columns).equals(frame.select(columns)), name
    # Not vacuous: the county puts units in the cells.
    assert sum(int(f[COUNT].sum()) for f in want.values()) > 0


__all__ = ["VALUE", "assert_same_cells", "county", "extracts", "layout", "queries", "reference_cells"]
