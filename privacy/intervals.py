"""Error bars for released figures, computed from noisy values and public noise scales only.

Every function here is post-processing of differentially private output: it takes *noisy* values (the
parameters are named ``noisy_*`` on purpose) and the public noise scales that OpenDP used, never a true
value, so calling it costs no privacy budget. Two methods:

- **Direct releases** (a noisy count, sum or histogram bin): the analytic half-width of the noise itself.
  For OpenDP's integer ("discrete") Laplace with scale ``b``, ``P(|X| > k) = 2 q^(k+1) / (1 + q)`` with
  ``q = exp(-1/b)``; the half-width is the smallest integer ``k`` that brings this to ``1 - confidence`` or
  below, so ``noisy ± k`` covers the true value with probability at least ``confidence``. For continuous
  Laplace it is ``b ln(1 / (1 - confidence))``.
- **Derived figures** (shares, ratios of sums, means, ratios of ratios, histogram shares and quantiles): a
  parametric simulation. The known noise distribution is drawn ``draws`` times and added around the noisy
  inputs, the figure is recomputed for every draw, and the interval is the central ``confidence`` percentile
  range of the draws. It approximates the sampling distribution of the figure (the noisy input plays the
  part of the truth) and is accurate when the noise is small against the values; near zero it widens, which
  is the honest answer. Where a figure must lie in a known range (a share in [0, 1], a mean of values
  clamped to [lower, upper]) each draw is clipped to it.

Quantiles come from a noisy histogram over public edges. The noisy CDF at each edge is the raw noisy
cumulative count over the raw noisy total (unbiased; clipping bins at 0 first would bias tail quantiles
outwards), made monotone by a running maximum; the point estimate inverts it with linear interpolation inside
the bin. The interval inverts a pointwise simulated CDF band, ``[F_hi^-1(p), F_lo^-1(p)]``, linear inside
a bin like the estimate: it targets the within-bin-linear quantile of the clamped values (the difference
to the exact quantile, at most a bin width, is the documented binning bias).
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
    "ratio_from_noisy",
    "ratio_of_ratios_from_noisy",
    "sample_noise",
    "share_from_noisy",
    "shares_from_noisy_histogram",
]

CONFIDENCE = 0.95
DEFAULT_DRAWS = 2000

# Keeps one simulation batch (draws x cells x bins) around 32 MB of float64.
_MAX_BATCH_ELEMENTS = 4_000_000

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
    needed = scale * math.log(2.0 / (alpha * (1.0 + q)))
    k = max(math.ceil(needed) - 1, 0)
    # Guard the ceiling against floating-point error at exact integers: step until the bound holds.
    while 2.0 * q ** (k + 1) / (1.0 + q) > alpha:
        k += 1
    while k > 0 and 2.0 * q**k / (1.0 + q) <= alpha:
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


def _percentiles(draws: FloatArray, confidence: float) -> tuple[FloatArray, FloatArray]:
    alpha = _alpha(confidence)
    low, high = np.percentile(draws, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)], axis=0)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def _ratio(numerator: FloatArray, denominator: FloatArray, floor: float | None) -> FloatArray:
    if floor is not None:
        denominator = np.maximum(denominator, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(numerator / denominator, dtype=np.float64)


def ratio_from_noisy(
    noisy_numerator: npt.ArrayLike,
    numerator_scale: float | npt.ArrayLike,
    noisy_denominator: npt.ArrayLike,
    denominator_scale: float | npt.ArrayLike,
    *,
    denominator_floor: float | None = 1.0,
    clip: tuple[float, float] | None = None,
    noise: NoiseKind = "discrete_laplace",
    confidence: float = CONFIDENCE,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> SimulatedEstimate:
    """Ratio of two independently noised releases (a ratio of sums, a per-capita figure) with an interval.

    Denominators below ``denominator_floor`` (default 1, right for counts) are raised to it in the point
    estimate and in every draw, so the ratio stays defined; pass None to divide as is. ``clip`` bounds every
    draw and the point estimate to a known admissible range.
    """
    num = np.asarray(noisy_numerator, dtype=np.float64)
    den = np.asarray(noisy_denominator, dtype=np.float64)
    shape = np.broadcast_shapes(num.shape, den.shape)
    generator = _rng(rng)
    value = _ratio(np.broadcast_to(num, shape), np.broadcast_to(den, shape), denominator_floor)
    lows, highs = [], []
    flat_num = np.broadcast_to(num, shape).reshape(-1)
    flat_den = np.broadcast_to(den, shape).reshape(-1)
    num_scales = np.broadcast_to(np.asarray(numerator_scale, dtype=np.float64), shape).reshape(-1)
    den_scales = np.broadcast_to(np.asarray(denominator_scale, dtype=np.float64), shape).reshape(-1)
    batch = max(1, _MAX_BATCH_ELEMENTS // max(draws, 1))
    for start in range(0, flat_num.size, batch):
        stop = min(start + batch, flat_num.size)
        size = (draws, stop - start)
        sim_num = flat_num[start:stop] + sample_noise(generator, num_scales[start:stop], size, noise)
        sim_den = flat_den[start:stop] + sample_noise(generator, den_scales[start:stop], size, noise)
        sim = _ratio(sim_num, sim_den, denominator_floor)
        if clip is not None:
            sim = np.clip(sim, clip[0], clip[1])
        low, high = _percentiles(sim, confidence)
        lows.append(low)
        highs.append(high)
    low_all = np.concatenate(lows).reshape(shape) if lows else np.empty(shape)
    high_all = np.concatenate(highs).reshape(shape) if highs else np.empty(shape)
    if clip is not None:
        value = np.clip(value, clip[0], clip[1])
    return SimulatedEstimate(value=value, low=low_all, high=high_all, confidence=confidence)


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

    The value is NaN where the noisy count is below 1 (nothing can be said; the interval is then
    [lower, upper]); otherwise it is clipped to [lower, upper] like every draw.
    """
    estimate = ratio_from_noisy(
        noisy_sum,
        sum_scale,
        noisy_count,
        count_scale,
        denominator_floor=1.0,
        clip=(float(lower), float(upper)),
        noise=noise,
        confidence=confidence,
        draws=draws,
        rng=rng,
    )
    count = np.broadcast_to(np.asarray(noisy_count, dtype=np.float64), estimate.value.shape)
    undefined = count < 1.0
    value = np.where(undefined, np.nan, estimate.value)
    low = np.where(undefined, float(lower), estimate.low)
    high = np.where(undefined, float(upper), estimate.high)
    return SimulatedEstimate(value=value, low=low, high=high, confidence=confidence)


def share_from_noisy(
    noisy_part: npt.ArrayLike,
    part_scale: float | npt.ArrayLike,
    noisy_total: npt.ArrayLike,
    total_scale: float | npt.ArrayLike,
    *,
    noise: NoiseKind = "discrete_laplace",
    confidence: float = CONFIDENCE,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> SimulatedEstimate:
    """Share = noisy count in a cell / noisy count of the whole, from two separate releases, with an interval.

    Negative noisy counts are clipped to 0, the total is floored at 1 and each draw is clipped to [0, 1].
    """
    part = np.maximum(np.asarray(noisy_part, dtype=np.float64), 0.0)
    return ratio_from_noisy(
        part,
        part_scale,
        noisy_total,
        total_scale,
        denominator_floor=1.0,
        clip=(0.0, 1.0),
        noise=noise,
        confidence=confidence,
        draws=draws,
        rng=rng,
    )


def ratio_of_ratios_from_noisy(
    noisy_a: npt.ArrayLike,
    a_scale: float | npt.ArrayLike,
    noisy_b: npt.ArrayLike,
    b_scale: float | npt.ArrayLike,
    noisy_c: npt.ArrayLike,
    c_scale: float | npt.ArrayLike,
    noisy_d: npt.ArrayLike,
    d_scale: float | npt.ArrayLike,
    *,
    denominator_floor: float | None = 1.0,
    noise: NoiseKind = "discrete_laplace",
    confidence: float = CONFIDENCE,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> SimulatedEstimate:
    """``(a / b) / (c / d)`` of four independently noised releases (e.g. a relative poverty ratio).

    ``b``, ``d`` and the inner ratio ``c / d`` are floored at ``denominator_floor`` in every draw.
    """
    arrays = [np.asarray(x, dtype=np.float64) for x in (noisy_a, noisy_b, noisy_c, noisy_d)]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    a, b, c, d = (np.broadcast_to(x, shape).reshape(-1) for x in arrays)
    scales = [
        np.broadcast_to(np.asarray(s, dtype=np.float64), shape).reshape(-1)
        for s in (a_scale, b_scale, c_scale, d_scale)
    ]
    generator = _rng(rng)

    def figure(va: FloatArray, vb: FloatArray, vc: FloatArray, vd: FloatArray) -> FloatArray:
        return _ratio(_ratio(va, vb, denominator_floor), _ratio(vc, vd, denominator_floor), None)

    value = figure(a, b, c, d)
    lows, highs = [], []
    batch = max(1, _MAX_BATCH_ELEMENTS // max(draws, 1))
    for start in range(0, a.size, batch):
        stop = min(start + batch, a.size)
        size = (draws, stop - start)
        sims = [
            base[start:stop] + sample_noise(generator, scale[start:stop], size, noise)
            for base, scale in zip((a, b, c, d), scales, strict=True)
        ]
        low, high = _percentiles(figure(*sims), confidence)
        lows.append(low)
        highs.append(high)
    return SimulatedEstimate(
        value=value.reshape(shape),
        low=np.concatenate(lows).reshape(shape) if lows else np.empty(shape),
        high=np.concatenate(highs).reshape(shape) if highs else np.empty(shape),
        confidence=confidence,
    )


def _histogram_shares(counts: FloatArray) -> FloatArray:
    clipped = np.maximum(counts, 0.0)
    total = np.maximum(clipped.sum(axis=-1, keepdims=True), 1.0)
    return np.asarray(clipped / total, dtype=np.float64)


def shares_from_noisy_histogram(
    noisy_counts: npt.ArrayLike,
    scale: float,
    *,
    noise: NoiseKind = "discrete_laplace",
    confidence: float = CONFIDENCE,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> SimulatedEstimate:
    """Share of each bin in a noisy histogram (last axis = bins), with intervals.

    Bins are clipped at 0 and divided by their clipped total (floored at 1), in the estimate and in every
    draw, so the shares of one histogram add up to 1 (or 0 when all bins are non-positive).
    """
    counts = np.asarray(noisy_counts, dtype=np.float64)
    if counts.ndim == 0:
        raise ValueError("noisy_counts needs a bins axis")
    generator = _rng(rng)
    value = _histogram_shares(counts)
    flat = counts.reshape(-1, counts.shape[-1])
    lows, highs = [], []
    batch = max(1, _MAX_BATCH_ELEMENTS // max(draws * flat.shape[1], 1))
    for start in range(0, flat.shape[0], batch):
        block = flat[start : start + batch]
        sim = block + sample_noise(generator, scale, (draws, *block.shape), noise)
        low, high = _percentiles(_histogram_shares(sim), confidence)
        lows.append(low)
        highs.append(high)
    return SimulatedEstimate(
        value=value,
        low=np.concatenate(lows).reshape(counts.shape),
        high=np.concatenate(highs).reshape(counts.shape),
        confidence=confidence,
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
    return SimulatedEstimate(value=value, low=low, high=high, confidence=confidence)
