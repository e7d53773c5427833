"""Run the benchmarks: `python -m bench [--quick] [--only NAME ...]`.

Every module `bench/bench_NAME.py` exposing `run(quick: bool) -> list[BenchResult]` is a benchmark called
NAME. Results print as one table and are written, with a description of the machine, to
bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pkgutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

import bench
from bench.common import BenchResult, machine_info

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "bench_"


def discover() -> dict[str, str]:
    """Map each benchmark name to its module."""
    return {
        info.name.removeprefix(PREFIX): f"bench.{info.name}"
        for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda i: i.name)
        if info.name.startswith(PREFIX)
    }


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _finite(value: float | None) -> float | None:
    # JSON has no NaN; an unavailable measurement is null, with the reason in its note.
    return value if value is None or math.isfinite(value) else None


def table(results: list[BenchResult]) -> Table:
    out = Table(title="fedgate benchmarks")
    out.add_column("benchmark")
    out.add_column("metric")
    out.add_column("value", justify="right")
    out.add_column("±", justify="right")
    out.add_column("unit")
    out.add_column("note")
    for r in results:
        out.add_row(r.name, r.metric, _number(r.value), _number(r.spread), r.unit, r.note)
    return out


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs and fewer repeats")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=sorted(available),
        help=f"run only this benchmark (repeatable); one of: {', '.join(sorted(available))}",
    )
    args = parser.parse_args(argv)
    chosen = args.only or sorted(available)

    console = Console()
    results: list[BenchResult] = []
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("", total=len(chosen))
        for name in chosen:
            progress.update(task, description=f"bench {name}")
            start = time.perf_counter()
            try:
                run: Callable[[bool], list[BenchResult]] = importlib.import_module(available[name]).run
                results.extend(run(args.quick))
            except Exception:
                # One broken benchmark must not hide the others' results.
                failed[name] = traceback.format_exc()
                progress.console.print(f"[red]bench {name} failed[/red]\n{failed[name]}")
            seconds[name] = round(time.perf_counter() - start, 2)
            progress.advance(task)

    console.print(table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine_info(),
        "quick": args.quick,
        "benchmarks": chosen,
        "seconds": seconds,
        "failed": {name: text.strip().splitlines()[-1] for name, text in failed.items()},
        "results": [{**asdict(r), "value": _finite(r.value), "spread": _finite(r.spread)} for r in results],
    }
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    console.print(f"written to {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
