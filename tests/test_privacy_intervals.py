"""Intervals: analytic half-widths against OpenDP's accuracy functions, and coverage of simulated intervals.

Coverage tests run the whole pipeline many times with numpy: truth -> add the known noise -> interval from
the noisy values and the public scales only -> does it contain the truth? Seeds are fixed so the tests are
repeatable; the observed rate must be consistent with 95% over that many trials (`binomial.check`), so
intervals that are too narrow, too wide or biased fail. Shares and ratios: tests/test_privacy_inversion.py.
"""

from __future__ import annotations

import inspect
import itertools
import math

import binomial
import numpy as np
import opendp.prelude as dp
import pytest

from privacy import intervals
from privacy.intervals import (
    discrete_laplace_half_width,
    histogram_boundaries,
    laplace_half_width,
    mean_from_noisy,
    quantiles_from_noisy_histogram,
    sample_noise,
)

REPS = 1000


@pytest.mark.parametrize("scale", [0.3, 0.5, 1.0, 2.0, 3.3, 10.0, 123.4, 1000.0, 12345.6, 1e7, 2e9, 2e12])
def test_discrete_half_width_matches_opendp(scale: float) -> None:
    # 2e12: a sum bounded at 1e11 yuan over a small epsilon; the computation must not drift (it once
    # stepped for minutes there).
    dp.enable_features("contrib")
    expected = math.floor(dp.discrete_laplacian_scale_to_accuracy(scale, 0.05))
    assert discrete_laplace_half_width(scale) == expected


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0, 1000.0])
def test_continuous_half_width_matches_opendp(scale: float) -> None:
    dp.enable_features("contrib")
    assert laplace_half_width(scale) == pytest.approx(dp.laplacian_scale_to_accuracy(scale, 0.05))


@pytest.mark.parametrize("scale", [0.7, 2.0, 25.0])
def test_discrete_half_width_is_the_smallest_that_covers(scale: float) -> None:
    q = math.exp(-1.0 / scale)
    k = discrete_laplace_half_width(scale)

    def tail(k: int) -> float:
        return 2 * q ** (k + 1) / (1 + q)  # P(|X| > k)

    assert tail(k) <= 0.05 < tail(k - 1) if k > 0 else tail(0) <= 0.05
    assert discrete_laplace_half_width(0.0) == 0


def test_sampled_discrete_laplace_has_the_known_distribution() -> None:
    rng = np.random.default_rng(7)
    scale = 3.0
    draws = sample_noise(rng, scale, 400_000)
    q = math.exp(-1 / scale)
    assert np.all(draws == np.round(draws))
    assert draws.var() == pytest.approx(2 * q / (1 - q) ** 2, rel=0.02)
    assert np.mean(draws == 0) == pytest.approx((1 - q) / (1 + q), abs=0.005)
    assert np.mean(np.abs(draws) > discrete_laplace_half_width(scale)) <= 0.05 + 0.002


def _coverage(truth: float, low: np.ndarray, high: np.ndarray) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


def test_mean_interval_covers_and_is_clipped() -> None:
    rng = np.random.default_rng(12)
    true_sum, true_count = 120 * 640.0, 120.0
    sum_scale, count_scale = 2000.0, 2.0
    noisy_sum = true_sum + sample_noise(rng, sum_scale, REPS)
    noisy_count = true_count + sample_noise(rng, count_scale, REPS)
    est = mean_from_noisy(noisy_sum, sum_scale, noisy_count, count_scale, lower=0, upper=1000, rng=rng)
    binomial.check(round(_coverage(640.0, est.low, est.high) * REPS), REPS, what="mean")
    assert np.all((est.low >= 0) & (est.high <= 1000))
    tiny = mean_from_noisy([50.0], sum_scale, [0.0], count_scale, lower=0, upper=1000, rng=rng)
    assert math.isnan(tiny.value[0]) and (tiny.low[0], tiny.high[0]) == (0.0, 1000.0)


@pytest.mark.parametrize(("scale", "max_width", "max_error"), [(4.0, 150, 25), (40.0, 800, 150)])
def test_quantile_intervals_cover_the_true_quantile(scale: float, max_width: float, max_error: float) -> None:
    rng = np.random.default_rng(16)
    edges = list(range(0, 1001, 50))
    values = rng.gamma(4.0, 80.0, 1500).clip(0, 1000).astype(int)
    # Bins: underflow (< 0), [0,50), ..., [950,1000), overflow (>= 1000).
    truth = np.array(
        [np.sum(values < edges[0])]
        + [np.sum((values >= a) & (values < b)) for a, b in itertools.pairwise(edges)]
        + [np.sum(values >= edges[-1])],
        dtype=float,
    )
    reps = 300
    noisy = truth + sample_noise(rng, scale, (reps, truth.size))
    probs = (0.1, 0.5, 0.9)
    est = quantiles_from_noisy_histogram(
        noisy, scale, edges=edges, lower=0, upper=1000, probs=probs, draws=1000, rng=rng
    )
    true_q = np.quantile(values, probs)
    # The estimand: the quantile of the exact histogram, linear inside a bin (as the estimate reads it);
    # it differs from the exact quantile by less than a bin (the documented binning bias).
    bounds = histogram_boundaries(edges, 0, 1000)
    binned_q = quantiles_from_noisy_histogram(
        truth[None, :], 1e-9, edges=edges, lower=0, upper=1000, probs=probs, draws=10, rng=rng
    ).value[0]
    assert np.all(np.abs(binned_q - true_q) <= np.diff(bounds).max())
    for j in range(len(probs)):
        coverage = _coverage(float(binned_q[j]), est.low[:, j], est.high[:, j])
        binomial.check(round(coverage * reps), reps, what=f"P{round(probs[j] * 100)}")
        # Informative, not [lower, upper]: a few bins wide, and the estimate is close to the truth.
        assert float(np.median(est.high[:, j] - est.low[:, j])) <= max_width
        defined = ~np.isnan(est.value[:, j])
        assert np.all(
            (est.low[defined, j] <= est.value[defined, j]) & (est.value[defined, j] <= est.high[defined, j])
        )
        assert float(np.median(np.abs(est.value[defined, j] - true_q[j]))) <= max_error


def test_quantiles_of_an_empty_histogram_are_undefined() -> None:
    est = quantiles_from_noisy_histogram(
        [[-3.0, -1.0, 0.0]], 1.0, edges=[10, 20], lower=0, upper=30, probs=[0.5], rng=np.random.default_rng(1)
    )
    assert math.isnan(est.value[0, 0]) and (est.low[0, 0], est.high[0, 0]) == (0.0, 30.0)


def test_interval_functions_accept_only_noisy_values_and_public_parameters() -> None:
    """No function takes a true value: every value parameter is named noisy_*; the rest are public."""
    public = {
        "scale",
        "confidence",
        "noise",
        "draws",
        "rng",
        "size",
        "lower",
        "upper",
        "edges",
        "probs",
    }
    for name in intervals.__all__:
        func = getattr(intervals, name)
        if not inspect.isfunction(func):
            continue
        for param in inspect.signature(func).parameters:
            assert "true" not in param and "truth" not in param, (name, param)
            assert param.startswith("noisy_") or param.endswith("_scale") or param in public, (name, param)
