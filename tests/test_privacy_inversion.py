"""Intervals by inverting the known noise: coverage at the nominal rate at any signal, small noisy cells
included, with value and interval clamped alike and undefined ratios reported as such.

Each test runs the pipeline many times with numpy: truth -> add the known noise -> interval from the noisy
values and the public scales only -> does it contain the truth? The observed rate must be consistent with
the nominal one over that many trials (`binomial.check`): not below (too narrow), not above (too wide).
"""

from __future__ import annotations

import inspect
import math

import binomial
import numpy as np
import pytest

from privacy import inversion
from privacy.intervals import discrete_laplace_half_width, mean_from_noisy, sample_noise
from privacy.inversion import clamped, noise_half_width, pooled_sum, ratio_by_inversion, share_by_inversion

TRIALS = 2000


def _noisy(rng: np.random.Generator, truth: float, scale: float, cells: int = 1) -> np.ndarray:
    """``TRIALS`` noisy totals of ``cells`` released cells adding up to ``truth``."""
    return truth + sample_noise(rng, scale, (TRIALS, cells)).sum(axis=1)


def _hits(truth: float, low: np.ndarray, high: np.ndarray) -> int:
    return int(np.sum((low <= truth + 1e-9) & (truth - 1e-9 <= high)))


def _discrete_coverage(scale: float, k: int) -> float:
    q = math.exp(-1 / scale)
    return 1 - 2 * q ** (k + 1) / (1 + q)


@pytest.mark.parametrize("truth", [0, 3, 30, 400])
def test_a_count_clamped_at_0_keeps_its_exact_coverage_and_agrees_with_its_interval(truth: int) -> None:
    rng = np.random.default_rng(truth)
    scale = 20.0
    k = discrete_laplace_half_width(scale)
    noisy = _noisy(rng, truth, scale)
    value, low, high = clamped(noisy, k, lower=0.0)
    assert np.all((low >= 0) & (low <= value) & (value <= high))  # never 0 shown beside [-139, 5]
    binomial.check(
        _hits(truth, low, high),
        TRIALS,
        _discrete_coverage(scale, k),
        what=f"count {truth}",
        at_bound=truth == 0,
    )
    # A collapsed 0 – 0 happens only when the noise is below -(truth + k): within the 5% the rate allows.
    collapsed = np.mean(high == 0)
    assert collapsed <= 0.025 + 0.01


@pytest.mark.parametrize(("truth", "cells", "scale"), [(12, 4, 10.0), (0, 5, 50.0), (900, 3, 4.0)])
def test_a_pooled_count_covers_at_the_nominal_rate(truth: int, cells: int, scale: float) -> None:
    rng = np.random.default_rng(cells)
    noisy = truth / cells + sample_noise(rng, scale, (TRIALS, cells))  # cells adding up to the truth
    value, low, high = pooled_sum(noisy, scale)
    assert np.all((low >= 0) & (low <= value) & (value <= high))
    binomial.check(_hits(truth, low, high), TRIALS, what=f"pooled {truth}", at_bound=truth == 0)
    # The half-width is that of the summed noise: about sqrt(cells) times one cell's, never cells times.
    k = noise_half_width((scale,) * cells)
    assert k < cells * discrete_laplace_half_width(scale)


SHARE_CASES = [
    # part, rest, scale, cells in the part, cells in the rest, at a bound
    (300, 1700, 4.0, 1, 1, False),  # a county-wide share: narrow
    (2000, 6000, 5.0, 3, 2, False),
    (100, 300, 20.0, 2, 3, False),  # a village's band share: noisy
    (100, 300, 50.0, 2, 3, False),  # a key group in a village: noisier
    (60, 20, 30.0, 2, 3, False),  # a small noisy cell, where simulating around the noisy values covered 0.67
    (0, 40, 30.0, 2, 3, True),  # a true share of 0
    (40, 0, 30.0, 2, 3, True),  # a true share of 1
    (5, 5, 50.0, 1, 1, True),  # the noise swamps everything: the shown share is often 0 or 1
]


@pytest.mark.parametrize(("part", "rest", "scale", "m_part", "m_rest", "at_bound"), SHARE_CASES)
def test_a_share_covers_at_the_nominal_rate_in_small_noisy_cells(
    part: int, rest: int, scale: float, m_part: int, m_rest: int, at_bound: bool
) -> None:
    rng = np.random.default_rng(part * 7 + rest)
    x = part + sample_noise(rng, scale, (TRIALS, m_part)).sum(axis=1)
    y = rest + sample_noise(rng, scale, (TRIALS, m_rest)).sum(axis=1)
    est = share_by_inversion(x, (scale,) * m_part, y, (scale,) * m_rest)
    truth = part / (part + rest)
    hits = _hits(truth, est.low, est.high)
    binomial.check(hits, TRIALS, what=f"share {part}/{part + rest}", at_bound=at_bound)
    assert np.all((est.low >= 0) & (est.low <= est.high) & (est.high <= 1))
    defined = ~est.undefined
    assert np.all((est.low[defined] <= est.value[defined]) & (est.value[defined] <= est.high[defined]))
    assert np.array_equal(est.undefined, (np.maximum(x, 0) + np.maximum(y, 0)) <= 0)


def test_a_share_is_informative_where_the_signal_is_high_and_honest_where_it_is_not() -> None:
    rng = np.random.default_rng(3)
    sharp = share_by_inversion(300 + sample_noise(rng, 4.0, 50), 4.0, 1700 + sample_noise(rng, 4.0, 50), 4.0)
    assert float(np.median(sharp.high - sharp.low)) < 0.02
    swamped = share_by_inversion(5 + sample_noise(rng, 50.0, 50), 50.0, 5 + sample_noise(rng, 50.0, 50), 50.0)
    assert float(np.median(swamped.high - swamped.low)) > 0.8


@pytest.mark.parametrize(
    ("numerator", "denominator", "num_scale", "den_scale", "cells"),
    [
        (50_000.0, 400.0, 300.0, 3.0, 1),  # income over households of a village
        (1e8, 20_000.0, 1.7e7, 130.0, 4),  # rural income over rural members, four urban-rural codes
        (2e7, 2_000.0, 1.7e7, 130.0, 4),  # a small county: wide, yet bounded
    ],
)
def test_a_ratio_covers_at_the_nominal_rate(
    numerator: float, denominator: float, num_scale: float, den_scale: float, cells: int
) -> None:
    rng = np.random.default_rng(int(denominator))
    x = _noisy(rng, numerator, num_scale, cells)
    y = _noisy(rng, denominator, den_scale, cells)
    est = ratio_by_inversion(x, (num_scale,) * cells, y, (den_scale,) * cells)
    defined = ~est.undefined
    assert defined.mean() > 0.99
    # An undefined ratio claims nothing: its confidence set is unbounded, so it contains the truth.
    hits = _hits(numerator / denominator, est.low[defined], est.high[defined]) + int((~defined).sum())
    binomial.check(hits, TRIALS, what=f"ratio {numerator}/{denominator}")
    assert np.all((est.low[defined] <= est.value[defined]) & (est.value[defined] <= est.high[defined]))


def test_a_ratio_whose_denominator_is_not_clearly_positive_is_undefined() -> None:
    """The 1e13 of a small county: rural per-capita income over a members sum that the noise swamps."""
    k = noise_half_width(130.0)
    est = ratio_by_inversion([5e6, 5e6, 5e6], 1.7e7, [k * 0.5, -3 * k, 5 * k], 130.0)
    assert est.undefined.tolist() == [True, True, False]
    assert math.isnan(est.value[0]) and math.isnan(est.low[0]) and math.isnan(est.high[0])
    assert math.isfinite(est.low[2]) and math.isfinite(est.high[2])


def test_a_mean_of_few_units_covers_and_stays_within_its_bounds() -> None:
    rng = np.random.default_rng(12)
    for count, sum_scale, count_scale in ((120, 2000.0, 2.0), (8, 2000.0, 2.0)):
        noisy_sum = _noisy(rng, count * 640.0, sum_scale)
        noisy_count = _noisy(rng, count, count_scale)
        est = mean_from_noisy(noisy_sum, sum_scale, noisy_count, count_scale, lower=0, upper=1000)
        assert np.all((est.low >= 0) & (est.high <= 1000))
        binomial.check(_hits(640.0, est.low, est.high), TRIALS, what=f"mean of {count}")


def test_inversion_functions_accept_only_noisy_values_and_public_parameters() -> None:
    """No function takes a true value: every value parameter is named noisy_*; the rest are public."""
    public = {"half_width", "lower", "upper", "noise", "confidence", "scales"}
    for name in inversion.__all__:
        func = getattr(inversion, name)
        if not inspect.isfunction(func):
            continue
        for param in inspect.signature(func).parameters:
            assert "true" not in param and "truth" not in param, (name, param)
            ok = param.startswith("noisy_") or param.endswith(("_scale", "_scales")) or param in public
            assert ok, (name, param)
