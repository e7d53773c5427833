"""The Spark engine (PySpark, `local[2]`, one session for the module): the same exact per-cell aggregates
as the Polars engine and the eager reference on the same extracts, and its staging deleted after the
release and after a failure."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import engine_fixture as fx
import pyarrow as pa
import pytest

from aggregation.engines import PolarsEngine
from aggregation.planner import Plan

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("the Spark engine needs a Java runtime", allow_module_level=True)

from aggregation.engines.spark_engine import SparkEngine

Extracts = dict[str, tuple[Plan, dict[str, pa.Table]]]


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> Extracts:
    return fx.extracts(fx.county(tmp_path_factory.mktemp("county")))


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkEngine]:
    engine = SparkEngine(master="local[2]", staging_dir=tmp_path_factory.mktemp("staging"))
    yield engine
    engine.stop()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(fx.queries()))
def test_spark_and_polars_give_the_same_cells(spark: SparkEngine, extracts: Extracts, name: str) -> None:
    plan, tables = extracts[name]
    with spark.start(plan, fx.layout(plan)) as run:
        for ref, table in tables.items():
            run.add(ref, table)
        assert list(run.dir.glob("*.parquet"))
        got = dict(run.cells())
    assert not run.dir.exists()
    with PolarsEngine().start(plan, fx.layout(plan)) as polars_run:
        for ref, table in tables.items():
            polars_run.add(ref, table)
        fx.assert_same_cells(got, polars_run.cells())
    fx.assert_same_cells(got, fx.reference_cells(plan, tables))


def test_a_failed_spark_run_deletes_its_staging(spark: SparkEngine, extracts: Extracts) -> None:
    plan, tables = extracts["headline"]
    with pytest.raises(RuntimeError, match="connector failed"), spark.start(plan, fx.layout(plan)) as run:
        run.add(next(iter(tables)), next(iter(tables.values())))
        staged: Path = run.dir
        assert list(staged.glob("*.parquet"))
        raise RuntimeError("connector failed")
    assert not staged.exists()
    assert list(spark.staging_dir.iterdir()) == []
