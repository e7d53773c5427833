"""The gateway's join engines on the same extracts: Polars in memory, Polars bucketed on disk, Spark local.

Part 1, the headline household band query by village at 200,000 persons (20,000 with --quick): its six
extracts are produced in process with the connectors' own `Extractor` (as a run receives them), then each
engine computes the exact per-cell aggregates from the same tables: Polars in memory (the default), Polars
bucketed (memory bound an eighth of the extracts' Arrow size, so it spills), and Spark `local[2]` (the
session started once beforehand and not timed; staging the Parquet files is timed). Every engine must give
the same cells. Ratios against Polars in memory.

Part 2, beyond memory: synthetic extracts with the headline extracts' schemas and row shares, scaled to
10,000,000 persons (1,000,000 with --quick; `FEDGATE_BENCH_JOIN_PERSONS=N` for another size; `make
bench` runs 10,000,000): uniform random tokens and households, values resampled from the real
extracts. Each engine configuration runs in its own process, which reports its peak resident memory
(VmHWM) and its resident memory once the extracts are built (what the gateway holds when the last extract
has arrived). In memory against bucketed with a memory bound of 1 GiB: the bound caps the join's working
set, not the extracts already received.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from aggregation.engines import PolarsEngine
from aggregation.planner import Plan
from bench.bench_engines import headline_plan
from bench.bench_extract import county
from bench.common import BenchResult, summarize
from bench.headline import headline
from connectors.config import load_config
from connectors.extract import Extractor
from connectors.federation_keys import load_keyring
from connectors.protocol import HOUSEHOLD_TOKEN_COLUMN, TOKEN_COLUMN
from connectors.sources import open_source
from gateway.runner import release_spec
from privacy.cells import CellLayout

PERSONS, QUICK_PERSONS = 200_000, 20_000
BIG, QUICK_BIG = 10_000_000, 1_000_000
BIG_BOUND = 1024**3
REPEATS = 3
NAME = "join"


def extracts(root: Path) -> tuple[Plan, dict[str, pa.Table]]:
    spec = headline("register.persons.village", "0.5")
    plan = headline_plan(root)
    tables = {}
    for e in plan.extracts:
        loaded = load_config(root / "connectors" / f"{e.connector}.yaml")
        dataset = loaded.config.dataset(e.dataset)
        assert dataset is not None
        source = open_source(loaded.config.source)
        try:
            keyring = load_keyring(loaded.config.federation_keyring_file)
            req = e.unsafe_unapproved_request(spec, epoch=keyring.current_epoch)
            tables[e.ref] = Extractor(loaded, source, keyring).run(req, dataset).table
        finally:
            source.close()
    return plan, tables


def _cells(engine: Any, plan: Plan, tables: dict[str, pa.Table]) -> dict[str, pl.DataFrame]:
    with engine.start(plan, CellLayout(release_spec(plan))) as run:
        for ref, table in tables.items():
            run.add(ref, table)
        return dict(run.cells())


def _timed(
    engine: Any, plan: Plan, tables: dict[str, pa.Table]
) -> tuple[list[float], dict[str, pl.DataFrame]]:
    samples, cells = [], {}
    for _ in range(REPEATS):
        start = time.perf_counter()
        cells = _cells(engine, plan, tables)
        samples.append(time.perf_counter() - start)
    return samples, cells


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def same_extracts(quick: bool) -> list[BenchResult]:
    persons = QUICK_PERSONS if quick else PERSONS
    plan, tables = extracts(county(persons))
    size = sum(t.nbytes for t in tables.values())
    out: list[BenchResult] = []
    polars_samples, want = _timed(PolarsEngine(), plan, tables)
    base, spread = summarize(polars_samples)
    note = f"{persons:,} persons, headline query, load {_load()}"
    out.append(BenchResult(NAME, f"polars in memory, {persons:,} persons", base, "s", spread, note))
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-") as spill:
        bucketed = PolarsEngine(memory_bytes=max(1, size // 8), spill_dir=Path(spill))
        samples, got = _timed(bucketed, plan, tables)
        assert got.keys() == want.keys() and all(got[k].equals(want[k]) for k in want), (
            "bucketed cells differ"
        )
        value, spread = summarize(samples)
        out.append(BenchResult(NAME, f"polars bucketed, {persons:,} persons", value, "s", spread, note))
        out.append(BenchResult(NAME, "polars bucketed / in memory", value / base, "x", None, note))
    try:
        from aggregation.engines.spark_engine import SparkEngine
    except ImportError as exc:
        out.append(BenchResult(NAME, "spark local[2] / polars", math.nan, "x", None, f"not available: {exc}"))
        return out
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-") as staging:
        spark = SparkEngine(master="local[2]", staging_dir=Path(staging))
        try:
            start = time.perf_counter()
            spark.session()
            startup = time.perf_counter() - start
            _cells(spark, plan, tables)  # the JVM's first query compiles and warms up: not timed
            samples, got = _timed(spark, plan, tables)
        finally:
            spark.stop()
    for k in want:
        columns = want[k].columns
        assert got[k].select(columns).equals(want[k]), "spark cells differ"
    value, spread = summarize(samples)
    out.append(BenchResult(NAME, f"spark local[2], {persons:,} persons", value, "s", spread, note))
    out.append(BenchResult(NAME, "spark local[2] / polars in memory", value / base, "x", None, note))
    out.append(BenchResult(NAME, "spark session start", startup, "s", None, "once per gateway process"))
    return out


# --- part 2: beyond memory, one process per configuration


def _synthetic(plan: Plan, tables: dict[str, pa.Table], persons: int, seed: int = 7) -> dict[str, pa.Table]:
    """Extracts of `persons` with the real extracts' schemas and row shares, tokens uniform."""
    rng = np.random.default_rng(seed)
    spine = tables[plan.spine]
    scale = persons / spine.num_rows
    tokens = rng.bytes(16 * persons)
    person_tokens = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), persons, [None, pa.py_buffer(tokens)])
    households = max(1, int(persons / 2.1))
    hh_pool = rng.bytes(16 * households)
    out: dict[str, pa.Table] = {}
    for ref, real in tables.items():
        rows = persons if ref == plan.spine else min(persons, int(real.num_rows * scale))
        chosen = np.sort(rng.choice(persons, size=rows, replace=False)) if rows < persons else None
        columns: dict[str, pa.Array] = {}
        for name, column in zip(real.column_names, real.columns, strict=True):
            if name == TOKEN_COLUMN:
                columns[name] = person_tokens if chosen is None else person_tokens.take(pa.array(chosen))
            elif name == HOUSEHOLD_TOKEN_COLUMN:
                which = rng.integers(0, households, size=rows)
                raw = np.frombuffer(hh_pool, dtype=np.uint8).reshape(households, 16)[which].tobytes()
                columns[name] = pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(16), rows, [None, pa.py_buffer(raw)]
                )
            else:
                values = column.combine_chunks()
                columns[name] = values.take(pa.array(rng.integers(0, len(values), size=rows)))
        out[ref] = pa.table(columns)
    return out


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return math.nan


def child(persons: int, bound: int | None, spill: str) -> dict[str, Any]:
    """One engine configuration on synthetic extracts, in this (fresh) process."""
    plan, tables = extracts(county(QUICK_PERSONS))
    big = _synthetic(plan, tables, persons)
    del tables
    held = _status("VmRSS:")
    engine = PolarsEngine() if bound is None else PolarsEngine(memory_bytes=bound, spill_dir=Path(spill))
    start = time.perf_counter()
    with engine.start(plan, CellLayout(release_spec(plan))) as run:
        for ref in list(big):
            run.add(ref, big.pop(ref))
        cells = run.cells()
        buckets = run.buckets if run.spilled else 1
    seconds = time.perf_counter() - start
    units = int(cells["histogram"]["fedgate__count"].sum())
    return {
        "seconds": seconds,
        "held_mib": held,
        "peak_mib": _status("VmHWM:"),
        "buckets": buckets,
        "units": units,
    }


def beyond_memory(quick: bool) -> list[BenchResult]:
    persons = int(os.environ.get("FEDGATE_BENCH_JOIN_PERSONS") or (QUICK_BIG if quick else BIG))
    out: list[BenchResult] = []
    results = {}
    for label, bound in (("in memory", None), ("bucketed, 1 GiB bound", BIG_BOUND)):
        with tempfile.TemporaryDirectory(prefix="fedgate-bench-") as spill:
            code = (
                "import json, sys; from bench.bench_join import child; "
                f"print(json.dumps(child({persons}, {bound!r}, {spill!r})))"
            )
            load = _load()
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}, check=False
            )
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
                out.append(
                    BenchResult(
                        NAME, f"{label}, {persons:,} persons", math.nan, "s", None, f"failed: {tail[0]}"
                    )
                )
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            left = list(Path(spill).iterdir())
            assert not left, f"spill files left: {left}"
        results[label] = r
        note = f"{persons:,} synthetic persons, {r['buckets']} bucket(s), load {load}"
        out.append(BenchResult(NAME, f"{label}, {persons:,} persons: join", r["seconds"], "s", None, note))
        out.append(
            BenchResult(NAME, f"{label}, {persons:,} persons: peak memory", r["peak_mib"], "MiB", None, note)
        )
        out.append(
            BenchResult(
                NAME, f"{label}, {persons:,} persons: extracts held", r["held_mib"], "MiB", None, note
            )
        )
    if len(results) == 2:
        a, b = results["in memory"], results["bucketed, 1 GiB bound"]
        assert a["units"] == b["units"], "bucketed and in-memory runs counted different households"
    return out


def run(quick: bool) -> list[BenchResult]:
    return same_extracts(quick) + beyond_memory(quick)
