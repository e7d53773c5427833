"""The distributed engine: Apache Spark (PySpark) over extracts staged as Parquet.

Each run stages its extracts, as they arrive, as one Parquet file per extract in a private directory
under ``staging_dir`` (storage every Spark executor reads: a shared filesystem or object store on a
cluster, a local directory for ``local[N]``). Spark then runs the same join as
:mod:`aggregation.executor` (person level on the person token, household level on the household token),
maps each unit row to its public cell as :class:`privacy.cells.CellLayout` does, and aggregates exactly per
cell; only the cell aggregates come back to the gateway, where OpenDP adds the noise. Closing the run
deletes the staging directory, after the release and after any failure.

The rules are the executor's, written in Spark's DataFrame API; ``tests/test_engine_spark.py`` checks that
both engines give the same cells for every query shape. PySpark is imported only when this engine is
configured (``FEDGATE_ENGINE=spark``).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, SparkSession, Window
from pyspark.sql import DataFrame as SparkFrame
from pyspark.sql import functions as F

from aggregation.executor import VALUE
from aggregation.planner import Plan
from aggregation.query import (
    COVERED,
    INCOME_TREND,
    SIZE_BAND,
    TREND_FELL,
    TREND_NO_BASELINE,
    TREND_NOT_FELL,
    Measure,
)
from connectors.config import Unit
from connectors.protocol import BASELINE_SUFFIX, HOUSEHOLD_TOKEN_COLUMN, TOKEN_COLUMN
from privacy import intervals
from privacy.cells import COUNT, LOFFSET, SUM, CellLayout, CellTable
from privacy.vocabulary import LORENZ_RESOLUTION, histogram_bin_labels

_BASE = "_baseline_value"
_SHARE_SCALE = 10**6
DEFAULT_CONF: Mapping[str, str] = {
    # Cells are few and extracts one row per person: a few shuffle partitions per core, not Spark's 200.
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
}


def _c(name: str) -> Column:
    """A column by its exact name (names hold dots: `connector.dataset.column`)."""
    return F.col(f"`{name}`")


class SparkEngine:
    """Spark at ``master`` (``local[2]``, ``spark://host:7077``, ``k8s://...``, ``yarn``)."""

    name = "spark"

    def __init__(
        self, *, master: str = "local[2]", staging_dir: Path, conf: Mapping[str, str] | None = None
    ) -> None:
        self.master = master
        self.staging_dir = staging_dir
        self.conf = {**DEFAULT_CONF, **(conf or {})}
        self._session: SparkSession | None = None
        self._lock = threading.Lock()

    def session(self) -> SparkSession:
        with self._lock:
            if self._session is None:
                builder: Any = SparkSession.builder.master(self.master).appName("fedgate-gateway")
                for key, value in self.conf.items():
                    builder = builder.config(key, value)
                self._session = builder.getOrCreate()
            return self._session

    def stop(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.stop()
                self._session = None

    def start(self, plan: Plan, layout: CellLayout) -> SparkRun:
        return SparkRun(self, plan, layout)


class SparkRun:
    """One query's join on Spark; see the module docstring."""

    def __init__(self, engine: SparkEngine, plan: Plan, layout: CellLayout) -> None:
        self.engine = engine
        self.plan = plan
        self.layout = layout
        engine.staging_dir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="fedgate-spark-", dir=engine.staging_dir))
        self._staged: dict[str, Path] = {}
        self._lock = threading.Lock()

    def add(self, ref: str, table: pa.Table) -> None:
        path = self.dir / f"{ref}.parquet"
        # Dimensions arrive dictionary-encoded; Spark reads plain strings the same way on every executor.
        plain = pa.table(
            {
                name: col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
                for name, col in zip(table.column_names, table.columns, strict=True)
            }
        )
        pq.write_table(plain, path)
        with self._lock:
            self._staged[ref] = path

    def _frames(self, spark: SparkSession) -> dict[str, SparkFrame]:
        keep = {TOKEN_COLUMN, HOUSEHOLD_TOKEN_COLUMN}
        frames = {}
        for ref, path in self._staged.items():
            frame = spark.read.parquet(str(path))
            frames[ref] = frame.select(
                [F.col(c) if c in keep else F.col(c).alias(f"{ref}.{c}") for c in frame.columns]
            )
        return frames

    def cells(self) -> Mapping[str, pl.DataFrame]:
        spark = self.engine.session()
        frames = self._frames(spark)
        rows = _unit_rows(self.plan, _person_rows(self.plan, frames))
        mapped = _cell_rows(self.layout, rows)
        partials: dict[str, list[pl.DataFrame]] = {}
        for table in self.layout.tables:
            aggs = [F.count(F.lit(1)).cast("long").alias(COUNT)]
            if table.summed is not None:
                aggs.append(F.sum(_c(table.summed)).cast("long").alias(SUM))
            by = self.layout.by(table)
            grouped = mapped.groupBy([_c(b) for b in by]).agg(*aggs) if by else mapped.agg(*aggs)
            frame = pl.from_arrow(grouped.toArrow())
            assert isinstance(frame, pl.DataFrame)
            partials[table.name] = [frame.cast({b: pl.String for b in by})]
        return self.layout.complete(partials)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SparkRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --- the executor's rules, in Spark


def _signed_sum(measure: Measure, suffix: str) -> Column:
    parts = [
        F.lit(t.sign).cast("long")
        if t.is_members
        else F.coalesce(_c(f"{t.dataset}.{t.measure}{suffix}").cast("long"), F.lit(0).cast("long")) * t.sign
        for t in measure.terms
    ]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def _with_value(plan: Plan, frame: SparkFrame) -> SparkFrame:
    measure = plan.query.measure
    if measure is None:
        return frame
    frame = frame.withColumn(VALUE, _signed_sum(measure, ""))
    if plan.query.baseline is not None:
        frame = frame.withColumn(_BASE, _signed_sum(measure, BASELINE_SUFFIX))
    return frame


def _filtered(plan: Plan, frame: SparkFrame) -> SparkFrame:
    for ref, values in plan.filters:
        frame = frame.filter(_c(ref).isin(sorted(values)))
    return frame


def _person_rows(plan: Plan, frames: Mapping[str, SparkFrame]) -> SparkFrame:
    measured = [e.ref for e in plan.extracts if e.ref != plan.spine]
    linked = frames[plan.spine].filter(F.col(HOUSEHOLD_TOKEN_COLUMN).isNotNull())
    if plan.query.unit is Unit.HOUSEHOLD:
        persons = linked
        for ref in measured:
            persons = persons.join(frames[ref], on=TOKEN_COLUMN, how="left")
        persons = _with_value(plan, persons)
        for g in plan.query.member_groups:
            if g.dimension is not None:
                member = _c(g.dimension).isin(list(g.values or ()))
            else:
                member = F.coalesce(_c(g.measure or ""), F.lit(0)) >= (g.at_least or 0)
            persons = persons.withColumn(g.ref, F.coalesce(member, F.lit(False)))
        return persons
    if plan.coverage:
        seen = _union([frames[ref].select(TOKEN_COLUMN) for ref in plan.coverage]).distinct()
        persons = linked.join(seen.withColumn(COVERED, F.lit("1")), on=TOKEN_COLUMN, how="left")
        persons = persons.withColumn(COVERED, F.coalesce(_c(COVERED), F.lit("0")))
    elif measured:
        present = _union([frames[ref].select(TOKEN_COLUMN) for ref in measured]).distinct()
        persons = linked.join(present, on=TOKEN_COLUMN, how="left_semi")
    else:
        persons = linked
    for ref in measured:
        persons = persons.join(frames[ref], on=TOKEN_COLUMN, how="left")
    return _filtered(plan, _with_value(plan, persons))


def _union(frames: Sequence[SparkFrame]) -> SparkFrame:
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def _clip(column: Column, lower: int, upper: int) -> Column:
    return F.least(F.greatest(column, F.lit(lower)), F.lit(upper))


def _unit_rows(plan: Plan, persons: SparkFrame) -> SparkFrame:
    if plan.query.unit is Unit.HOUSEHOLD:
        frame = _filtered(plan, _households(plan, persons))
    else:
        rank = F.row_number().over(Window.partitionBy(HOUSEHOLD_TOKEN_COLUMN).orderBy(TOKEN_COLUMN))
        frame = persons.withColumn("_rank", rank).filter(F.col("_rank") <= plan.unit_multiplicity)
        frame = frame.dropDuplicates([TOKEN_COLUMN])
    columns = [_c(g.ref).alias(g.ref) for g in plan.groups]
    measure = plan.query.measure
    if measure is not None:
        columns.append(_clip(F.col(VALUE), measure.lower, measure.upper).cast("long").alias(VALUE))
    return frame.select(columns)


def _households(plan: Plan, persons: SparkFrame) -> SparkFrame:
    groups = plan.query.member_groups
    attrs = [c for c in persons.columns if c.startswith(f"{plan.spine}.")]
    aggs = [F.first(_c(a), ignorenulls=True).alias(a) for a in attrs]
    for g in groups:
        anyone = F.max(_c(g.ref).cast("int")) == 1
        aggs.append((~anyone if g.negate else anyone).alias(g.ref))
    aggs.append(F.count(F.lit(1)).alias("_size"))
    measure = plan.query.measure
    if measure is not None:
        aggs.append(F.sum(VALUE).alias(VALUE))
        if plan.query.baseline is not None:
            aggs.append(F.sum(_BASE).alias(_BASE))
    households = persons.groupBy(HOUSEHOLD_TOKEN_COLUMN).agg(*aggs)
    size = F.col("_size")
    households = households.withColumn(
        SIZE_BAND, F.when(size >= 5, F.lit("5+")).otherwise(size.cast("string"))
    )
    for g in groups:
        households = households.withColumn(g.ref, F.when(_c(g.ref), F.lit("1")).otherwise(F.lit("0")))
    if measure is not None and plan.query.baseline is not None:
        now = _clip(F.col(VALUE), measure.lower, measure.upper).cast("long")
        before = _clip(F.col(_BASE), measure.lower, measure.upper).cast("long")
        kept = _SHARE_SCALE - int(plan.query.baseline.drop_share * _SHARE_SCALE)
        trend = (
            F.when(before <= 0, F.lit(TREND_NO_BASELINE))
            .when(now * _SHARE_SCALE < before * kept, F.lit(TREND_FELL))
            .otherwise(F.lit(TREND_NOT_FELL))
        )
        households = households.withColumn(INCOME_TREND, trend)
    if measure is not None and measure.per_capita:
        # Half to even, as the executor's polars `round`.
        households = households.withColumn(VALUE, F.bround(F.col(VALUE) / size, 0).cast("long"))
    return households


def _bin_label(x: Column, edges: Sequence[int]) -> Column:
    labels = histogram_bin_labels(edges)
    out = F.when(x < edges[0], F.lit(labels[0]))
    for i in range(1, len(edges)):
        out = out.when(x < edges[i], F.lit(labels[i]))
    return out.otherwise(F.lit(labels[-1]))


def _lorenz_offset(x: Column, edges: Sequence[int], lower: int, upper: int) -> Column:
    """As :func:`privacy.cells.lorenz_offset`: ``rint((x - b_j) * R / w_j)`` in double precision."""
    bounds = intervals.histogram_boundaries(edges, lower, upper)
    starts, widths = bounds[:-1], bounds[1:] - bounds[:-1]
    xf = x.cast("double")
    j = F.lit(0)
    for e in edges:
        j = j + (xf >= float(e)).cast("int")
    start = F.lit(float(starts[0]))
    width = F.lit(float(widths[0]))
    for i in range(1, len(starts)):
        start = F.when(j == i, F.lit(float(starts[i]))).otherwise(start)
        width = F.when(j == i, F.lit(float(widths[i]))).otherwise(width)
    t = F.when(width > 0, F.rint((xf - start) * float(LORENZ_RESOLUTION) / width)).otherwise(F.lit(0.0))
    return _clip(t, 0, LORENZ_RESOLUTION).cast("long")


def _cell_rows(layout: CellLayout, rows: SparkFrame) -> SparkFrame:
    """Each unit row mapped to its public cell (:meth:`privacy.cells.CellLayout.unit_rows`)."""
    spec = layout.spec
    exprs = []
    for group in spec.groups:
        col = _c(group.name).cast("string")
        exprs.append(F.when(col.isin(list(group.values)), col).otherwise(F.lit(None)).alias(group.name))
    if spec.measure is not None:
        measure = _clip(_c(spec.measure).cast("long"), spec.lower, spec.upper)
        exprs.append(measure.alias(spec.measure))
        tables: list[CellTable] = list(layout.tables)
        for table in tables:
            if table.bin_column is not None and table.edges is not None:
                exprs.append(_bin_label(measure, table.edges).alias(table.bin_column))
        lorenz = layout.lorenz
        if lorenz is not None and lorenz.edges is not None:
            exprs.append(_lorenz_offset(measure, lorenz.edges, spec.lower, spec.upper).alias(LOFFSET))
    return rows.select(exprs)
