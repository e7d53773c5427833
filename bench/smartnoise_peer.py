"""SmartNoise SQL's side of bench_engines, run by bench/.venv-smartnoise/bin/python (not the project's).

    smartnoise_peer.py HOUSEHOLDS_CSV EPSILON TIMES

The CSV has one row per household: village, band. Prints one JSON line: the query's wall-clock seconds
per run, the CSV read time, the cells returned and the versions.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata

import pandas as pd
import snsql
from snsql import Privacy

QUERY = "SELECT village, band, COUNT(*) AS n FROM hh.households GROUP BY village, band"


def main(path: str, epsilon: float, times: int) -> None:
    start = time.perf_counter()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    read_seconds = time.perf_counter() - start
    rows = len(frame)
    delta = 1.0 / rows**1.5 if rows else 1e-6
    meta = {
        "hh": {
            "hh": {
                "households": {
                    "row_privacy": True,
                    "rows": rows,
                    "village": {"type": "string"},
                    "band": {"type": "string"},
                }
            }
        }
    }
    seconds, cells = [], 0
    for i in range(times + 1):  # the first run warms imports and caches and is not counted
        start = time.perf_counter()
        reader = snsql.from_df(frame, privacy=Privacy(epsilon=epsilon, delta=delta), metadata=meta)
        out = reader.execute(QUERY)
        if i:
            seconds.append(time.perf_counter() - start)
        cells = len(out) - 1  # the first row is the header
    report = {
        "query_seconds": seconds,
        "read_seconds": read_seconds,
        "cells": cells,
        "delta": delta,
        "version": metadata.version("smartnoise-sql"),
        "opendp": metadata.version("opendp"),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
