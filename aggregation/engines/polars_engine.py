"""The embedded engine: Polars over the extracts' Arrow buffers, in memory or bucketed and spilled to disk.

In memory (the extracts' Arrow size within ``memory_bytes``) the join, the household roll-up and the
per-cell aggregation are one lazy Polars plan over the extracts' buffers, collected once with the streaming
engine: no pandas, no copy of the joined frame.

Beyond ``memory_bytes`` the run partitions by token prefix (tokens are uniform, so the buckets are even):

    each extract, as it arrives   -> split by its person token's first byte into B bucket files
    person level, bucket by bucket -> join on the person token (:func:`aggregation.executor.person_rows`)
                                     -> split by the household token's first byte into B files
    household level, bucket by bucket -> roll up, filter, clamp (:func:`aggregation.executor.unit_rows`)
                                     -> exact per-cell aggregates of that bucket
    all buckets                   -> added up over every public cell (`CellLayout.complete`)

B is chosen when spilling starts, from the extracts' size and ``memory_bytes`` (a power of two, at most
256), so one bucket's working set stays near ``memory_bytes / WORKING_SET_FACTOR`` whatever the county's
size. Counts and sums add up across buckets, so the cells equal the in-memory ones exactly. Spill files
live in one private temporary directory per run (under ``spill_dir``), deleted by :meth:`PolarsRun.close`
after the release and after any failure.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.feather as feather

from aggregation.executor import extract_frame, person_rows, unit_rows
from aggregation.planner import Plan
from connectors.protocol import HOUSEHOLD_TOKEN_COLUMN, TOKEN_COLUMN
from privacy.cells import CellLayout

MAX_BUCKETS = 256  # one bucket per value of the token's first byte
WORKING_SET_FACTOR = 4  # a bucket's join and roll-up hold a few times its extracts' bytes
DEFAULT_MEMORY_BYTES = 2 * 1024**3


class PolarsEngine:
    """Polars in the gateway's process (the default engine)."""

    name = "polars"

    def __init__(
        self,
        *,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        spill_dir: Path | None = None,
        buckets: int | None = None,
    ) -> None:
        if memory_bytes <= 0:
            raise ValueError("the engine's memory bound must be positive")
        if buckets is not None and (buckets < 2 or buckets > MAX_BUCKETS or buckets & (buckets - 1)):
            raise ValueError(f"buckets must be a power of two from 2 to {MAX_BUCKETS}")
        self.memory_bytes = memory_bytes
        self.spill_dir = spill_dir
        self.buckets = buckets

    def start(self, plan: Plan, layout: CellLayout) -> PolarsRun:
        return PolarsRun(plan, layout, self.memory_bytes, self.spill_dir, self.buckets)


def _first_bytes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The first byte of each 16-byte token (fixed-size binary), without copying the tokens."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_fixed_size_binary(array.type):
        array = array.cast(pa.binary(16))
    width = array.type.byte_width
    data = np.frombuffer(array.buffers()[1], dtype=np.uint8)
    start = array.offset * width
    return data[start : start + len(array) * width : width]


def _write_buckets(table: pa.Table, column: str, buckets: int, path: Path) -> None:
    """`table` split by the first byte of `column` into `path`/NNN.arrow, one file per bucket (empty too)."""
    bucket = _first_bytes(table.column(column)) & (buckets - 1)
    order = np.argsort(bucket, kind="stable")
    counts = np.bincount(bucket, minlength=buckets)
    ordered = table.take(pa.array(order)) if table.num_rows else table
    path.mkdir(parents=True, exist_ok=True)
    start = 0
    for b, n in enumerate(counts.tolist()):
        feather.write_feather(ordered.slice(start, n), path / f"{b:03d}.arrow", compression="uncompressed")
        start += n


def _bucket_indices(frame: pl.DataFrame, column: str, buckets: int) -> dict[int, pl.DataFrame]:
    """Rows of `frame` by the first byte of their `column` token, modulo `buckets`."""
    first = pl.col(column).bin.head(1).bin.reinterpret(dtype=pl.UInt8)
    split = frame.with_columns((first & (buckets - 1)).alias("_bucket")).partition_by(
        "_bucket", as_dict=True, include_key=False
    )
    return {int(key[0]): part for key, part in split.items()}


class PolarsRun:
    """One query's join on Polars; see the module docstring."""

    def __init__(
        self, plan: Plan, layout: CellLayout, memory_bytes: int, spill_dir: Path | None, buckets: int | None
    ) -> None:
        self.plan = plan
        self.layout = layout
        self.memory_bytes = memory_bytes
        self.spill_dir = spill_dir
        self.buckets = buckets
        self._held: dict[str, pa.Table] = {}
        self._held_bytes = 0
        self._spilled: set[str] = set()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()

    @property
    def spilled(self) -> bool:
        return self._dir is not None

    def add(self, ref: str, table: pa.Table) -> None:
        with self._lock:
            if self._dir is not None:
                self._spill(ref, table)
                return
            self._held[ref] = table
            self._held_bytes += table.nbytes
            if self._held_bytes > self.memory_bytes:
                self._start_spilling()

    def _start_spilling(self) -> None:
        if self.buckets is None:
            # From the extracts held so far, the expected size of all of them.
            expected = self._held_bytes * len(self.plan.extracts) / max(1, len(self._held))
            wanted = math.ceil(expected * WORKING_SET_FACTOR / self.memory_bytes)
            self.buckets = min(MAX_BUCKETS, max(2, 1 << max(0, wanted - 1).bit_length()))
        parent = self.spill_dir
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        self._dir = tempfile.TemporaryDirectory(prefix="fedgate-engine-", dir=parent)
        held, self._held, self._held_bytes = self._held, {}, 0
        for ref, table in held.items():
            self._spill(ref, table)

    def _spill(self, ref: str, table: pa.Table) -> None:
        assert self._dir is not None and self.buckets is not None
        _write_buckets(table, TOKEN_COLUMN, self.buckets, Path(self._dir.name) / "persons" / ref)
        self._spilled.add(ref)

    def cells(self) -> Mapping[str, pl.DataFrame]:
        with self._lock:
            if self._dir is None:
                return self._in_memory()
            return self._bucketed()

    def _in_memory(self) -> dict[str, pl.DataFrame]:
        frames = {}
        for ref, table in self._held.items():
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            frames[ref] = extract_frame(ref, frame.lazy())
        layout = self.layout
        aggregates = layout.aggregate(layout.unit_rows(unit_rows(self.plan, person_rows(self.plan, frames))))
        names = list(aggregates)
        collected = pl.collect_all([aggregates[n] for n in names], engine="streaming")
        return layout.complete({n: [c] for n, c in zip(names, collected, strict=True)})

    def _bucketed(self) -> dict[str, pl.DataFrame]:
        assert self._dir is not None and self.buckets is not None
        root = Path(self._dir.name)
        buckets = self.buckets
        # One Arrow IPC file per household bucket, appended to by every person bucket: 2B files, not B^2.
        writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        try:
            for b in range(buckets):
                frames = {
                    ref: extract_frame(ref, pl.scan_ipc(root / "persons" / ref / f"{b:03d}.arrow"))
                    for ref in sorted(self._spilled)
                }
                persons = person_rows(self.plan, frames).collect(engine="streaming")
                for ref in self._spilled:
                    (root / "persons" / ref / f"{b:03d}.arrow").unlink()
                if not writers:
                    schema = persons.clear().to_arrow().schema
                    writers = {
                        h: pa.ipc.new_file(str(root / f"households-{h:03d}.arrow"), schema)
                        for h in range(buckets)
                    }
                for h, part in _bucket_indices(persons, HOUSEHOLD_TOKEN_COLUMN, buckets).items():
                    writers[h].write_table(part.to_arrow())
        finally:
            for writer in writers.values():
                writer.close()
        layout = self.layout
        partials: dict[str, list[pl.DataFrame]] = {t.name: [] for t in layout.tables}
        for h in range(buckets):
            path = root / f"households-{h:03d}.arrow"
            aggregates = layout.aggregate(layout.unit_rows(unit_rows(self.plan, pl.scan_ipc(path))))
            names = list(aggregates)
            for name, frame in zip(names, pl.collect_all([aggregates[n] for n in names]), strict=True):
                partials[name].append(frame)
            path.unlink()
        return layout.complete(partials)

    def close(self) -> None:
        with self._lock:
            self._held.clear()
            self._held_bytes = 0
            if self._dir is not None:
                self._dir.cleanup()

    def __enter__(self) -> PolarsRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
