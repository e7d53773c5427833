"""Error bars for released figures, computed from noisy values and public noise scales only.

Every function here is post-processing of differentially private output: it takes *noisy* values (the
parameters are named ``noisy_*`` on purpose) and the public noise scales that OpenDP used, never a true
value, so calling it costs no privacy budget. Two methods:

- **Direct releases** (a noisy count, sum or histogram bin): the analytic half-width of the noise itself.
  For OpenDP's integer ("discrete") Laplace with scale ``b``, ``P(|X| > k) = 2 q^(k+1) / (1 + q)`` with
  ``q = exp(-1/b)``; the half-width is the smallest integer ``k`` that brings this to ``1 - confidence`` or
  below, so ``noisy ± k`` covers the true value with probability at least ``confidence``. For continuous
  Laplace it is ``b ln(1 / (1 - confidence))``.
- **Derived figures**: shares, ratios and means invert the known noise exactly
  (:mod:`privacy.inversion`, which builds on this module's noise primitives); figures of many cells at
  once (the Gini, quintile shares and the Lorenz curve in :mod:`aggregation.distribution`) use a parametric
  simulation: the known noise is drawn around the noisy inputs, the figure recomputed for every draw, and
  the interval is the central ``confidence`` range of the draws.

Quantiles come from a noisy histogram over public edges. The noisy CDF at each edge is the raw noisy
cumulative count over the raw noisy total (unbiased; clipping bins at 0 first would bias tail quantiles
outwards), made monotone by a running maximum; the point estimate inverts it with linear interpolation inside
the bin. The interval inverts a pointwise simulated CDF band, ``[F_hi^-1(p), F_lo^-1(p)]``, linear inside
a bin like the estimate: it targets the within-bin-linear quantile of the clamped values (the difference
to the exact quantile, at most a bin width, is the documented binning bias). Quantiles never fall as ``p``
rises, and their bands are made to rise too by widening only (no quantile loses coverage).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "CONFIDENCE",
    "DEFAULT_DRAWS",
    "NoiseKind",
    "SimulatedEstimate",
    "discrete_laplace_half_width",
    "half_width",
    "histogram_boundaries",
    "laplace_half_width",
    "mean_from_noisy",
    "quantiles_from_noisy_histogram",
    "sample_noise",
]

CONFIDENCE = 0.95
DEFAULT_DRAWS = 2000

NoiseKind = Literal["discrete_laplace", "laplace"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SimulatedEstimate:
    """Point estimates and percentile intervals, one per input cell (arrays of the broadcast shape).

    ``value`` is computed from the noisy inputs alone; ``low``/``high`` bound the central ``confidence``
    range of the simulated figure. NaN marks a figure that is undefined (e.g. a quantile of an all-zero
    histogram); its interval is then the whole admissible range where one is known.
    """

    value: FloatArray
    low: FloatArray
    high: FloatArray
    confidence: float


def _alpha(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    return 1.0 - confidence


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0.0:
        raise ValueError(f"a noise scale must be finite and >= 0, got {scale}")
    return scale


def laplace_half_width(scale: float, confidence: float = CONFIDENCE) -> float:
    """Half-width ``w`` with ``P(|X| > w) = 1 - confidence`` for continuous Laplace noise of ``scale``."""
    return _check_scale(scale) * math.log(1.0 / _alpha(confidence))


def discrete_laplace_half_width(scale: float, confidence: float = CONFIDENCE) -> int:
    """Smallest integer ``k`` with ``P(|X| > k) <= 1 - confidence`` for integer Laplace noise of ``scale``.

    This is the noise OpenDP adds to integer counts and sums under pure DP; it agrees with
    ``floor(opendp.accuracy.discrete_laplacian_scale_to_accuracy(scale, alpha))``.
    """
    scale = _check_scale(scale)
    alpha = _alpha(confidence)
    if scale == 0.0:
        return 0
    q = math.exp(-1.0 / scale)
    # P(|X| > k) = 2 q^(k+1) / (1 + q)  <=  alpha   <=>   k + 1 >= scale * ln(2 / (alpha (1 + q)))
    log_alpha = math.log(alpha)
    offset = math.log(2.0) - math.log1p(q)

    def log_tail(k: int) -> float:
        # In logs with ln q = -1/scale exactly: q ** k drifts at large scales (a sum's bound in yuan
        # over a small epsilon), where the guard steps below would then run for ever.
        return offset - (k + 1) / scale

    k = max(math.ceil(scale * (offset - log_alpha)) - 1, 0)
    # Guard the ceiling against floating-point error at exact integers: step until the bound holds.
    while log_tail(k) > log_alpha:
        k += 1
    while k > 0 and log_tail(k - 1) <= log_alpha:
        k -= 1
    return k


def half_width(scale: float, noise: NoiseKind = "discrete_laplace", confidence: float = CONFIDENCE) -> float:
    """Analytic half-width for a direct release with the given noise distribution."""
    if noise == "discrete_laplace":
        return float(discrete_laplace_half_width(scale, confidence))
    return laplace_half_width(scale, confidence)


def sample_noise(
    rng: np.random.Generator,
    scale: float | npt.ArrayLike,
    size: int | tuple[int, ...],
    noise: NoiseKind = "discrete_laplace",
) -> FloatArray:
    """Draw noise of the known distribution for simulation (never for a release: releases use OpenDP).

    ``scale`` broadcasts against ``size``. Integer Laplace is the difference of two geometric variables with
    success probability ``1 - exp(-1/scale)``.
    """
    scales = np.broadcast_to(np.asarray(scale, dtype=np.float64), size)
    if np.any(~np.isfinite(scales)) or np.any(scales < 0):
        raise ValueError("noise scales must be finite and >= 0")
    if noise == "laplace":
        return rng.laplace(0.0, 1.0, size) * scales
    out = np.zeros(size, dtype=np.float64)
    positive = scales > 0
    if np.any(positive):
        p = -np.expm1(-1.0 / scales[positive])
        out[positive] = (rng.geometric(p) - rng.geometric(p)).astype(np.float64)
    return out


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def mean_from_noisy(
    noisy_sum: npt.ArrayLike,
    sum_scale: float | npt.ArrayLike,
    noisy_count: npt.ArrayLike,
    count_scale: float | npt.ArrayLike,
    *,
    lower: float,
    upper: float,
    noise: NoiseKind = "discrete_laplace",
    confidence: float = CONFIDENCE,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> SimulatedEstimate:
    """Mean = noisy sum / noisy count of values clamped to [lower, upper], with an interval.

    The interval inverts the known noise of both (:func:`privacy.inversion.ratio_by_inversion`): every
    mean ``m`` in [lower, upper] for which ``sum - m count`` is within the noise's range, so it holds when
    the count is small too. The value is NaN where the noisy count is below 1 (the interval is then
    [lower, upper]); otherwise it is clipped to [lower, upper]. ``draws`` and ``rng`` are unused (kept for
    callers); the inversion's own simulation of the noise is seeded by the scales.
    """
    # The inversion builds on this module's noise primitives, so it is imported where it is used.
    from privacy.inversion import ratio_by_inversion

    del draws, rng
    sums, counts = np.broadcast_arrays(
        np.asarray(noisy_sum, dtype=np.float64), np.asarray(noisy_count, dtype=np.float64)
    )
    sum_scales = np.broadcast_to(np.asarray(sum_scale, dtype=np.float64), sums.shape).reshape(-1)
    count_scales = np.broadcast_to(np.asarray(count_scale, dtype=np.float64), sums.shape).reshape(-1)
    value, low, high = (np.empty(sums.size) for _ in range(3))
    flat_sums, flat_counts = sums.reshape(-1), counts.reshape(-1)
    # Cells of one release share their scales: one inversion per distinct pair.
    pairs = np.stack([sum_scales, count_scales], axis=1)
    for s_scale, c_scale in np.unique(pairs, axis=0) if pairs.size else []:
        at = (sum_scales == s_scale) & (count_scales == c_scale)
        est = ratio_by_inversion(
            flat_sums[at],
            float(s_scale),
            flat_counts[at],
            float(c_scale),
            lower=float(lower),
            upper=float(upper),
            noise=noise,
            confidence=confidence,
        )
        value[at], low[at], high[at] = est.value, est.low, est.high
    shape = sums.shape
    return SimulatedEstimate(
        value=value.reshape(shape), low=low.reshape(shape), high=high.reshape(shape), confidence=confidence
    )


def histogram_boundaries(edges: Sequence[int], lower: int, upper: int) -> FloatArray:
    """Boundaries of the bins (-inf, e0), [e0, e1), ..., [ek, +inf) once the values are clamped to
    [lower, upper]: ``[lower, e0, ..., ek, upper]``."""
    if not edges:
        raise ValueError("a histogram needs at least one edge")
    if list(edges) != sorted(set(edges)):
        raise ValueError("histogram edges must be strictly increasing")
    if not lower <= edges[0] or not edges[-1] <= upper:
        raise ValueError(f"histogram edges must lie within [lower, upper] = [{lower}, {upper}]")
    return np.asarray([lower, *edges, upper], dtype=np.float64)


def _first_true(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """Index of the first True along the last axis; the last index where there is none."""
    first = np.argmax(mask, axis=-1)
    return np.where(mask.any(axis=-1), first, mask.shape[-1] - 1)


def _invert_cdf(counts: FloatArray, bounds: FloatArray, probs: FloatArray) -> FloatArray:
    """Interpolated quantiles of noisy histograms; counts (n, B), bounds (B+1,), probs (P,) -> (n, P).

    The CDF at each bin's right boundary is the raw noisy cumulative count over the raw noisy total: raw
    sums are unbiased, whereas clipping every bin at 0 first adds the positive part of the noise of every
    empty tail bin and pushes upper quantiles outwards. A running maximum makes it monotone.
    """
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1:]
    cdf = np.clip(np.maximum.accumulate(cum / np.maximum(total, 1.0), axis=1), 0.0, 1.0)
    bins = _first_true(cdf[:, None, :] >= probs[None, :, None])  # (n, P)
    at = np.take_along_axis(cdf, bins, axis=1)
    before = np.where(bins > 0, np.take_along_axis(cdf, np.maximum(bins - 1, 0), axis=1), 0.0)
    step = at - before
    frac = np.clip(
        np.where(step > 0, (probs[None, :] - before) / np.where(step > 0, step, 1.0), 0.0), 0.0, 1.0
    )
    out = bounds[bins] + frac * (bounds[bins + 1] - bounds[bins])
    return np.where(total >= 1.0, out, np.nan)


def _band_crossing(excess: FloatArray, at_lower: FloatArray, bounds: FloatArray) -> FloatArray:
    """Where a CDF band reaches p: the first bin whose right boundary has ``excess <= 0``, linear inside it.

    ``excess`` (n, P, B) is ``p N - C_i - z_i`` at each bin's right boundary; ``at_lower`` (n, P) is its
    value at the lower bound (``p N``: nothing lies below it, so no noise either). Interpolating inside the
    bin, as the point estimate does, keeps the ends off the bin edges: the interval targets the same
    within-bin-linear quantile as the estimate, instead of adding a whole bin on each side.
    """
    first = _first_true(excess <= 0.0)
    at = np.take_along_axis(excess, first[..., None], axis=-1)[..., 0]
    previous = np.take_along_axis(excess, np.maximum(first - 1, 0)[..., None], axis=-1)[..., 0]
    before = np.where(first > 0, previous, at_lower)
    step = before - at
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.where(step > 0, before / step, 1.0), 0.0, 1.0)
    frac = np.where(at > 0, 1.0, frac)  # the band never reaches p inside the bounds: the upper bound
    return np.asarray(bounds[first] + frac * (bounds[first + 1] - bounds[first]), dtype=np.float64)


def quantiles_from_noisy_histogram(
    noisy_counts: npt.ArrayLike,
    scale: float,
    *,
    edges: Sequence[int],
    lower: int,
    upper: int,
    probs: Sequence[float],
    noise: NoiseKind = "discrete_laplace",
    confidence: float = CONFIDENCE,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> SimulatedEstimate:
    """Quantiles of values clamped to [lower, upper] from noisy histograms over public ``edges``.

    ``noisy_counts`` has shape (cells, len(edges) + 1): the underflow bin, the inner bins, the overflow bin.
    Returns arrays of shape (cells, len(probs)). A cell whose noisy total is below 1 gets NaN and the
    interval [lower, upper]. See the module docstring for the method.

    The CDF band needs no per-cell simulation. With noisy cumulative count ``C_i`` at bin ``i``'s right
    boundary, noisy total ``N`` and simulated noise ``S_i`` (bins up to ``i``) and ``R_i`` (bins after it),
    a draw's CDF reaches ``p`` at that boundary iff ``Z_i = (1 - p) S_i - p R_i >= p N - C_i``. ``Z`` does not
    depend on the cell, so its percentiles are simulated once for all cells: the upper band reaches ``p``
    where ``p N - C_i`` is at most the upper percentile of ``Z_i``, the lower band where it is at most the
    lower percentile.
    """
    counts = np.atleast_2d(np.asarray(noisy_counts, dtype=np.float64))
    bounds = histogram_boundaries(edges, lower, upper)
    n_bins = bounds.size - 1
    if counts.ndim != 2 or counts.shape[1] != n_bins:
        raise ValueError(f"expected {n_bins} bins per histogram, got shape {counts.shape}")
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or np.any((p <= 0) | (p >= 1)):
        raise ValueError("quantile probabilities must lie strictly between 0 and 1")
    alpha = _alpha(confidence)
    value = _invert_cdf(counts, bounds, p)

    noise_draws = sample_noise(_rng(rng), scale, (draws, n_bins), noise)
    up_to = np.cumsum(noise_draws, axis=1)  # S_i
    after = up_to[:, -1:] - up_to  # R_i
    z = (1.0 - p)[None, :, None] * up_to[:, None, :] - p[None, :, None] * after[:, None, :]  # (D, P, B)
    z_lo, z_hi = np.percentile(z, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)], axis=0)  # (P, B)

    cum = np.cumsum(counts, axis=1)
    gap = p[None, :, None] * cum[:, None, -1:] - cum[:, None, :]  # p N - C_i, (n, P, B)
    # Lower end: where even the upper CDF band reaches p; upper end: where the lower band does.
    p_total = p[None, :] * cum[:, -1:]  # p N, the excess at the lower bound
    low = _band_crossing(gap - z_hi[None, :, :], p_total, bounds)
    high = _band_crossing(gap - z_lo[None, :, :], p_total, bounds)
    undefined = np.isnan(value)
    low = np.where(undefined, float(lower), np.fmin(low, value))
    high = np.where(undefined, float(upper), np.fmax(high, value))
    # Quantiles never fall as p rises (the estimate inverts a monotone CDF); the bands are made to rise
    # too, by widening only: each low end drops to the smallest after it, each high end to the largest
    # before it, in the order of p.
    order = np.argsort(p)
    low[:, order] = np.minimum.accumulate(low[:, order][:, ::-1], axis=1)[:, ::-1]
    high[:, order] = np.maximum.accumulate(high[:, order], axis=1)
    return SimulatedEstimate(value=value, low=low, high=high, confidence=confidence)
