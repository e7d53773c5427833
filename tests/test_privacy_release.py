"""OpenDP releases: public cells, the privacy-map check, the epsilon split, accuracy and serialisation."""

from __future__ import annotations

import itertools
import json
import math
from decimal import Decimal

import binomial
import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from privacy.errors import PrivacyMapExceeded, ReleaseAlreadyRun, ReleaseInputError, SpecError
from privacy.intervals import discrete_laplace_half_width
from privacy.neighbours import Neighbouring, frame_distance
from privacy.release import prepare_release
from privacy.vocabulary import (
    FRAME_ROWS_LIMIT,
    LORENZ_RESOLUTION,
    MAX_SUM_BOUND,
    OTHER,
    Count,
    GroupDomain,
    Histogram,
    Lorenz,
    Mean,
    Quantiles,
    ReleaseCell,
    ReleaseResult,
    ReleaseSpec,
    Sum,
)

VILLAGES = GroupDomain(name="village", values=("a", "b", "c", "d"))
URBAN = GroupDomain(name="urban", values=("1", "2"))
HUGE = Decimal("1000000")  # noise far below one unit: integer outputs are exact, for checking the plumbing


def spec(**kwargs: object) -> ReleaseSpec:
    options: dict[str, object] = {
        "groups": (VILLAGES, URBAN),
        "measure": "income",
        "lower": 0,
        "upper": 1000,
        "statistics": (Count(),),
        "epsilon": Decimal("1"),
    }
    options.update(kwargs)
    return ReleaseSpec.model_validate(options)


def frame(n: int = 600, seed: int = 0) -> pl.DataFrame:
    """Villages a and b only, plus a value outside the code list and nulls; incomes partly outside bounds."""
    rng = np.random.default_rng(seed)
    village = rng.choice(np.array(["a", "b", "zz", ""], dtype=object), n, p=[0.45, 0.35, 0.1, 0.1])
    return pl.DataFrame(
        {
            "village": [None if v == "" else v for v in village],
            "urban": rng.choice(["1", "2"], n).tolist(),
            "income": rng.integers(-100, 1200, n),
        },
        schema={"village": pl.String, "urban": pl.String, "income": pl.Int64},
    )


def cells_of(result: ReleaseResult, statistic: str) -> list[ReleaseCell]:
    return [c for c in result.cells if c.statistic == statistic]


def key(cell: ReleaseCell) -> tuple[str | None, str | None]:
    return (cell.groups["village"], cell.groups["urban"])


ALL_CELLS = set(itertools.product(("a", "b", "c", "d", None), ("1", "2", None)))


def test_every_cell_of_the_public_domain_is_released_including_empty_ones() -> None:
    statistics = (
        Count(),
        Sum(),
        Mean(),
        Histogram(edges=(0, 500)),
        Quantiles(probs=(0.5, 0.9), edges=(0, 250, 500)),
    )
    result = prepare_release(spec(statistics=statistics)).run(frame())
    for statistic in ("count", "sum", "mean"):
        cells = cells_of(result, statistic)
        assert len(cells) == len(ALL_CELLS) == 15
        assert {key(c) for c in cells} == ALL_CELLS  # c, d and the other bucket included
    histogram = cells_of(result, "histogram")
    assert {(key(c), c.bin) for c in histogram} == {
        (k, b) for k in ALL_CELLS for b in ("<0", "[0,500)", ">=500")
    }
    quantiles = cells_of(result, "quantiles")
    assert {(key(c), c.prob) for c in quantiles} == {(k, p) for k in ALL_CELLS for p in (0.5, 0.9)}
    for cell in cells_of(result, "count") + cells_of(result, "sum") + histogram:
        assert isinstance(cell.value, int) and cell.low is not None and cell.high is not None
        assert cell.low <= cell.display <= cell.high  # value and interval are clamped alike


def test_out_of_domain_values_and_nulls_land_in_the_public_other_bucket() -> None:
    data = frame()
    result = prepare_release(spec(statistics=(Count(), Sum()), epsilon=HUGE)).run(data)
    mapped = data.with_columns(
        pl.when(pl.col("village").is_in(["a", "b", "c", "d"])).then(pl.col("village")).alias("village"),
        pl.col("income").clip(0, 1000),
    )
    truth = {
        (row["village"], row["urban"]): (row["n"], row["s"])
        for row in mapped.group_by("village", "urban")
        .agg(pl.len().alias("n"), pl.col("income").sum().alias("s"))
        .to_dicts()
    }
    for cell in cells_of(result, "count"):
        assert cell.value == truth.get(key(cell), (0, 0))[0]
    for cell in cells_of(result, "sum"):
        assert cell.value == truth.get(key(cell), (0, 0))[1]  # the measure is clamped to [lower, upper] too
    assert any(key(c)[0] is OTHER and c.value for c in cells_of(result, "count"))


def test_the_privacy_map_refuses_a_scale_too_small_for_epsilon() -> None:
    s = spec(statistics=(Count(),), epsilon=Decimal("1"))
    with pytest.raises(PrivacyMapExceeded) as info:
        prepare_release(s, scale_overrides={"count": 0.5})
    assert info.value.allowed == Decimal("1")
    assert info.value.mapped == Decimal("2")
    assert "epsilon=2" in str(info.value)
    assert prepare_release(s, scale_overrides={"count": 1.0}).epsilon == Decimal("1")
    with pytest.raises(SpecError):
        prepare_release(s, scale_overrides={"sum": 1.0})


def test_unit_multiplicity_doubles_the_scale_needed() -> None:
    statistics = (Count(), Sum(), Histogram(edges=(100, 500)))
    single = prepare_release(spec(statistics=statistics))
    double = prepare_release(spec(statistics=statistics, unit_multiplicity=2))
    assert single.scales.keys() == double.scales.keys() == {"count", "sum", "histogram"}
    for name, scale in single.scales.items():
        assert double.scales[name] == pytest.approx(2 * scale, rel=1e-12)
    # The person-level scales are not enough once a household can bring two rows.
    with pytest.raises(PrivacyMapExceeded) as info:
        prepare_release(spec(statistics=statistics, unit_multiplicity=2), scale_overrides=single.scales)
    assert info.value.d_in == 2
    assert info.value.mapped == pytest.approx(Decimal(2), rel=Decimal("1e-6"))


def test_epsilon_is_split_equally_and_mean_reuses_count_and_sum() -> None:
    prepared = prepare_release(spec(statistics=(Count(), Sum(), Mean()), lower=-500, upper=100))
    assert {k: q.share for k, q in prepared.quantities.items()} == {
        "count": Decimal("0.5"),
        "sum": Decimal("0.5"),
    }
    assert prepared.scales["count"] == pytest.approx(2.0)
    assert prepared.scales["sum"] == pytest.approx(1000.0)  # sensitivity max(|-500|, |100|) / 0.5
    assert Decimal("0.999999") < prepared.epsilon <= Decimal("1")

    shared = prepare_release(
        spec(statistics=(Histogram(edges=(0, 500)), Quantiles(probs=(0.5,), edges=(0, 500))))
    )
    assert set(shared.quantities) == {"histogram"}
    separate = prepare_release(
        spec(statistics=(Histogram(edges=(0, 500)), Quantiles(probs=(0.5,), edges=(0, 250, 500))))
    )
    assert set(separate.quantities) == {"histogram", "quantile_histogram"}
    assert all(q.share == Decimal("0.5") for q in separate.quantities.values())


def test_result_round_trips_through_json() -> None:
    statistics = (
        Count(),
        Sum(),
        Mean(),
        Histogram(edges=(0, 500)),
        Quantiles(probs=(0.5,), edges=(0, 250, 500)),
    )
    result = prepare_release(spec(statistics=statistics)).run(frame())
    text = json.dumps(result.to_json_dict(), allow_nan=False)
    back = ReleaseResult.from_json_dict(json.loads(text))
    assert back == result
    data = json.loads(text)
    assert data["epsilon"] == str(result.epsilon) and data["epsilon_allowed"] == "1"
    assert set(data["methods"]) == {"count", "sum", "mean", "histogram", "quantiles"}
    assert set(data["scales"]) == {"count", "sum", "histogram", "quantile_histogram"}


def test_counts_and_sums_fall_in_their_intervals_at_the_stated_rate() -> None:
    # 301 x 3 = 903 cells; the rate must be consistent with 95% over that many (binomial.check; OpenDP's
    # noise cannot be seeded, hence Z_UNSEEDED). Cells with a true 0 (the "other" keys) show intervals
    # clamped at 0, which may cover up to 97.5% there.
    villages = GroupDomain(name="village", values=tuple(f"v{i:03d}" for i in range(300)))
    rng = np.random.default_rng(42)
    n = 30_000
    data = pl.DataFrame(
        {
            "village": rng.choice(list(villages.values), n, p=np.arange(1, 301) / 45150),
            "urban": rng.choice(["1", "2"], n),
            "income": rng.integers(0, 200, n),
        }
    )
    s = spec(groups=(villages, URBAN), upper=200, statistics=(Count(), Sum()), epsilon=Decimal("0.2"))
    prepared = prepare_release(s)
    result = prepared.run(data)
    truth = {
        (r["village"], r["urban"]): (r["n"], r["s"])
        for r in data.group_by("village", "urban")
        .agg(pl.len().alias("n"), pl.col("income").sum().alias("s"))
        .to_dicts()
    }
    for statistic, index in (("count", 0), ("sum", 1)):
        cells = cells_of(result, statistic)
        assert len(cells) == 301 * 3
        scale = prepared.scales[statistic]
        errors = np.asarray([c.value - truth.get(key(c), (0, 0))[index] for c in cells], dtype=np.float64)
        covered = np.mean([c.low <= truth.get(key(c), (0, 0))[index] <= c.high for c in cells])
        hits = round(covered * len(cells))
        binomial.check(hits, len(cells), what=statistic, at_bound=True, z=binomial.Z_UNSEEDED)
        # The interval is the analytic one, not inflated: close to scale * ln(20).
        width = discrete_laplace_half_width(scale)
        # (Cells whose raw interval reaches below 0 show it clamped at 0, like their display value.)
        assert {c.high - c.low for c in cells if c.low > 0} == {2 * width}  # type: ignore[operator]
        assert 0.95 * scale * math.log(20) <= width <= 1.05 * scale * math.log(20) + 1
        # Noise was really added, at the stated scale (mean |error| of Laplace noise is about the scale).
        assert np.mean(errors != 0) > 0.5
        assert 0.7 * scale <= float(np.mean(np.abs(errors))) <= 1.3 * scale


def test_means_and_quantiles_are_sensible() -> None:
    rng = np.random.default_rng(5)
    n = 12_000
    data = pl.DataFrame(
        {
            "village": rng.choice(["a", "b", "c"], n).tolist(),
            "urban": rng.choice(["1", "2"], n).tolist(),
            "income": rng.gamma(3.0, 100.0, n).clip(0, 999).astype(int),
        }
    )
    edges = tuple(range(0, 1000, 50))
    s = spec(statistics=(Mean(), Quantiles(probs=(0.25, 0.5, 0.75), edges=edges)), epsilon=Decimal("2"))
    result = prepare_release(s).run(data)
    truth = data.group_by("village", "urban").agg(
        pl.col("income").mean().alias("mean"),
        *(pl.col("income").quantile(p).alias(str(p)) for p in (0.25, 0.5, 0.75)),
    )
    expected = {(r["village"], r["urban"]): r for r in truth.to_dicts()}
    # Coverage rates are tested in test_privacy_intervals with fixed seeds; with few cells and OpenDP's
    # unseeded noise, check closeness against the stated interval instead: Laplace noise passes three
    # interval widths (about 18 scales) with probability near e^-18, so this cannot fail by chance.
    for cell in cells_of(result, "mean"):
        assert cell.low is not None and cell.high is not None and 0 <= cell.low <= cell.high <= 1000
        if key(cell)[0] in ("d", None) or key(cell)[1] is None:
            continue
        true_mean = expected[key(cell)]["mean"]
        assert cell.value == pytest.approx(true_mean, rel=0.05)
        assert abs(cell.value - true_mean) <= 3 * (cell.high - cell.low)
        assert cell.high - cell.low < 0.1 * true_mean
    for cell in cells_of(result, "quantiles"):
        assert cell.low is not None and cell.high is not None and 0 <= cell.low <= cell.high <= 1000
        if key(cell)[0] in ("d", None) or key(cell)[1] is None:
            continue
        true_q = expected[key(cell)][str(cell.prob)]
        assert cell.value == pytest.approx(true_q, abs=60)  # within about one bin of 50
        assert cell.high - cell.low <= 150
        assert cell.low - 50 <= true_q <= cell.high + 50


def test_display_values_are_clipped_post_processing() -> None:
    # Many empty cells (only a and b are populated), so some noisy counts are surely negative.
    villages = GroupDomain(name="village", values=("a", "b", *(f"e{i}" for i in range(60))))
    s = spec(groups=(villages, URBAN), statistics=(Count(), Sum()), epsilon=Decimal("0.05"))
    result = prepare_release(s).run(frame(200))
    for cell in cells_of(result, "count") + cells_of(result, "sum"):
        assert cell.display == max(cell.value, 0)  # type: ignore[type-var]
    assert any(c.value < 0 for c in cells_of(result, "count"))  # type: ignore[operator]


def test_a_prepared_release_draws_noise_once() -> None:
    prepared = prepare_release(spec())
    prepared.run(frame())
    with pytest.raises(ReleaseAlreadyRun):
        prepared.run(frame())


def test_frames_that_do_not_fit_are_refused_before_any_noise() -> None:
    prepared = prepare_release(spec())
    with pytest.raises(ReleaseInputError, match="integer"):
        prepared.run(frame(100).with_columns(pl.col("income").cast(pl.Float64)))
    with pytest.raises(ReleaseInputError, match="lacks"):
        prepared.run(frame(100).drop("urban"))
    prepared.run(frame(100))  # refusals drew no noise, so the one run is still available


def test_no_groups_releases_one_cell() -> None:
    s = spec(groups=(), statistics=(Count(), Histogram(edges=(0, 500))), epsilon=HUGE)
    data = frame()
    result = prepare_release(s).run(data)
    assert [c.value for c in cells_of(result, "count")] == [data.height]
    clamped = data["income"].clip(0, 1000)
    assert [c.value for c in cells_of(result, "histogram")] == [
        0,
        int((clamped < 500).sum()),
        int((clamped >= 500).sum()),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"statistics": (Sum(),), "measure": None},
        {"statistics": (Count(), Count())},
        {"statistics": ()},
        {"epsilon": Decimal("0")},
        {"lower": 10, "upper": 10},
        {"statistics": (Histogram(edges=(0, 2000)),)},
        {"groups": (VILLAGES, VILLAGES)},
        {"measure": "village"},
        {"unit_multiplicity": 0},
        {"statistics": (Sum(),), "upper": MAX_SUM_BOUND + 1},
        {"statistics": (Mean(),), "lower": -MAX_SUM_BOUND - 1},
        {"neighbouring": "next_door"},
        {"statistics": (Lorenz(edges=(0, 2000)),)},
        {"statistics": (Lorenz(edges=(-5, 500)),)},
        {"statistics": (Lorenz(edges=(0, 500)),), "measure": None},
    ],
)
def test_invalid_specs_are_refused_at_construction(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        spec(**bad)


def test_statistic_parameters_are_validated() -> None:
    with pytest.raises(ValidationError):
        Histogram(edges=(5, 5))
    with pytest.raises(ValidationError):
        Quantiles(probs=(0.5, 1.0), edges=(1, 2))
    with pytest.raises(ValidationError):
        Lorenz(edges=(5, 3))
    with pytest.raises(ValidationError):
        GroupDomain(name="v", values=("a", "a"))
    with pytest.raises(ValidationError):
        GroupDomain(name="v", values=())


R = LORENZ_RESOLUTION


def test_lorenz_privacy_map_is_exact_and_the_scales_are_as_documented() -> None:
    alone = prepare_release(spec(statistics=(Lorenz(edges=(0, 500)),)))
    assert list(alone.quantities) == ["lorenz_count", "lorenz_sum"]
    assert all(q.share == Decimal("0.5") for q in alone.quantities.values())
    assert alone.quantities["lorenz_sum"].sensitivity == R
    assert alone.scales["lorenz_count"] == pytest.approx(2.0, rel=1e-8)
    assert alone.scales["lorenz_sum"] == pytest.approx(2.0 * R, rel=1e-8)  # m * R / share
    assert Decimal("0.999999") < alone.epsilon <= Decimal("1")

    third = Decimal(1) / 3
    both = prepare_release(spec(statistics=(Lorenz(edges=(0, 500)), Count()), unit_multiplicity=2))
    assert list(both.quantities) == ["count", "lorenz_count", "lorenz_sum"]  # fixed order, lorenz last
    assert all(q.share == third for q in both.quantities.values())
    assert both.scales["count"] == pytest.approx(2 / float(third), rel=1e-8)
    assert both.scales["lorenz_count"] == pytest.approx(2 / float(third), rel=1e-8)
    assert both.scales["lorenz_sum"] == pytest.approx(2 * R / float(third), rel=1e-8)
    assert Decimal("0.999999") < both.epsilon <= Decimal("1")

    # OpenDP's own map agrees with sensitivity R per row: a sum scale a little below m * R / share is refused.
    tight = {"lorenz_sum": 2.0 * R * (1 - 1e-6)}
    with pytest.raises(PrivacyMapExceeded):
        prepare_release(spec(statistics=(Lorenz(edges=(0, 500)),)), scale_overrides=tight)
    exact = prepare_release(
        spec(statistics=(Lorenz(edges=(0, 500)),)), scale_overrides={"lorenz_sum": 4.0 * R}
    )
    assert exact.epsilon == pytest.approx(Decimal("0.75"), rel=Decimal("1e-8"))  # 0.5 + 1 * R / (4 R)


def test_lorenz_cells_are_released_for_every_cell_and_bin_with_width_sized_intervals() -> None:
    edges = (0, 100, 400, 1000)  # the first and last bins have width 0 once clamped to [0, 1000]
    result = prepare_release(spec(statistics=(Lorenz(edges=edges), Count()))).run(frame())
    labels = ("<0", "[0,100)", "[100,400)", "[400,1000)", ">=1000")
    widths = dict(zip(labels, (0, 100, 300, 600, 0), strict=True))
    for statistic in ("lorenz", "lorenz_sum"):
        cells = cells_of(result, statistic)
        assert {(key(c), c.bin) for c in cells} == {(k, b) for k in ALL_CELLS for b in labels}
        for cell in cells:
            assert cell.low is not None and cell.high is not None and cell.display is not None
            assert 0 <= cell.low <= cell.display <= cell.high
    for cell in cells_of(result, "lorenz"):
        assert isinstance(cell.value, int) and cell.display == max(cell.value, 0)
    scale = result.scales["lorenz_sum"]
    half = discrete_laplace_half_width(scale)
    for cell in cells_of(result, "lorenz_sum"):
        assert isinstance(cell.value, float) and cell.display == max(cell.value, 0.0)
        assert cell.bin is not None and cell.high is not None and cell.low is not None
        if cell.low > 0:
            assert cell.high - cell.low == pytest.approx(2 * half * widths[cell.bin] / R)
        if widths[cell.bin] == 0:
            assert cell.value == cell.low == cell.high == 0.0
    assert {"lorenz", "lorenz_sum", "count"} <= set(result.methods)
    assert "proportional to the bin's width" in result.methods["lorenz_sum"]
    assert result.lorenz_resolution == R
    back = ReleaseResult.from_json_dict(json.loads(json.dumps(result.to_json_dict(), allow_nan=False)))
    assert back == result


def test_noise_free_lorenz_release_has_the_exact_counts_and_offsets() -> None:
    edges = (0, 250, 500)
    data = frame(900, seed=3)
    s = spec(groups=(), statistics=(Lorenz(edges=edges),), epsilon=Decimal(10**9))
    result = prepare_release(s).run(data)
    x = data["income"].clip(0, 1000).to_numpy().astype(np.float64)
    bounds = np.asarray([0, 0, 250, 500, 1000], dtype=np.float64)
    j = np.searchsorted(np.asarray(edges), x, side="right")
    width = np.diff(bounds)[j]
    t = np.where(width > 0, np.rint((x - bounds[j]) * R / np.where(width > 0, width, 1)), 0)
    counts = [c.value for c in cells_of(result, "lorenz")]
    assert counts == np.bincount(j, minlength=4).tolist()
    assert counts[0] == 0 and counts[3] == int(np.sum(x >= 500))  # incomes above 1000 clamped into the last
    sums = np.asarray([c.value for c in cells_of(result, "lorenz_sum")], dtype=np.float64)
    per_unit = np.diff(bounds) / R
    exact_t = np.bincount(j, weights=t, minlength=4)
    assert np.allclose(sums, exact_t * per_unit, rtol=1e-12, atol=0)
    # In yuan, off by at most half a resolution step per unit.
    offsets = np.bincount(j, weights=x - bounds[j], minlength=4)
    assert np.all(np.abs(sums - offsets) <= np.bincount(j, minlength=4) * per_unit / 2 + 1e-9)


def test_lorenz_sums_carry_width_sized_noise_at_the_stated_rate() -> None:
    villages = GroupDomain(name="village", values=tuple(f"v{i:03d}" for i in range(300)))
    rng = np.random.default_rng(43)
    n = 30_000
    data = pl.DataFrame(
        {
            "village": rng.choice(list(villages.values), n),
            "urban": rng.choice(["1", "2"], n),
            "income": rng.integers(0, 1000, n),
        }
    )
    edges = (0, 100, 1000)  # widths 0, 100, 900, 0
    s = spec(groups=(villages, URBAN), statistics=(Lorenz(edges=edges),), epsilon=Decimal("0.5"))
    result = prepare_release(s).run(data)
    bounds = {"[0,100)": 0, "[100,1000)": 100}
    truth = {
        (r["village"], r["urban"], r["bin"]): r["offset"]
        for r in data.with_columns(
            pl.when(pl.col("income") < 100)
            .then(pl.lit("[0,100)"))
            .otherwise(pl.lit("[100,1000)"))
            .alias("bin")
        )
        .group_by("village", "urban", "bin")
        .agg((pl.col("income") - pl.col("bin").replace_strict(bounds)).sum().alias("offset"))
        .to_dicts()
    }
    scale = result.scales["lorenz_sum"]
    for label, width in (("[0,100)", 100), ("[100,1000)", 900)):
        cells = [c for c in cells_of(result, "lorenz_sum") if c.bin == label]
        assert len(cells) == 301 * 3
        true = [truth.get((*key(c), label), 0) for c in cells]
        errors = np.asarray([c.value for c in cells], dtype=np.float64) - np.asarray(true, dtype=np.float64)
        covered = np.mean([c.low <= v <= c.high for c, v in zip(cells, true, strict=True)])  # type: ignore[operator]
        hits = round(covered * len(cells))
        binomial.check(hits, len(cells), what=label, at_bound=True, z=binomial.Z_UNSEEDED)
        # The yuan noise scale is scale * w / R: 4 * 100 = 400 yuan for the narrow bin, 3600 for the wide one.
        yuan_scale = scale * width / R
        assert 0.8 * yuan_scale <= float(np.mean(np.abs(errors))) <= 1.2 * yuan_scale


def test_the_change_relation_maps_at_twice_the_distance_and_says_so() -> None:
    stats = (Count(), Sum(), Lorenz(edges=(0, 500)))
    add_remove = prepare_release(spec(statistics=stats, unit_multiplicity=2))
    change = prepare_release(spec(statistics=stats, unit_multiplicity=2, neighbouring="change_household"))
    assert change.spec.d_in == 2 * add_remove.spec.d_in == 4
    for name, scale in add_remove.scales.items():
        assert change.scales[name] == pytest.approx(2 * scale, rel=1e-12)
    # OpenDP's own map, not ours: the change measurement at the add/remove distance spends half.
    assert change.epsilon <= Decimal(1) and add_remove.epsilon <= Decimal(1)
    result = change.run(frame())
    assert result.neighbouring is Neighbouring.CHANGE_HOUSEHOLD and result.d_in == 4
    assert "between neighbouring frames" in result.methods["count"]
    stored = json.loads(json.dumps(result.to_json_dict()))
    assert stored["neighbouring"] == "change_household" and stored["d_in"] == 4
    # A change-relation release built with the add/remove scales would overspend: refused before data.
    with pytest.raises(PrivacyMapExceeded):
        prepare_release(
            spec(statistics=(Count(),), neighbouring="change_household"), scale_overrides={"count": 1.0}
        )


def test_results_stored_before_the_relation_read_as_add_remove() -> None:
    doc = prepare_release(spec(unit_multiplicity=3)).run(frame()).to_json_dict()
    del doc["neighbouring"], doc["d_in"]
    old = ReleaseResult.from_json_dict(doc)
    assert old.neighbouring is Neighbouring.ADD_REMOVE_HOUSEHOLD and old.d_in == 3


def test_the_margin_is_the_frame_type_limit_never_the_data() -> None:
    assert pl.get_index_type() == pl.UInt32 and FRAME_ROWS_LIMIT == 2**32 - 1
    assert MAX_SUM_BOUND * FRAME_ROWS_LIMIT <= 2**63 - 1 < (MAX_SUM_BOUND + 1) * FRAME_ROWS_LIMIT
    # The widest summable bounds build; any frame length runs (there is no length check left to fail).
    wide = spec(statistics=(Sum(),), lower=-MAX_SUM_BOUND, upper=MAX_SUM_BOUND, epsilon=HUGE)
    data = frame(5_000).with_columns(pl.col("income") * 1_000_000)
    result = prepare_release(wide).run(data)
    assert sum(c.value for c in cells_of(result, "sum")) == pytest.approx(data["income"].sum(), abs=10**6)


def test_frame_distance_per_relation() -> None:
    assert frame_distance(Neighbouring.ADD_REMOVE_HOUSEHOLD, 3) == 3
    assert frame_distance(Neighbouring.CHANGE_HOUSEHOLD, 3) == 6
    with pytest.raises(ValueError, match="at least one row"):
        frame_distance(Neighbouring.ADD_REMOVE_HOUSEHOLD, 0)
