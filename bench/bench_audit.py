"""The audit log: durable appends per second with 8 concurrent writers, and offline verification speed.

Appends: a fresh SQLite store (WAL journal, synchronous=FULL) in a temporary directory; 8 threads each
append events shaped like the gateway's per-request entries, one call per entry, and every call returns
only after the commit that holds its entry (concurrent callers share commits: group commit). One writer
is measured too, for scale. Each run ends by re-hashing the whole chain from the store, so a fast but
wrong appender cannot post a number.

Verification: a store of 1,000,000 entries (--quick: 100,000) is built with `append_many`, checkpointed
every 100,000 entries and at the end, exported, and verified offline with `verify_export`, which reads
the file, re-hashes every entry, checks the chain and sequence numbers, recomputes the Merkle root at
every checkpoint and checks the signatures. Reported with the default worker processes (one per usable
core) and with one process.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from audit.checkpoint import Checkpointer, NoteSigner
from audit.entries import GENESIS_HASH
from audit.export import export_log
from audit.store import AuditLog
from audit.verify import verify_export
from bench.common import BenchResult, summarize

WRITERS = 8
FULL = 1_000_000
QUICK = 100_000
TARGET_APPENDS = 2_000
TARGET_VERIFY = 200_000


def _event(writer: int, i: int) -> dict[str, Any]:
    return {
        "action": "http.request",
        "actor": "analyst:alice",
        "role": "analyst",
        "method": "POST",
        "path": "/v1/queries/{query_id}/run",
        "status": 200,
        "request_id": f"{writer:08x}{i:024x}",
        "client": "127.0.0.1",
        "latency_ms": 12.5,
        "query_id": "q_4b1d4e6f8a7b6c5d",
        "outcome": "ok",
    }


def _check_chain(log: AuditLog) -> None:
    prev = GENESIS_HASH
    for expected, e in enumerate(log.entries(), start=1):
        digest = hashlib.sha256(prev + e.canonical).digest()
        if e.seq != expected or e.prev_hash != prev.hex() or e.hash != digest.hex():
            raise AssertionError(f"the audit chain breaks at entry {e.seq}")
        prev = digest


def _append_rate(directory: Path, writers: int, per_writer: int) -> tuple[float, float]:
    """Appends per second and entries per commit for `writers` threads on a fresh store."""
    log = AuditLog.open(f"sqlite:///{directory / f'appends-{writers}-{time.monotonic_ns()}.db'}")
    commits = [0]
    sa.event.listen(log.engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def write(w: int) -> None:
        barrier.wait()
        try:
            for i in range(per_writer):
                log.append(_event(w, i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    total = writers * per_writer
    if log.head().size != total:
        raise AssertionError(f"{log.head().size} entries stored, {total} appended")
    _check_chain(log)
    log.engine.dispose()
    return total / elapsed, total / max(commits[0], 1)


def _appends(directory: Path, quick: bool) -> list[BenchResult]:
    per_writer = 500 if quick else 2_500
    times = 3
    rates, batches = zip(*(_append_rate(directory, WRITERS, per_writer) for _ in range(times)), strict=True)
    rate, spread = summarize(list(rates))
    note = (
        f"SQLite WAL synchronous=FULL, {WRITERS}x{per_writer:,} appends, median of {times}; "
        f"{sum(batches) / len(batches):.1f} entries per commit; target >= {TARGET_APPENDS:,}/s"
    )
    results = [BenchResult("audit", f"durable appends, {WRITERS} writers", rate, "appends/s", spread, note)]
    single = [_append_rate(directory, 1, per_writer)[0] for _ in range(times)]
    rate1, spread1 = summarize(single)
    note1 = f"SQLite WAL synchronous=FULL, 1x{per_writer:,} appends, median of {times}"
    results.append(BenchResult("audit", "durable appends, 1 writer", rate1, "appends/s", spread1, note1))
    return results


def _verification(directory: Path, quick: bool) -> list[BenchResult]:
    n = QUICK if quick else FULL
    signer = NoteSigner.generate("bench.fedgate.example/audit")
    log = AuditLog.open(f"sqlite:///{directory / 'verify.db'}")
    checkpointer = Checkpointer(log, signer)
    batch = 10_000
    for start in range(0, n, batch):
        log.append_many(_event(start // batch, i) for i in range(start, min(start + batch, n)))
        if (start + batch) % 100_000 == 0:
            checkpointer.checkpoint()
    path = directory / "export.jsonl"
    began = time.perf_counter()
    summary = export_log(log, path, checkpointer=checkpointer)
    export_seconds = time.perf_counter() - began
    size_mb = path.stat().st_size / 2**20
    log.engine.dispose()

    results = [
        BenchResult(
            "audit",
            f"export, {n:,} entries",
            n / export_seconds,
            "entries/s",
            None,
            f"{size_mb:,.0f} MiB JSON Lines, {summary.checkpoints} checkpoint(s), one run",
        )
    ]
    times = 3
    for label, workers in (("default workers", None), ("1 process", 1)):
        samples = []
        for _ in range(times):
            began = time.perf_counter()
            report = verify_export(path, [signer.vkey], workers=workers)
            samples.append(n / (time.perf_counter() - began))
            if not report.ok or report.entries != n or report.covered_to != n:
                raise AssertionError(f"the benchmark export does not verify: {report.reason}")
        rate, spread = summarize(samples)
        note = f"{n:,} entries ({size_mb:,.0f} MiB), every entry re-hashed, median of {times}"
        if workers is None:
            note += f"; target >= {TARGET_VERIFY:,}/s"
        results.append(BenchResult("audit", f"verify export, {label}", rate, "entries/s", spread, note))
    return results


def run(quick: bool) -> list[BenchResult]:
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-audit-") as tmp:
        directory = Path(tmp)
        return _appends(directory, quick) + _verification(directory, quick)
