"""Micro-benchmarks: connector extract rows per second per source kind, and gateway API requests per second.

Extracts: the connectors' in-process `Extractor` (roll-up, ID normalisation, clipping, tokens, Arrow) over
one person dataset per source kind, on a 50,000-person county (10,000 with --quick): SQLite (tax wages),
Parquet (utility electricity), CSV (civil assistance), and, when the servers on 127.0.0.1 answer,
PostgreSQL (tax wages) and MariaDB (social contributions) in private databases created for the run,
loaded by the county generator with the same seed (so the same rows) and dropped afterwards. The rate is
source rows read per second. The admin URLs are those of the test suite (FEDGATE_TEST_POSTGRES_ADMIN_URL,
FEDGATE_TEST_MARIADB_ADMIN_URL).

API: the gateway on loopback with auditing on (every request appends an `http.request` entry to the audit
log, durably, before the response is sent). A bounded load: 2,000 `GET /v1/budget` requests as the analyst
(500 with --quick) from 16 threads, each with its own keep-alive connection; it stops by itself. The audit
log's size is read before and after, so the entries written are counted, not assumed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench.bench_extract import RESULTS, county
from bench.common import BenchResult, cold_rollups, summarize, timings, wire_query
from connectors.config import load_config
from connectors.extract import Extractor
from connectors.federation_keys import load_keyring
from connectors.protocol import (
    Approval,
    ApprovedDataset,
    ExtractRequest,
    SignedApproval,
    TokenSpec,
    sha256_hex,
)
from connectors.sources import open_source
from gateway.dev.localfed import Federation, start_federation

POSTGRES_ADMIN_URL = os.environ.get(
    "FEDGATE_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get("FEDGATE_TEST_MARIADB_ADMIN_URL", "mysql+pymysql://root@127.0.0.1:3306/")
CONCURRENCY = 16

# (source kind, connector, dataset)
KINDS = [
    ("SQLite", "tax", "wages"),
    ("Parquet", "utility", "electricity"),
    ("CSV", "civil", "assistance"),
]
SERVER_KINDS = [("PostgreSQL", "tax", "wages"), ("MariaDB", "social", "contributions")]


def _request(
    department: str, connector: str, dataset: str, measures: tuple[str, ...], n: int
) -> ExtractRequest:
    query_id = f"bench-micro-{connector}-{dataset}-{n:06d}"
    digest = sha256_hex(query_id.encode())
    approval = Approval(
        department=department,
        query_id=query_id,
        query_digest=digest,
        unit="person",  # type: ignore[arg-type]
        period_start="2025-01",
        period_end="2025-12",
        datasets=(ApprovedDataset(dataset=dataset, measures=measures),),
        epsilon=Decimal("1"),
    )
    # The extractor does not check approvals (the service does), so an unsigned stand-in suffices.
    signed = SignedApproval(approval=approval, key_fingerprint="0" * 64, signature="")
    return ExtractRequest(
        query=wire_query(connector, dataset, measures, query_id),
        connector=connector,
        query_id=query_id,
        query_digest=digest,
        dataset=dataset,
        unit="person",  # type: ignore[arg-type]
        period_start="2025-01",
        period_end="2025-12",
        measures=measures,
        token=TokenSpec(epoch=1),
        epsilon=Decimal("1"),
        approval=signed,
    )


def _extract_rate(root: Path, kind: str, connector: str, name: str, times: int) -> BenchResult:
    loaded = load_config(root / "connectors" / f"{connector}.yaml")
    dataset = loaded.config.dataset(name)
    assert dataset is not None
    keyring = load_keyring(loaded.config.federation_keyring_file)
    source = open_source(loaded.config.source)
    extractor = Extractor(loaded, source, keyring)
    measures = tuple(m.name for m in dataset.measures)
    counter = iter(range(1_000_000))
    out: list[int] = []

    def extract() -> None:
        req = _request(loaded.config.department, connector, name, measures, next(counter))
        result = extractor.run(req, dataset)
        out.append(result.table.num_rows)
        result.to_ipc()

    try:
        extract()  # warm the caches and connection pools
        seconds = timings(extract, times)
    finally:
        source.close()
    rows = _source_rows(root, loaded.config.source.url, dataset.table or dataset.file or "")
    rate, spread = summarize([rows / s for s in seconds])
    note = f"{connector}.{name}: {rows:,} source rows -> {out[-1]:,} persons, median of {times}"
    return BenchResult("micro", f"extract, {kind}", rate, "rows/s", spread, note)


def _source_rows(root: Path, url: str, relation: str) -> int:
    if "://" in url:
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = "sqlite:///" + str((root / "connectors" / url.removeprefix("sqlite:///")).resolve())
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {relation}")).scalar_one())
        finally:
            engine.dispose()
    path = (root / "connectors" / url / relation).resolve()
    if path.suffix == ".csv":
        with path.open("rb") as f:
            return sum(1 for _ in f) - 1
    import pyarrow.parquet as pq

    if path.is_dir():
        return sum(pq.ParquetFile(p).metadata.num_rows for p in path.rglob("*.parquet"))
    return int(pq.ParquetFile(path).metadata.num_rows)


@contextmanager
def _private_database(kind: str) -> Iterator[str]:
    """A fresh database on the local server of `kind`, dropped afterwards; raises if unreachable."""
    name = f"fedgate_bench_{secrets.token_hex(6)}"
    admin_url = POSTGRES_ADMIN_URL if kind == "PostgreSQL" else MARIADB_ADMIN_URL
    options = {"isolation_level": "AUTOCOMMIT"} if kind == "PostgreSQL" else {}
    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 3}, **options)  # type: ignore[arg-type]
    try:
        with engine.connect() as conn:
            # The name is generated here from hex digits only; CREATE DATABASE takes no bound parameter.
            if kind == "PostgreSQL":
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with engine.connect() as conn:
                if kind == "PostgreSQL":
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        except sa.exc.SQLAlchemyError:
            pass
        engine.dispose()


def _server_extracts(persons: int, times: int) -> list[BenchResult]:
    from connectors.synth import generate_county

    results = []
    out = RESULTS / f"micro-servers-{persons}"
    urls: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    with ExitStack() as stack:
        for kind, _connector, _name in SERVER_KINDS:
            try:
                urls[kind] = stack.enter_context(_private_database(kind))
            except sa.exc.SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                unavailable[kind] = f"unavailable: {type(exc).__name__}: {reason}"
        try:
            if urls:
                shutil.rmtree(out, ignore_errors=True)
                generate_county(
                    out,
                    persons=persons,
                    seed=11,
                    tax_url=urls.get("PostgreSQL"),
                    social_url=urls.get("MariaDB"),
                )
                cold_rollups(out)
            for kind, connector, name in SERVER_KINDS:
                if kind in urls:
                    results.append(_extract_rate(out, kind, connector, name, times))
                else:
                    nan = float("nan")
                    results.append(
                        BenchResult("micro", f"extract, {kind}", nan, "rows/s", None, unavailable[kind])
                    )
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return results


def _api_load(root: Path, requests: int) -> list[BenchResult]:
    workdir = RESULTS / "micro-federation"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(root / "state", ignore_errors=True)
    fed: Federation = start_federation(workdir, county=root)
    try:
        url = fed.gateway.url
        local = threading.local()

        def client() -> httpx.Client:
            if not hasattr(local, "client"):
                local.client = httpx.Client(
                    base_url=url, headers={"authorization": f"Bearer {fed.keys['analyst']}"}, timeout=30
                )
            return local.client

        def one(_: int) -> float:
            start = time.perf_counter()
            response = client().get("/v1/budget")
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise AssertionError(f"GET /v1/budget answered {response.status_code}: {response.text}")
            return elapsed

        def audit_size() -> int:
            headers = {"authorization": f"Bearer {fed.keys['auditor']}"}
            response = httpx.post(f"{url}/v1/audit/checkpoint", headers=headers, timeout=30)
            response.raise_for_status()
            return int(response.json()["size"])

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(one, range(CONCURRENCY * 4)))  # warm-up: connections, caches
            before = audit_size()
            start = time.perf_counter()
            latencies = list(pool.map(one, range(requests)))
            elapsed = time.perf_counter() - start
            after = audit_size()
    finally:
        fed.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)))] * 1000
    # One checkpoint request lies between the two sizes; it is audited too.
    written = after - before
    note = (
        f"{requests:,} GET /v1/budget, concurrency {CONCURRENCY}, loopback; "
        f"{written:,} audit entries written meanwhile"
    )
    return [
        BenchResult("micro", "gateway API, audited", requests / elapsed, "requests/s", None, note),
        BenchResult("micro", "gateway API latency p50", p50, "ms", None, note),
        BenchResult("micro", "gateway API latency p99", p99, "ms", None, note),
    ]


def run(quick: bool) -> list[BenchResult]:
    persons = 10_000 if quick else 50_000
    times = 3 if quick else 5
    root = county(persons)
    results = [_extract_rate(root, kind, connector, name, times) for kind, connector, name in KINDS]
    results += _server_extracts(persons, times)
    results += _api_load(root, 500 if quick else 2_000)
    return results
