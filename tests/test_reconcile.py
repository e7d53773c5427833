"""Reconciled tables: the least-squares estimate on fixed inputs, consistency in non-negative whole
numbers, intervals from public scales only, the indicator tables, and, on a small synthetic county, that
reconciled tables are at least as accurate as the raw ones and that their intervals cover at the nominal
rate within a binomial tolerance."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregation.indicators import INDICATORS, IndicatorParams, evaluate
from aggregation.indicators.income_bands import band_edges
from aggregation.reconcile import NoisyTable, ReconcileError, noise_variance, reconcile
from bench.bench_reconcile import FAMILIES, county_services, measure, params_for, releases
from gateway.dev.seed_groups import synthetic_config
from privacy.vocabulary import histogram_bin_labels

CONFIG = synthetic_config()
TRIALS = 300
CONFIDENCE = 0.95
EDGES = band_edges(CONFIG.bands)


def _villages(values: list[list[float]], scale: float) -> NoisyTable:
    return NoisyTable("village", tuple(f"v{i}" for i in range(len(values))), np.array(values), scale)


def test_least_squares_weighs_each_level_by_its_noise_variance() -> None:
    county = NoisyTable("county", ("county",), np.array([[100.0]]), 3.0)
    villages = _villages([[30.0], [40.0], [20.0]], 1.0)
    levels = reconcile([county, villages], seed=1)
    var_county, var_sum = noise_variance(3.0), 3 * noise_variance(1.0)
    total = (100 / var_county + 90 / var_sum) / (1 / var_county + 1 / var_sum)
    assert 90 < total < 100
    assert levels["county"].linear[0, 0] == pytest.approx(total)
    np.testing.assert_allclose(levels["village"].linear[:, 0], np.array([30, 40, 20]) + (total - 90) / 3)
    assert levels["county"].value[0, 0] == round(total)
    assert levels["village"].value[:, 0].sum() == round(total)


def test_levels_add_up_in_non_negative_whole_numbers() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        codes = NoisyTable("urban_rural", ("111", "210", "other"), rng.normal(5, 8, (3, 4)), 2.0)
        villages = _villages(rng.normal(2, 6, (12, 4)).tolist(), 1.5)
        levels = reconcile([codes, villages], seed=2)
        a, b = levels["urban_rural"].value, levels["village"].value
        assert a.dtype == np.int64 and (a >= 0).all() and (b >= 0).all()
        np.testing.assert_array_equal(a.sum(axis=0), b.sum(axis=0))


def test_a_negative_noisy_cell_is_projected_to_zero_keeping_the_total() -> None:
    county = NoisyTable("county", ("county",), np.array([[12.0]]), 1e-9)
    levels = reconcile([county, _villages([[-5.0], [10.0], [3.0]], 1.0)], seed=1)
    # A noiseless county decides the total; the villages' least-squares non-negative split of 12.
    assert levels["county"].value[0, 0] == 12
    np.testing.assert_array_equal(levels["village"].value[:, 0], [0, 10, 2])


def test_intervals_depend_on_the_public_scales_only() -> None:
    def widths(offset: float) -> np.ndarray:
        county = NoisyTable("county", ("county",), np.array([[400.0 + 4 * offset]]), 4.0)
        est = reconcile([county, _villages([[100.0 + offset]] * 4, 2.0)], seed=5)["village"].estimate()
        return est.high - est.low

    # Far from 0 (no clamping) shifting every value moves the intervals and keeps their widths.
    np.testing.assert_array_equal(widths(0.0), widths(37.0))


def test_pools_add_their_cells_and_refuse_unknown_ones() -> None:
    codes = NoisyTable("urban_rural", ("111", "121", "210"), np.array([[10.0], [20.0], [5.0]]), 1.0)
    level = reconcile([codes, _villages([[20.0], [15.0]], 1.0)], seed=1)["urban_rural"]
    pooled = level.pooled({"urban": ["111", "121"], "rural": ["210"]})
    assert pooled.raw[:, 0].tolist() == [30.0, 5.0]
    assert pooled.value[:, 0].tolist() == [level.value[:2, 0].sum(), level.value[2, 0]]
    # A pool of two cells carries more noise than one cell.
    assert pooled.raw_high[0, 0] - pooled.raw[0, 0] > pooled.raw_high[1, 0] - pooled.raw[1, 0]
    with pytest.raises(ReconcileError, match="not cells"):
        level.pooled({"x": ["999"]})


def test_a_rounding_group_stays_within_one_of_its_least_squares_sum() -> None:
    rng = np.random.default_rng(8)
    cells = tuple(f"c{i}" for i in range(9))
    groups = (cells[:4], cells[4:8])
    for _ in range(50):
        codes = NoisyTable("urban_rural", cells, rng.normal(40, 10, (9, 3)), 2.0, groups=groups)
        villages = _villages(rng.normal(30, 10, (12, 3)).tolist(), 1.5)
        level = reconcile([codes, villages], seed=2)["urban_rural"]
        for g in groups:
            rows = [cells.index(c) for c in g]
            linear, whole = level.linear[rows].sum(axis=0), level.value[rows].sum(axis=0)
            assert np.all(np.abs(whole - linear) < 1.0 + 1e-9)


@pytest.mark.parametrize(
    ("tables", "field"),
    [
        ([], "tables"),
        ([_villages([[1.0, 2.0]], 1.0), NoisyTable("county", ("county",), np.array([[1.0]]), 1.0)], "tables"),
        ([NoisyTable("village", ("a", "a"), np.zeros((2, 1)), 1.0)], "village"),
        ([NoisyTable("village", ("a",), np.zeros((1, 1)), math.inf)], "village"),
        ([NoisyTable("village", ("a", "b"), np.zeros((2, 1)), 1.0, groups=(("a",), ("a", "b")))], "village"),
        ([NoisyTable("village", ("a",), np.zeros((1, 1)), 1.0, groups=(("z",),))], "village"),
    ],
)
def test_tables_that_are_not_one_family_are_refused(tables: list[NoisyTable], field: str) -> None:
    with pytest.raises(ReconcileError) as err:
        reconcile(tables, seed=0)
    assert err.value.field == field


def _histogram(groups: tuple[str, ...], cells: dict[tuple[Any, ...], list[float]], scale: float) -> dict:
    labels = histogram_bin_labels(EDGES)
    return {
        "group_names": list(groups),
        "scales": {"histogram": scale},
        "cells": [
            {"groups": dict(zip(groups, key, strict=True)), "statistic": "histogram", "bin": b, "value": v}
            for key, values in cells.items()
            for b, v in zip(labels, values, strict=True)
        ],
    }


def test_income_bands_carry_raw_and_reconciled_tables_for_every_level() -> None:
    ur, village = CONFIG.urban_rural, CONFIG.village
    by_code = {("111",): [5, 10, 20, 2, 1], ("210",): [8, 6, 4, 0, -2], (None,): [0, 1, -1, 0, 0]}
    by_village = {("v1",): [6, 9, 21, 3, 0], ("v2",): [7, 7, 5, -1, 0], (None,): [0, 0, 0, 0, 1]}
    releases = {
        "by_urban_rural": _histogram((ur,), by_code, 1.0),
        "by_village": _histogram((village,), by_village, 1.0),
    }
    params = IndicatorParams(period_start="2025-01", period_end="2025-12", epsilon=1, analyst="ana")
    template = INDICATORS["income_bands"]
    result = evaluate(template, params, CONFIG, template.queries(params, CONFIG), releases)
    (table,) = result.tables
    assert table.levels == ["county", "area", "urban_rural", "village"]
    cells = {(c.level, c.group, c.column): c for c in table.cells}
    labels = histogram_bin_labels(EDGES)
    assert table.columns == list(labels)
    assert cells[("village", "v2", labels[3])].raw == -1
    assert cells[("area", "urban", labels[0])].raw == 5
    assert cells[("village", "other", labels[4])].raw == 1
    for column in table.columns:
        total = cells[("county", "county", column)].value
        for level in ("urban_rural", "village"):
            assert sum(c.value for c in table.cells if c.level == level and c.column == column) == total
        area = [cells[("area", a, column)].value for a in ("urban", "rural")]
        assert area[0] + area[1] + cells[("urban_rural", "other", column)].value == total
    assert all(c.value >= 0 and c.low <= c.value <= c.high for c in table.cells)
    assert "least squares" in table.method


# --- a small synthetic county ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return county_services(Path(tmp_path_factory.mktemp("reconcile")), 1_500)


def _binomial_floor(n: int, p: float = CONFIDENCE, sds: float = 3.0) -> float:
    """The lowest hit rate that n trials of a p-interval give short of a 3-sd (about 1 in 700) chance."""
    return p - sds * math.sqrt(p * (1 - p) / n)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_reconciled_tables_are_more_accurate_and_still_cover(name: str, county: dict[str, Any]) -> None:
    template, params = INDICATORS[name], params_for(name)
    exact, noisy = releases(template, params, county)
    # The levels partition one population: exact tables already agree, and reconciling keeps them.
    for table in template.tables(params, CONFIG, exact, seed=0):
        assert all(c.value == c.raw and c.low <= c.raw <= c.high for c in table.cells), table.table
    levels = measure(template, params, exact, noisy, trials=TRIALS, seed=11)
    assert {"county", "village"} <= set(levels)
    for level, e in levels.items():
        assert e.reconciled_mse <= e.raw_mse, (level, e.raw_mse, e.reconciled_mse)
        # Averaging over a level's cells varies less than one cell over TRIALS: the one-cell floor holds.
        assert e.coverage >= _binomial_floor(TRIALS), (level, e.coverage)
        assert e.coverage <= 0.995, (level, e.coverage)
    assert levels["county"].reconciled_mse < 0.8 * levels["county"].raw_mse
