"""The headline household query end to end against a centralized baseline, in the same run.

fedgate: the gateway and five connectors as processes on loopback, a 200,000-person county (20,000 with
--quick), the household band query by village run through the HTTP API (signed extracts, tokens, token
join, OpenDP release, ledger, audit). Each repetition is a new query, so nothing is served from a cache.

Baseline: a trusted central engine that sees everything runs the same per-store push-down roll-ups (the
connectors' own source adapters), normalises IDs, joins on them and computes the exact histogram with
Polars: no tokens, HTTP, signatures or noise. Target: fedgate / baseline <= 1.5. Also the gateway's and
each connector's peak memory (VmHWM).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import polars as pl

from aggregation.planner import plan_query
from bench.bench_extract import RESULTS, county
from bench.common import BenchResult, summarize
from bench.headline import headline
from connectors.config import load_config
from connectors.extract import rollup_spec
from connectors.ids import IdKind, normalize_many
from connectors.protocol import (
    ConnectorSchema,
)
from connectors.sources import ENTITY, HOUSEHOLD, open_source
from gateway.dev.localfed import Federation, register_everything, start_federation


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def centralized(root: Path, catalog: dict[str, ConnectorSchema]) -> pl.DataFrame:
    """The exact household histogram by village, computed centrally from the same push-down roll-ups."""
    spec = headline("register.persons.village", "0.5")
    plan = plan_query(spec, catalog)
    frames: dict[str, pl.DataFrame] = {}
    for e in plan.extracts:
        loaded = load_config(root / "connectors" / f"{e.connector}.yaml")
        dataset = loaded.config.dataset(e.dataset)
        assert dataset is not None
        req = e.unsafe_unapproved_request(spec, epoch=1)
        source = open_source(loaded.config.source)
        rollup = rollup_spec(dataset, req, loaded.config.source.chunk_rows)
        raw = pl.concat([pl.from_pandas(c[list(rollup.output_columns)]) for c in source.rollup(rollup)])
        source.close()
        ids = normalize_many(IdKind.RESIDENT_ID, [v or "" for v in raw[ENTITY].to_list()]).values
        raw = raw.with_columns(pl.Series("id", ids)).drop(ENTITY).drop_nulls("id")
        value_cols = [c for c in raw.columns if c != "id"]
        aggs = [
            pl.col(c).max() if c in e.dimensions or c == HOUSEHOLD else pl.col(c).sum() for c in value_cols
        ]
        frames[e.ref] = raw.group_by("id").agg(aggs)
    persons = frames[plan.spine or ""].drop_nulls(HOUSEHOLD)
    assert spec.measure is not None
    for term in spec.measure.terms:
        part = frames[term.dataset].select("id", (pl.col(term.measure) * term.sign).alias(term.measure))
        persons = persons.join(part, on="id", how="left")
    value = pl.sum_horizontal([pl.col(t.measure).fill_null(0) for t in spec.measure.terms])
    households = (
        persons.with_columns(value.alias("value"))
        .group_by(HOUSEHOLD)
        .agg(pl.col("village").first(), pl.col("value").sum().clip(spec.measure.lower, spec.measure.upper))
    )
    edges = [-(10**12), 100_000, 200_000, 500_000, 600_000, 10**13]
    binned = households.with_columns(pl.col("value").cut(edges[1:-1], left_closed=True).alias("bin"))
    return binned.group_by("village", "bin").len()


def run(quick: bool) -> list[BenchResult]:
    persons = 20_000 if quick else 200_000
    repeats = 2 if quick else 3
    root = county(persons)
    workdir = RESULTS / f"federation-{persons}"
    for stale in (workdir / "gateway", root / "state"):
        shutil.rmtree(stale, ignore_errors=True)
    fed: Federation = start_federation(workdir, county=root)
    try:
        register_everything(fed, household_only=True)
        with fed.client("analyst") as analyst:
            catalog = {
                c["connector"]: ConnectorSchema.model_validate(c) for c in analyst.catalog()["connectors"]
            }
            fed_times = []
            for i in range(repeats):
                spec = headline("register.persons.village", "0.5").model_copy(
                    update={"purpose": f"Benchmark run {i} of the headline household band query"}
                )
                qid = analyst.submit(spec)["id"]
                start = time.perf_counter()
                analyst.run(qid)
                fed_times.append(time.perf_counter() - start)
        gateway_peak = _peak_rss_mb(fed.gateway.process.pid)
        connector_peaks = {n: _peak_rss_mb(c.process.pid) for n, c in fed.connectors.items()}
    finally:
        fed.stop()
    base_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        centralized(root, catalog)
        base_times.append(time.perf_counter() - start)
    fed_median, fed_spread = summarize(fed_times)
    base_median, base_spread = summarize(base_times)
    label = f"{persons:,} persons, household bands by village"
    results = [
        BenchResult("gateway", "fedgate headline query, end to end", fed_median, "s", fed_spread, label),
        BenchResult(
            "gateway", "centralized baseline (same push-down, Polars)", base_median, "s", base_spread, label
        ),
        BenchResult(
            "gateway", "ratio fedgate / centralized", fed_median / base_median, "x", None, "target <= 1.5"
        ),
        BenchResult("gateway", "gateway peak RSS", gateway_peak, "MiB", None, "VmHWM after the runs"),
    ]
    results += [
        BenchResult("gateway", f"connector {n} peak RSS", v, "MiB", None, "VmHWM after the runs")
        for n, v in connector_peaks.items()
    ]
    return results
