"""Reconciled tables against the raw noisy ones: error against the exact evaluation, county and village.

`python -m bench.bench_reconcile [--persons N] [--trials T]` (or `python -m bench --only reconcile`).

Data: a synthetic county (4,000 persons; 2,000 with --quick), seed 11, period 2025-01..2025-12 (early
warning 2025-10..2025-12 against the three months before). For each indicator with a release family
(income bands, coverage, key groups with the `dibao` group, early warning), at epsilon 1 as the
templates split it: the releases are made once exactly (an unsafe exact evaluation, epsilon 1e12) and
once through OpenDP (for the public noise scales); then each trial adds integer-Laplace noise of those
scales to the exact cells, as OpenDP would, and rebuilds the indicator's tables. Printed per level:
the mean squared error of the raw noisy cells and of the reconciled ones against the exact cells,
and how often the reconciled cells' 95% intervals hold the exact value.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from aggregation.executor import unit_frame
from aggregation.indicators import INDICATORS, IndicatorParams, Template
from aggregation.planner import plan_query
from bench.common import BenchResult
from connectors.config import load_config
from connectors.extract import Extractor
from connectors.service import ConnectorService, build_service
from connectors.synth import generate_county
from gateway.dev.seed_groups import SEED_GROUPS, synthetic_config
from gateway.runner import release_spec
from privacy.intervals import sample_noise
from privacy.release import prepare_release

CONNECTORS = ("register", "tax", "social", "utility", "civil")
FAMILIES = ("income_bands", "coverage", "key_groups", "early_warning")
CONFIG = synthetic_config()
Cell = tuple[str, str, str]
EXACT_EPSILON = Decimal(10) ** 12
"""An unsafe exact evaluation: noise scales near 1e-12, so the integer noise is 0."""


@dataclass
class LevelError:
    """Squared errors and interval hits of one level, summed over trials and cells."""

    cells: int = 0
    raw: float = 0.0
    reconciled: float = 0.0
    hits: int = 0

    @property
    def raw_mse(self) -> float:
        return self.raw / self.cells

    @property
    def reconciled_mse(self) -> float:
        return self.reconciled / self.cells

    @property
    def coverage(self) -> float:
        return self.hits / self.cells


def params_for(name: str) -> IndicatorParams:
    period = ("2025-10", "2025-12") if name == "early_warning" else ("2025-01", "2025-12")
    groups = (SEED_GROUPS[0].definition,) if name == "key_groups" else ()
    return IndicatorParams(
        period_start=period[0], period_end=period[1], epsilon=Decimal(1), analyst="bench", groups=groups
    )


def county_services(directory: Path, persons: int) -> dict[str, ConnectorService]:
    generate_county(directory, persons=persons, seed=11)
    return {n: build_service(load_config(directory / "connectors" / f"{n}.yaml")) for n in CONNECTORS}


def with_noise(
    exact: Mapping[str, Mapping[str, Any]], noisy: Mapping[str, Mapping[str, Any]], rng: np.random.Generator
) -> dict[str, dict[str, Any]]:
    """The exact releases with fresh integer-Laplace noise at the noisy releases' public scales."""
    out = {}
    for role, release in exact.items():
        scales = noisy[role]["scales"]
        out[role] = {
            **release,
            "scales": scales,
            "cells": [
                {**c, "value": c["value"] + float(sample_noise(rng, float(scales[c["statistic"]]), 1)[0])}
                for c in release["cells"]
            ],
        }
    return out


def exact_cells(template: Template, params: IndicatorParams, exact: Mapping[str, Any]) -> dict[Cell, float]:
    return {
        (t.table, c.level, f"{c.group}|{c.column}"): c.raw
        for t in template.tables(params, CONFIG, exact, seed=0)
        for c in t.cells
    }


def measure(
    template: Template,
    params: IndicatorParams,
    exact: Mapping[str, Mapping[str, Any]],
    noisy: Mapping[str, Mapping[str, Any]],
    *,
    trials: int,
    seed: int,
) -> dict[str, LevelError]:
    """Per level, the raw and reconciled cells' squared errors and interval hits against the exact cells."""
    truth = exact_cells(template, params, exact)
    rng = np.random.default_rng(seed)
    out: dict[str, LevelError] = {}
    for _ in range(trials):
        # One seed for every trial, as for one set of queries (the seed comes from their digests).
        for t in template.tables(params, CONFIG, with_noise(exact, noisy, rng), seed=seed):
            for c in t.cells:
                x = truth[(t.table, c.level, f"{c.group}|{c.column}")]
                e = out.setdefault(c.level, LevelError())
                e.cells += 1
                e.raw += (c.raw - x) ** 2
                e.reconciled += (c.value - x) ** 2
                e.hits += c.low <= x <= c.high
    return out


def releases(
    template: Template, params: IndicatorParams, services: Mapping[str, ConnectorService]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The exact and one noisy release of every sub-query (the noisy one for its public scales), from
    the connectors' own extracts joined as the gateway joins them."""
    catalog = {n: s.schema for n, s in services.items()}
    exact, noisy = {}, {}
    for q in template.queries(params, CONFIG):
        plan = plan_query(q.spec, catalog)
        tables = {}
        for e in plan.extracts:
            service = services[e.connector]
            req = e.unsafe_unapproved_request(q.spec, epoch=service.keyring.current_epoch)
            dataset = service.cfg.dataset(e.dataset)
            assert dataset is not None
            tables[e.ref] = Extractor(service.loaded, service.source, service.keyring).run(req, dataset).table
        frame = unit_frame(plan, tables)
        spec = release_spec(plan)
        noisy[q.role] = prepare_release(spec).run(frame).to_json_dict()
        unsafe = spec.model_copy(update={"epsilon": EXACT_EPSILON})
        exact[q.role] = prepare_release(unsafe).run(frame).to_json_dict()
    return exact, noisy


def measure_county(persons: int, trials: int) -> dict[str, dict[str, LevelError]]:
    with tempfile.TemporaryDirectory() as tmp:
        services = county_services(Path(tmp), persons)
        out = {}
        for name in FAMILIES:
            template, params = INDICATORS[name], params_for(name)
            exact, noisy = releases(template, params, services)
            out[name] = measure(template, params, exact, noisy, trials=trials, seed=7)
        return out


def run(quick: bool) -> list[BenchResult]:
    persons, trials = (2_000, 100) if quick else (4_000, 300)
    results = []
    for name, levels in measure_county(persons, trials).items():
        for level, e in levels.items():
            note = f"{persons} persons, {trials} trials, epsilon 1; coverage {e.coverage:.3f}"
            results.append(
                BenchResult(f"reconcile {name}", f"{level} raw MSE", e.raw_mse, "units^2", note=note)
            )
            results.append(
                BenchResult(
                    f"reconcile {name}", f"{level} reconciled MSE", e.reconciled_mse, "units^2", note=note
                )
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=4_000)
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    print(f"{'indicator':<15} {'level':<12} {'raw MSE':>10} {'reconciled':>11} {'change':>8} {'coverage':>9}")
    for name, levels in measure_county(args.persons, args.trials).items():
        for level, e in levels.items():
            change = e.reconciled_mse / e.raw_mse - 1
            print(
                f"{name:<15} {level:<12} {e.raw_mse:>10.2f} {e.reconciled_mse:>11.2f} {change:>+8.1%} "
                f"{e.coverage:>9.3f}"
            )


if __name__ == "__main__":
    main()
