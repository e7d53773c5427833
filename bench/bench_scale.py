"""How the headline query's time and memory grow with the county: 50,000 to 1,200,000 persons.

At each size (--quick: only 50,000 and 200,000) a fresh federation (gateway and five connectors, each its
own process on loopback) runs the headline household band query by village end to end through the HTTP
API, and the peak resident memory (VmHWM) of the gateway and of each connector is read after it. Fresh
processes per size, so each peak belongs to that size's query (plus the process's own start-up memory,
reported as the gateway's VmRSS before the query).

Bytes per token held in the gateway: the headline query's six extracts are produced in process with the
connectors' own `Extractor` at 200,000 persons, and their Arrow tables' `nbytes` is divided by their rows
(every row is one token, plus that person's measures or attributes).

Writes bench/results/scale.png (time and memory against persons).

The county generator draws about one village per 700 persons from a list of 648 village names, so it
cannot make a county above about 453,000 persons (numpy: "Cannot take a larger sample than population
when replace is False"). For the larger sizes this benchmark raises the generator's persons per village
to keep 640 villages (a city's communities are larger): 938 per village at 600,000 persons and 1,875 at
1,200,000. Records, households and defects are drawn as usual; the release then has 641 x 5 public cells
instead of about one village per 700 persons.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.bench_engines import _table, duckdb_sql, headline_plan, load, sources
from bench.bench_extract import RESULTS, county
from bench.bench_gateway import _peak_rss_mb
from bench.common import BenchResult, cold_rollups
from bench.headline import headline
from connectors.config import load_config
from connectors.extract import Extractor
from connectors.federation_keys import load_keyring
from connectors.sources import open_source
from gateway.dev.localfed import Federation, register_everything, start_federation

SIZES = (50_000, 200_000, 600_000, 1_200_000)
# The headline target is for warm snapshots at these sizes (issue 15): measured beside the cold figure.
WARM_SIZES = (200_000, 1_200_000)
QUICK_LIMIT = 200_000
CHART = RESULTS / "scale.png"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(persons: int) -> dict[str, Any]:
    """One end-to-end headline query on a fresh federation over the county of `persons`."""
    root = county(persons)
    with sqlite3.connect(root / "register.db") as db:
        households = int(db.execute("SELECT COUNT(DISTINCT household_no) FROM persons").fetchone()[0])
    workdir = RESULTS / f"scale-{persons}"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(root / "state", ignore_errors=True)
    fed: Federation = start_federation(workdir, county=root)
    try:
        register_everything(fed, household_only=True)
        with fed.client("analyst") as analyst:
            spec = headline("register.persons.village", "0.5").model_copy(
                update={"purpose": f"Scale benchmark at {persons} persons of the headline household query"}
            )
            qid = analyst.submit(spec)["id"]
            idle = _rss_mb(fed.gateway.process.pid)
            start = time.perf_counter()
            analyst.run(qid)
            seconds = time.perf_counter() - start
        connectors = {n: _peak_rss_mb(c.process.pid) for n, c in fed.connectors.items()}
        gateway_peak = _peak_rss_mb(fed.gateway.process.pid)
    finally:
        fed.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    load_seconds, query_seconds = centralized(root, workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "persons": persons,
        "households": households,
        "seconds": seconds,
        "gateway_idle_mib": idle,
        "gateway_peak_mib": gateway_peak,
        "connector_max_mib": max(connectors.values()),
        "connector_max_name": max(connectors, key=lambda n: connectors[n]),
        "connectors_sum_mib": sum(connectors.values()),
        "central_load": load_seconds,
        "central_query": query_seconds,
    }


def snapshots_available() -> bool:
    """Whether connectors keep snapshots (`source.snapshots` in their configuration)."""
    from connectors.config import SourceConfig

    return "snapshots" in SourceConfig.model_fields


def _set_snapshots(root: Path, on: bool) -> None:
    import yaml

    for path in sorted((root / "connectors").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        header = "".join(line for line in text.splitlines(True) if line.startswith("#"))
        doc = yaml.safe_load(text)
        doc["source"]["snapshots"] = on
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


def measure_warm(persons: int) -> dict[str, float]:
    """The headline query with snapshots warm: a fresh federation with snapshots on, one query that
    builds them (timed on its own), then a second query (a new query id) that reads them."""
    root = county(persons)
    workdir = RESULTS / f"scale-warm-{persons}"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(root / "state", ignore_errors=True)
    _set_snapshots(root, True)
    try:
        fed: Federation = start_federation(workdir, county=root)
        try:
            register_everything(fed, household_only=True)
            times = []
            with fed.client("analyst") as analyst:
                for i in range(2):
                    spec = headline("register.persons.village", "0.5").model_copy(
                        update={"purpose": f"Warm-snapshot benchmark {i} at {persons} persons"}
                    )
                    qid = analyst.submit(spec)["id"]
                    start = time.perf_counter()
                    analyst.run(qid)
                    times.append(time.perf_counter() - start)
            gateway_peak = _peak_rss_mb(fed.gateway.process.pid)
        finally:
            fed.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(root / "state", ignore_errors=True)
        cold_rollups(root)
    return {"first": times[0], "warm": times[1], "gateway_peak_mib": gateway_peak}


def centralized(root: Path, workdir: Path) -> tuple[float, float]:
    """The trusted central party at this size: load and clean the stores once, then the exact query in
    DuckDB over a Parquet copy (as bench_engines; the load, once, and the query, best of two)."""
    import duckdb

    srcs = sources(root)
    start = time.perf_counter()
    frames = load(srcs)
    load_seconds = time.perf_counter() - start
    workdir.mkdir(parents=True, exist_ok=True)
    for ref, frame in frames.items():
        frame.to_parquet(workdir / f"{_table(ref)}.parquet", index=False)
    del frames
    sql = duckdb_sql(srcs, lambda ref: f"read_parquet('{workdir / (_table(ref) + '.parquet')}')")
    con = duckdb.connect()
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        con.execute(sql).fetchall()
        best = min(best, time.perf_counter() - start)
    con.close()
    return load_seconds, best


def token_bytes(persons: int) -> tuple[float, float, int]:
    """Bytes per token row and in total that the gateway holds for one headline query; and the rows."""
    root = county(persons)
    spec = headline("register.persons.village", "0.5")
    plan = headline_plan(root)
    total_bytes = 0
    total_rows = 0
    for e in plan.extracts:
        loaded = load_config(root / "connectors" / f"{e.connector}.yaml")
        dataset = loaded.config.dataset(e.dataset)
        assert dataset is not None
        req = e.unsafe_unapproved_request(spec, epoch=1)
        source = open_source(loaded.config.source)
        try:
            keyring = load_keyring(loaded.config.federation_keyring_file)
            table = Extractor(loaded, source, keyring).run(req, dataset).table
        finally:
            source.close()
        total_bytes += table.nbytes
        total_rows += table.num_rows
    return total_bytes / total_rows, float(total_bytes), total_rows


def chart(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    persons = [r["persons"] / 1e6 for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(persons, [r["seconds"] for r in rows], "o-", label="fedgate end to end")
    left.plot(
        persons, [r["central_load"] + r["central_query"] for r in rows], "s--", label="central load + query"
    )
    left.plot(persons, [r["central_query"] for r in rows], "^:", label="central exact query (DuckDB)")
    left.set_xlabel("persons (millions)")
    left.set_ylabel("seconds")
    left.set_title("Headline household query: time")
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    left.legend()
    right.plot(persons, [r["gateway_peak_mib"] for r in rows], "o-", label="gateway VmHWM")
    right.plot(persons, [r["connector_max_mib"] for r in rows], "s-", label="largest connector VmHWM")
    right.plot(persons, [r["connectors_sum_mib"] for r in rows], "^--", label="five connectors, sum")
    right.set_xlabel("persons (millions)")
    right.set_ylabel("MiB")
    right.set_title("Peak resident memory")
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)
    right.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run(quick: bool) -> list[BenchResult]:
    sizes = [s for s in SIZES if not quick or s <= QUICK_LIMIT]
    rows = [measure(s) for s in sizes]
    chart(rows, CHART)
    results = []
    for r in rows:
        label = f"{int(r['persons']):,} persons"
        hh = f"{int(r['households']):,} households; "
        results += [
            BenchResult("scale", f"{label}: end to end", r["seconds"], "s", None, f"{hh}one fresh query"),
            BenchResult(
                "scale",
                f"{label}: centralized load, then exact query",
                r["central_load"] + r["central_query"],
                "s",
                None,
                f"load {r['central_load']:.2f} s (pandas, IDs normalised) + DuckDB over Parquet "
                f"{r['central_query']:.2f} s",
            ),
            BenchResult(
                "scale",
                f"{label}: ratio fedgate / (central load + query)",
                r["seconds"] / (r["central_load"] + r["central_query"]),
                "x",
                None,
                f"fedgate / exact query alone: {r['seconds'] / r['central_query']:.1f}x",
            ),
            BenchResult(
                "scale",
                f"{label}: gateway peak RSS",
                r["gateway_peak_mib"],
                "MiB",
                None,
                f"VmHWM; {r['gateway_idle_mib']:.0f} MiB before the query",
            ),
            BenchResult(
                "scale",
                f"{label}: largest connector peak RSS",
                r["connector_max_mib"],
                "MiB",
                None,
                f"{r['connector_max_name']}; all five together {r['connectors_sum_mib']:.0f} MiB",
            ),
        ]
    per_token, total, tokens = token_bytes(QUICK_LIMIT if not quick else sizes[0])
    at = QUICK_LIMIT if not quick else sizes[0]
    results.append(
        BenchResult(
            "scale",
            "bytes per token row held in the gateway",
            per_token,
            "B",
            None,
            f"Arrow nbytes / rows over the 6 extracts at {at:,} persons: {tokens:,} rows, "
            f"{total / 2**20:.1f} MiB",
        )
    )
    for r in rows:
        if int(r["persons"]) not in WARM_SIZES and not (quick and r is rows[-1]):
            continue
        label = f"{int(r['persons']):,} persons"
        duck = r["central_query"]
        results.append(
            BenchResult(
                "scale",
                f"{label}: ratio fedgate cold / exact DuckDB",
                r["seconds"] / duck,
                "x",
                None,
                f"snapshots cold (off); DuckDB over the central Parquet copy {duck:.2f} s; target <= 3 warm",
            )
        )
        if not snapshots_available():
            results.append(
                BenchResult(
                    "scale",
                    f"{label}: fedgate, snapshots warm",
                    float("nan"),
                    "s",
                    None,
                    "not available: these connectors keep no snapshots",
                )
            )
            continue
        warm = measure_warm(int(r["persons"]))
        results += [
            BenchResult(
                "scale",
                f"{label}: fedgate, first query building the snapshots",
                warm["first"],
                "s",
                None,
                "fresh federation, snapshots on",
            ),
            BenchResult(
                "scale", f"{label}: fedgate, snapshots warm", warm["warm"], "s", None, "second query"
            ),
            BenchResult(
                "scale",
                f"{label}: ratio fedgate warm / exact DuckDB",
                warm["warm"] / duck,
                "x",
                None,
                f"target <= 3 (stretch 2); gateway peak {warm['gateway_peak_mib']:.0f} MiB",
            ),
        ]
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        growth = (last["seconds"] / first["seconds"]) / (last["persons"] / first["persons"])
        results.append(
            BenchResult(
                "scale",
                "time growth relative to linear",
                growth,
                "x",
                None,
                f"({last['seconds']:.1f} s / {first['seconds']:.1f} s) / "
                f"({int(last['persons']):,} / {int(first['persons']):,}); 1 = linear; chart: {CHART.name}",
            )
        )
    return results
