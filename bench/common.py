"""What every benchmark shares: the result record, a timing helper, and a description of the machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import ssl
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "opendp",
    "pandas",
    "pyarrow",
    "cryptography",
    "sqlalchemy",
    "polars",
    "duckdb",
    "pipeline-dp",
    "python-dp",
    "matplotlib",
)


@dataclass
class BenchResult:
    """One measured number. `spread` is in the unit of `value`: the largest distance of a run from it."""

    name: str
    metric: str
    value: float
    unit: str
    spread: float | None = None
    note: str = ""


def summarize(samples: list[float]) -> tuple[float, float]:
    """Return the median of `samples` and the largest distance of any sample from it."""
    if not samples:
        raise ValueError("no samples")
    median = statistics.median(samples)
    return median, max(abs(s - median) for s in samples)


def timings(fn: Callable[[], object], times: int) -> list[float]:
    """Run `fn` `times` times and return each run's wall-clock seconds."""
    if times < 1:
        raise ValueError(f"times must be at least 1, got {times}")
    out = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def repeat(fn: Callable[[], object], times: int) -> tuple[float, float]:
    """Run `fn` `times` times; return the median seconds and the largest distance of a run from it."""
    return summarize(timings(fn, times))


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, object]:
    """Describe the machine and software, so a result can be compared with one from elsewhere."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = _memory_bytes()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(sys.orig_argv),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": _cpu_model(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "openssl_python": ssl.OPENSSL_VERSION,
        "packages": {p: _version(p) for p in PACKAGES},
    }


def cold_rollups(county: Path) -> Path:
    """Turn the connectors' snapshots off in a generated county (`source.snapshots: false`), and return it.

    A benchmark that repeats one query would otherwise time the snapshot from its second run on: every
    repetition here must read its store, as a cold query does. (The pack benchmark keeps snapshots on:
    reading the stores once for the queries of one pack is what it measures.)
    """
    import yaml

    for path in sorted((county / "connectors").glob("*.yaml")):
        header = "".join(
            line for line in path.read_text(encoding="utf-8").splitlines(True) if line.startswith("#")
        )
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if doc["source"].get("snapshots") is not False:
            doc["source"]["snapshots"] = False
            path.write_text(
                header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8"
            )
    return county


def wire_query(connector: str, dataset: str, measures: tuple[str, ...], label: str) -> Any:
    """The query an in-process extract request carries (fedgate/2): a person sum of these measures."""
    from decimal import Decimal

    from connectors.query import Measure, QuerySpec, Statistic, StatisticKind, Term
    from connectors.vocabulary import Unit

    return QuerySpec(
        purpose=f"benchmark extract {label}",
        unit=Unit.PERSON,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(
            terms=tuple(Term(dataset=f"{connector}.{dataset}", measure=m) for m in measures),
            lower=0,
            upper=10_000_000,
        ),
        statistics=(Statistic(kind=StatisticKind.SUM),),
        epsilon=Decimal(1),
        member_cap=1,
    )
