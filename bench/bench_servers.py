"""The headline query end to end with tax in PostgreSQL and social insurance in MariaDB, against the same
county with every store embedded, at 1,200,000 persons (200,000 with --quick), in the same run.

Both counties come from the generator with the same seed (11), so they hold the same rows; the embedded
one is `bench_extract.county` (SQLite, Parquet, CSV; cached under bench/results/), the other is generated
for the run into private databases on the local servers (127.0.0.1:5432 and 127.0.0.1:3306), dropped
afterwards. Each gets a fresh federation (gateway and five connectors on loopback) and one fresh headline
household band query by village (as bench_scale), with every process's peak memory (VmHWM). Both
federations give connectors 3,000 s instead of the gateway's default 60 s (see ENV), and the analyst's
client an hour.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any

from bench.bench_extract import RESULTS, county
from bench.bench_gateway import _peak_rss_mb
from bench.bench_pack import server_county
from bench.common import BenchResult
from bench.headline import headline
from gateway.client import GatewayClient
from gateway.dev.localfed import Federation, register_everything, start_federation

SIZE = 1_200_000
QUICK_SIZE = 200_000
ENV = {"FEDGATE_CONNECTOR_TIMEOUT_SECONDS": "3000"}
CLIENT_TIMEOUT = 3600.0
"""The gateway gives a connector 60 s by default; MariaDB's social-insurance extracts at 1,200,000 persons
take minutes here (the gateway then reports the connector unreachable), see BENCHMARKS.md."""


def headline_once(root: Path, label: str) -> dict[str, Any]:
    """One fresh headline query end to end on a fresh federation over `root`."""
    workdir = RESULTS / f"servers-federation-{label}"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(root / "state", ignore_errors=True)
    fed: Federation = start_federation(workdir, county=root, env=ENV)
    try:
        register_everything(fed, household_only=True, groups=False)
        with GatewayClient(fed.gateway.url, fed.keys["analyst"], timeout=CLIENT_TIMEOUT) as analyst:
            spec = headline("register.persons.village", "0.5").model_copy(
                update={"purpose": f"Server benchmark ({label}) of the headline household band query"}
            )
            qid = analyst.submit(spec)["id"]
            start = time.perf_counter()
            analyst.run(qid)
            seconds = time.perf_counter() - start
        with fed.client("auditor") as auditor:
            calls = auditor.audit_entries(action="connector.call", query_id=qid, limit=1000)["entries"]
        submitted = min(dt.datetime.fromisoformat(c["time"]) for c in calls)
        answered = {
            f"{c['event']['connector']}.{c['event']['dataset']}": dt.datetime.fromisoformat(c["time"])
            for c in calls
        }
        peaks = {n: _peak_rss_mb(c.process.pid) for n, c in fed.connectors.items()}
        gateway = _peak_rss_mb(fed.gateway.process.pid)
    except BaseException:
        fed.stop()
        print(f"the federation's logs are kept in {workdir}")
        raise
    fed.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    # When each extract's answer was audited, from the first answer on (the extracts run side by side).
    order = sorted(answered, key=lambda r: answered[r])
    timeline = ", ".join(f"{r} +{(answered[r] - submitted).total_seconds():.0f} s" for r in order)
    return {
        "seconds": seconds,
        "gateway": gateway,
        "tax": peaks["tax"],
        "social": peaks["social"],
        "timeline": timeline,
    }


def run(quick: bool) -> list[BenchResult]:
    persons = QUICK_SIZE if quick else SIZE
    embedded = headline_once(county(persons), "embedded")
    with server_county(persons, prefix="servers-county") as (root, generated):
        servers = headline_once(root, "servers")
    at = f"{persons:,} persons"
    out = [
        BenchResult(
            "servers",
            f"{at}: end to end, every store embedded",
            embedded["seconds"],
            "s",
            None,
            f"one fresh query; answers: {embedded['timeline']}",
        ),
        BenchResult(
            "servers",
            f"{at}: end to end, tax PostgreSQL + social MariaDB",
            servers["seconds"],
            "s",
            None,
            f"one fresh query; county generated into the servers in {generated:.0f} s (not timed); answers: "
            f"{servers['timeline']}",
        ),
        BenchResult(
            "servers",
            f"{at}: ratio servers / embedded",
            servers["seconds"] / embedded["seconds"],
            "x",
            None,
            "same rows (seed 11)",
        ),
    ]
    for name in ("gateway", "tax", "social"):
        out.append(
            BenchResult(
                "servers",
                f"{at}: {name} peak RSS, servers",
                servers[name],
                "MiB",
                None,
                f"VmHWM; embedded: {embedded[name]:.0f} MiB",
            )
        )
    return out
