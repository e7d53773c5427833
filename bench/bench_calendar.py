"""Accuracy of the default monitoring calendar (docs/indicators.md, "The monitoring calendar").

One synthetic county (50,000 persons, 10,000 with --quick; seed 11; every store embedded), in process:
each query's extract straight from the connectors' sources (their own roll-ups, clipping and tokens), the
gateway's token join, and OpenDP releases at the calendar's default epsilons; the same queries released
exactly (epsilon 1e12) give the figures each DP figure is compared with. Repeated releases of the same
frames (100 trials, 30 with --quick) give each figure's RMSE.

- county: the rolling 12-month per-capita income (county, urban, rural) and urban–rural ratio derived
  from the twelve monthly urban–rural releases of 2025 (monthly pack, 0.35 each), against the exact value
  of the same monthly sums; beside it the year-end pack's direct annual release (0.15 of its 1.0) and the
  previous calendar's equivalent (the rolling annual pack run every month: 23 runs read each data year, so
  at the same 9.61 per data year its urban–rural share is 0.15 x 9.61 / 23 per run). The clipping of
  monthly bounds shows as the gap between the exact monthly-sum figure and the exact annual one.
- village: the monthly pack's coverage share and its early warning's households whose income fell, for
  June 2025, per village (RMSE over trials, then the median and 90th percentile over villages), and the
  county-wide figures of the same releases.

Writes bench/results/calendar.json; `python -m bench --only calendar [--quick]`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from aggregation.executor import unit_frame
from aggregation.indicators import IndicatorResult, SubQuery, evaluate, simulation_seed
from aggregation.indicators.config_file import parse_monitoring_config
from aggregation.indicators.pack import MONTHLY, YEAR_END, calendar_charges
from aggregation.indicators.periods import previous_months
from aggregation.indicators.rolling import rolling_urban_rural
from aggregation.planner import plan_query
from bench.common import BenchResult
from connectors.config import load_config
from connectors.extract import Extractor
from connectors.service import ConnectorService, build_service
from connectors.synth import generate_county
from connectors.synth.monitoring import monitoring_config
from gateway.dev.seed_groups import SEED_GROUPS
from gateway.runner import release_spec
from privacy.release import prepare_release

RESULTS = Path(__file__).resolve().parent / "results"
CONNECTORS = ("register", "tax", "social", "utility", "civil")
CONFIG = parse_monitoring_config(monitoring_config())
EXACT = Decimal(10) ** 12
QUANTUM = Decimal("1e-9")
GROUPS = tuple(g.definition for g in SEED_GROUPS)
MONTHS = [*previous_months("2025-12", 11), "2025-12"]
VILLAGE_MONTH = "2025-06"
OLD_RUNS_PER_YEAR = 23
OLD_PACK_SHARE = Decimal("0.15")


class Prepared:
    """A query's one-row-per-unit frame, released as often as asked (noisy or exact)."""

    def __init__(self, q: SubQuery, services: Mapping[str, ConnectorService]) -> None:
        catalog = {n: s.schema for n, s in services.items()}
        plan = plan_query(q.spec, catalog)
        tables = {}
        for e in plan.extracts:
            service = services[e.connector]
            req = e.unsafe_unapproved_request(q.spec, epoch=service.keyring.current_epoch)
            dataset = service.cfg.dataset(e.dataset)
            assert dataset is not None
            tables[e.ref] = Extractor(service.loaded, service.source, service.keyring).run(req, dataset).table
        self.spec = release_spec(plan)
        self.frame: pl.DataFrame = unit_frame(plan, tables)

    def release(self, epsilon: Decimal | None = None) -> dict[str, Any]:
        spec = self.spec if epsilon is None else self.spec.model_copy(update={"epsilon": epsilon})
        return prepare_release(spec).run(self.frame).to_json_dict()


def _figures(result: IndicatorResult) -> dict[tuple[str, str], float]:
    return {(f.figure, f.group): float(f.value) for f in result.figures if f.value is not None}


def _rmse(samples: Sequence[float], exact: float) -> float:
    return float(np.sqrt(np.mean((np.asarray(samples) - exact) ** 2)))


def measure(persons: int, trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="calendar-county-") as tmp:
        root = Path(tmp)
        generate_county(root, persons=persons, seed=11)
        services = {n: build_service(load_config(root / "connectors" / f"{n}.yaml")) for n in CONNECTORS}
        try:
            return _measure(services, trials)
        finally:
            for s in services.values():
                s.source.close()


def _pack_member(pack: Any, period: str, name: str) -> tuple[Any, Any, list[SubQuery]]:
    assert pack.default_epsilon is not None
    items = pack.params(period=period, epsilon=pack.default_epsilon, analyst="bench", groups=())
    template, params = next((t, p) for t, p in items if t.name == name)
    return template, params, template.queries(params, pack.config_for(name, CONFIG))


def _village_figures(shown: tuple[Any, ...], *, exact: bool) -> dict[tuple[str, str], float]:
    template, params, config, subqueries, prepared, figure = shown
    releases = {role: p.release(EXACT if exact else None) for role, p in prepared.items()}
    result = evaluate(template, params, config, subqueries, releases)
    return {k: v for k, v in _figures(result).items() if k[0] == figure}


def _measure(services: Mapping[str, ConnectorService], trials: int) -> dict[str, Any]:
    monthly = []
    for period in MONTHS:
        _, _, subqueries = _pack_member(MONTHLY, period, "urban_rural_ratio")
        monthly.append((period, subqueries, {q.role: Prepared(q, services) for q in subqueries}))
    seed = simulation_seed([q.spec.digest for _, qs, _ in monthly for q in qs])

    def rolled(exact: bool) -> dict[tuple[str, str], float]:
        months = [
            (period, qs, {role: p.release(EXACT if exact else None) for role, p in prepared.items()})
            for period, qs, prepared in monthly
        ]
        return _figures(rolling_urban_rural(CONFIG, months, seed))

    annual_t, annual_p, annual_q = _pack_member(YEAR_END, "2025-12", "urban_rural_ratio")
    annual = {q.role: Prepared(q, services) for q in annual_q}
    year_eps = annual_p.epsilon
    planned = calendar_charges(2025, CONFIG, GROUPS)
    old_eps = (OLD_PACK_SHARE * planned / OLD_RUNS_PER_YEAR).quantize(Decimal("1e-6"))

    def direct(total: Decimal | None) -> dict[tuple[str, str], float]:
        """The year-end urban-rural releases, at their own epsilon or scaled to a total of `total`."""
        releases = {}
        for q in annual_q:
            share = None if total is None else (q.spec.epsilon * total / year_eps).quantize(QUANTUM)
            releases[q.role] = annual[q.role].release(EXACT if total == EXACT else share)
        return _figures(evaluate(annual_t, annual_p, CONFIG, annual_q, releases))

    exact_rolled, exact_annual = rolled(True), direct(EXACT)
    runs: dict[str, list[dict[tuple[str, str], float]]] = {"rolling": [], "year_end": [], "previous": []}
    for _ in range(trials):
        runs["rolling"].append(rolled(False))
        runs["year_end"].append(direct(None))
        runs["previous"].append(direct(old_eps))
    against = {"rolling": exact_rolled, "year_end": exact_annual, "previous": exact_annual}
    county_rows = []
    for key in sorted(exact_rolled):
        row: dict[str, Any] = {
            "figure": key[0],
            "group": key[1],
            "exact_monthly_sums": exact_rolled[key],
            "exact_annual": exact_annual[key],
        }
        for name, exact in against.items():
            row[f"rmse_{name}"] = _rmse([r[key] for r in runs[name]], exact[key])
        county_rows.append(row)

    village = {}
    for name, figure in (("coverage", "coverage"), ("early_warning", "households_fell")):
        template, params, subqueries = _pack_member(MONTHLY, VILLAGE_MONTH, name)
        config = MONTHLY.config_for(name, CONFIG)
        prepared = {q.role: Prepared(q, services) for q in subqueries}
        shown = (template, params, config, subqueries, prepared, figure)
        truth = _village_figures(shown, exact=True)
        draws = [_village_figures(shown, exact=False) for _ in range(trials)]
        errors = {k: _rmse([d[k] for d in draws], v) for k, v in truth.items()}
        villages = [e for (_, g), e in errors.items() if g != "county"]
        village[name] = {
            "figure": figure,
            "epsilon": str(params.epsilon),
            "county_exact": truth[(figure, "county")],
            "county_rmse": errors[(figure, "county")],
            "villages": len(villages),
            "village_rmse_median": statistics.median(villages),
            "village_rmse_p90": float(np.quantile(villages, 0.9)),
            "village_exact_median": statistics.median(v for (_, g), v in truth.items() if g != "county"),
        }
    return {
        "trials": trials,
        "calendar_per_data_year": str(planned),
        "epsilon": {
            "monthly_urban_rural": str(sum((q.spec.epsilon for q in monthly[0][1]), Decimal(0))),
            "year_end_urban_rural": str(year_eps),
            "previous_calendar_urban_rural": str(old_eps),
        },
        "county": county_rows,
        "village": village,
    }


def run(quick: bool) -> list[BenchResult]:
    persons, trials = (10_000, 30) if quick else (50_000, 100)
    m = measure(persons, trials)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "calendar.json").write_text(json.dumps({"persons": persons, **m}, indent=2), encoding="utf-8")
    out = []
    for row in m["county"]:
        unit = "ratio" if row["figure"] == "urban_rural_ratio" else "yuan"
        for name in ("rolling", "year_end", "previous"):
            out.append(
                BenchResult(
                    name=f"calendar {row['figure']} {row['group']}",
                    metric=f"RMSE {name}",
                    value=row[f"rmse_{name}"],
                    unit=unit,
                    note=f"{persons} persons, {trials} trials; exact {row['exact_annual']:.4g}",
                )
            )
    for name, v in m["village"].items():
        out.append(
            BenchResult(
                name=f"calendar {name} {v['figure']} village",
                metric="median RMSE",
                value=v["village_rmse_median"],
                unit="share" if name == "coverage" else "households",
                note=f"p90 {v['village_rmse_p90']:.3g}; county RMSE {v['county_rmse']:.3g}",
            )
        )
    return out
