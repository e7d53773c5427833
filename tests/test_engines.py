"""The Polars engine: the same exact per-cell aggregates as the eager reference for every query shape,
in memory and bucketed on disk, and no spill file left behind, also after a failure."""

from __future__ import annotations

from pathlib import Path

import engine_fixture as fx
import polars as pl
import pyarrow as pa
import pytest

from aggregation.engines import PolarsEngine
from aggregation.planner import Plan
from gateway.runner import release_spec
from privacy.release import prepare_release

Extracts = dict[str, tuple[Plan, dict[str, pa.Table]]]


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> Extracts:
    return fx.extracts(fx.county(tmp_path_factory.mktemp("county")))


def _cells(engine: PolarsEngine, plan: Plan, tables: dict[str, pa.Table]) -> dict[str, pl.DataFrame]:
    with engine.start(plan, fx.layout(plan)) as run:
        for ref, table in tables.items():
            run.add(ref, table)
        return dict(run.cells())


@pytest.mark.parametrize("name", sorted(fx.queries()))
def test_in_memory_cells_equal_the_reference(extracts: Extracts, name: str) -> None:
    plan, tables = extracts[name]
    fx.assert_same_cells(_cells(PolarsEngine(), plan, tables), fx.reference_cells(plan, tables))


@pytest.mark.parametrize("name", sorted(fx.queries()))
def test_bucketed_cells_equal_the_reference_and_leave_nothing_on_disk(
    extracts: Extracts, name: str, tmp_path: Path
) -> None:
    plan, tables = extracts[name]
    engine = PolarsEngine(memory_bytes=1, spill_dir=tmp_path, buckets=8)
    with engine.start(plan, fx.layout(plan)) as run:
        for ref, table in tables.items():
            run.add(ref, table)
        assert run.spilled and any(tmp_path.rglob("*.arrow"))
        got = dict(run.cells())
    fx.assert_same_cells(got, fx.reference_cells(plan, tables))
    assert list(tmp_path.iterdir()) == []


def test_the_bucket_count_follows_the_memory_bound(extracts: Extracts, tmp_path: Path) -> None:
    plan, tables = extracts["headline"]
    size = sum(t.nbytes for t in tables.values())
    runs = {}
    for bound in (size // 2, size // 16):
        with PolarsEngine(memory_bytes=bound, spill_dir=tmp_path).start(plan, fx.layout(plan)) as run:
            for ref, table in tables.items():
                run.add(ref, table)
            fx.assert_same_cells(run.cells(), fx.reference_cells(plan, tables))
            runs[bound] = run.buckets
    assert runs[size // 2] is not None and runs[size // 16] is not None
    assert runs[size // 16] > runs[size // 2] >= 2


def test_a_failed_run_deletes_its_spill_files(extracts: Extracts, tmp_path: Path) -> None:
    plan, tables = extracts["headline"]
    engine = PolarsEngine(memory_bytes=1, spill_dir=tmp_path, buckets=4)
    with pytest.raises(RuntimeError, match="connector failed"), engine.start(plan, fx.layout(plan)) as run:
        run.add(next(iter(tables)), next(iter(tables.values())))
        assert any(tmp_path.rglob("*.arrow"))
        raise RuntimeError("connector failed")
    assert list(tmp_path.iterdir()) == []


def test_the_release_adds_opendp_noise_to_the_engine_cells(extracts: Extracts) -> None:
    plan, tables = extracts["groups"]
    prepared = prepare_release(release_spec(plan))
    cells = _cells(PolarsEngine(), plan, tables)
    result = prepared.run_cells(cells)
    count = [c for c in result.cells if c.statistic == "count"]
    assert len(count) == cells["cells"].height
    exact = cells["cells"]["fedgate__count"].to_list()
    # Noise was drawn (a count of every cell exactly right would be a release without noise).
    assert [c.value for c in count] != exact


def test_the_lorenz_offsets_equal_the_former_numpy_ones() -> None:
    from privacy.cells import lorenz_offset

    values = pl.Series("x", [-5, 0, 1, 19_999, 20_000, 20_001, 77_777, 399_999, 400_000, 10**6, 5_000_000])
    lower, upper = -200_000, 5_000_000
    clamped = values.clip(lower, upper)
    got = pl.DataFrame({"x": clamped}).select(lorenz_offset(pl.col("x"), fx.LORENZ_EDGES, lower, upper))
    want = fx._offsets(clamped.to_numpy(), fx.LORENZ_EDGES, lower, upper)
    assert got.to_series().to_list() == want.tolist()
