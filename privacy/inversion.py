"""Confidence intervals by inverting the known noise distributions: exact at any signal, never a guess.

Post-processing of differentially private output only: every function takes *noisy* values and the
public noise scales OpenDP used (each released cell carries independent integer Laplace noise of a public
scale), never a true value. The noise of a released cell does not depend on the data, so it is a pivot:

- **Linear figures** (a released count or sum, or a pool of several cells added up): ``noisy ± k`` with
  ``k`` the ``confidence`` quantile of ``|noise|`` covers the truth with probability ``confidence`` whatever
  the truth is. A figure that cannot be negative shows ``max(noisy, 0)`` and the interval
  ``[max(noisy - k, 0), max(noisy + k, 0)]``: clamping removes only impossible values, so the coverage is
  unchanged and value and interval always agree (never ``0`` beside ``[-139, 5]``).
- **Ratios and shares** of two independent noisy totals ``X`` and ``Y`` (per-capita income ``X / Y``, a
  share ``X / (X + Y)``): a Fieller-type inversion. The true ratio is ``r`` exactly when ``X - r Y = 0``,
  and then ``x - r y`` is pure noise of a known distribution. The interval is every ``r`` for which
  ``|x - r y|`` is within that noise's ``confidence`` quantile: it covers at the nominal rate at any
  signal, widens by itself where the noise swamps the values, and is unbounded exactly when the
  denominator's own interval reaches 0: such a ratio is reported as undefined, never as 1e13 from a floor.

The set is computed in normalised coordinates ``u = x / k_x``, ``v = y / k_y`` (``k`` each total's
half-width) on the angle ``t`` of the line through the origin that the truth ``(X / k_x, Y / k_y) ∝
(cos t, sin t)`` lies on: ``t`` is accepted when ``|u sin t - v cos t| <= Q(t)``, ``Q(t)`` the
``confidence`` quantile of ``|E_x sin t - E_y cos t|`` for the normalised noises. ``Q`` depends on the
public scales only; it is simulated once per noise specification on a fine grid (common random numbers,
a fixed seed) and cached, so a table of hundreds of villages costs one simulation. Ratio ``= (k_x / k_y)
cot t``; share ``= k_x cos t / (k_x cos t + k_y sin t)`` on ``t`` in ``[0, pi / 2]``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privacy.intervals import CONFIDENCE, NoiseKind, discrete_laplace_half_width, sample_noise

__all__ = [
    "DENOMINATOR_NOT_POSITIVE",
    "InvertedEstimate",
    "clamped",
    "noise_half_width",
    "pooled_sum",
    "ratio_by_inversion",
    "share_by_inversion",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DENOMINATOR_NOT_POSITIVE = (
    "undefined: the denominator's 95% interval reaches 0, so the data cannot tell this ratio from infinity"
)

_GRID = 257  # angles on [0, pi]; Q is smooth, so linear interpolation between them is exact enough
_PIVOT_DRAWS = 20_000  # Monte Carlo error of a coverage of 0.95 at this size: about 0.0015
_HALF_WIDTH_DRAWS = 200_000
_BISECTIONS = 48


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def _scales(scales: float | Sequence[float]) -> tuple[float, ...]:
    out = (float(scales),) if isinstance(scales, int | float) else tuple(float(s) for s in scales)
    if not out or any(not math.isfinite(s) or s < 0 for s in out):
        raise ValueError(f"noise scales must be a non-empty list of finite numbers >= 0, got {scales!r}")
    return tuple(sorted(out))


@functools.lru_cache(maxsize=256)
def _half_width(scales: tuple[float, ...], noise: NoiseKind, confidence: float) -> float:
    if len(scales) == 1 and noise == "discrete_laplace":
        return float(discrete_laplace_half_width(scales[0], confidence))
    if len(scales) == 1:
        return scales[0] * math.log(1.0 / (1.0 - confidence))
    rng = np.random.default_rng(_seed("half-width", scales, noise, confidence))
    total = np.zeros(_HALF_WIDTH_DRAWS)
    for s in scales:
        total += sample_noise(rng, s, _HALF_WIDTH_DRAWS, noise)
    # The lattice of integer noise: the smallest attained value that reaches the level (never below it).
    if noise == "discrete_laplace":
        return float(np.quantile(np.abs(total), confidence, method="higher"))
    return float(np.quantile(np.abs(total), confidence))


def noise_half_width(
    scales: float | Sequence[float], *, noise: NoiseKind = "discrete_laplace", confidence: float = CONFIDENCE
) -> float:
    """``k`` with ``P(|noise| <= k) >= confidence`` for the sum of independent cells of these scales.

    One integer-Laplace cell: the analytic smallest integer. Several: the quantile of 200,000 simulated
    sums of the noise alone (a fixed seed per specification, so it is reproducible).
    """
    return _half_width(_scales(scales), noise, confidence)


def clamped(
    noisy_value: npt.ArrayLike,
    half_width: float | npt.ArrayLike,
    *,
    lower: float = -math.inf,
    upper: float = math.inf,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Display value and interval of a linear figure whose truth lies in ``[lower, upper]``.

    Value and both ends are clamped to the admissible range alike: the truth lies in
    ``[noisy - k, noisy + k]`` exactly when it lies in the clamped interval, so the coverage is that of
    the raw interval and the shown value always lies inside the shown interval.
    """
    x = np.asarray(noisy_value, dtype=np.float64)
    k = np.asarray(half_width, dtype=np.float64)
    return np.clip(x, lower, upper), np.clip(x - k, lower, upper), np.clip(x + k, lower, upper)


def pooled_sum(
    noisy_cells: npt.ArrayLike,
    cell_scale: float,
    *,
    lower: float = 0.0,
    noise: NoiseKind = "discrete_laplace",
    confidence: float = CONFIDENCE,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """A count pooled from raw noisy cells (last axis), clamped at ``lower``, with its exact interval.

    Raw cells add up without bias (clipping each cell first would add the positive part of every empty
    cell's noise); only the pooled figure is clamped.
    """
    cells = np.asarray(noisy_cells, dtype=np.float64)
    k = noise_half_width((cell_scale,) * cells.shape[-1], noise=noise, confidence=confidence)
    return clamped(cells.sum(axis=-1), k, lower=lower)


@dataclass(frozen=True)
class InvertedEstimate:
    """Point values and intervals; ``undefined`` marks ratios whose denominator is not clearly positive
    (value, low and high are NaN there; see :data:`DENOMINATOR_NOT_POSITIVE`)."""

    value: FloatArray
    low: FloatArray
    high: FloatArray
    undefined: BoolArray
    confidence: float


@functools.lru_cache(maxsize=256)
def _pivot_quantiles(
    x_scales: tuple[float, ...], y_scales: tuple[float, ...], noise: NoiseKind, confidence: float
) -> tuple[FloatArray, FloatArray, float, float]:
    """Angles on [0, pi], Q at each, and the two totals' half-widths (the normalisation)."""
    rng = np.random.default_rng(_seed("pivot", x_scales, y_scales, noise, confidence))
    rank = min(math.ceil(confidence * _PIVOT_DRAWS) - 1, _PIVOT_DRAWS - 1)

    def normalised(scales: tuple[float, ...]) -> tuple[FloatArray, float]:
        draws = np.asarray(sum(sample_noise(rng, s, _PIVOT_DRAWS, noise) for s in scales), dtype=np.float64)
        # One cell: the analytic half-width; several: the quantile of these very draws.
        k = (
            _half_width(scales, noise, confidence)
            if len(scales) == 1
            else np.partition(np.abs(draws), rank)[rank]
        )
        k = max(float(k), 1e-12)
        return draws / k, k

    ex, kx = normalised(x_scales)
    ey, ky = normalised(y_scales)
    grid = np.linspace(0.0, math.pi, _GRID)
    q = np.empty(_GRID)
    for start in range(0, _GRID, 64):
        t = grid[start : start + 64, None]
        pivot = np.abs(ex * np.sin(t) - ey * np.cos(t))
        q[start : start + 64] = np.partition(pivot, rank, axis=1)[:, rank]
    # At t = 0 and pi the pivot is the denominator's noise alone: its quantile is 1 by the normalisation.
    return grid, q, kx, ky


def _accepted_angles(
    u: FloatArray, v: FloatArray, a: FloatArray, b: FloatArray, grid: FloatArray, q: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Ends of the accepted angles in [a, b] around the noisy point's angle, per cell (vectorised)."""

    def g(t: FloatArray) -> FloatArray:
        return np.asarray(np.abs(u * np.sin(t) - v * np.cos(t)) - np.interp(t, grid, q), dtype=np.float64)

    anchor = np.clip(np.arctan2(v, u), a, b)
    on_grid = (grid[None, :] >= a[:, None]) & (grid[None, :] <= b[:, None])
    g_grid = np.abs(u[:, None] * np.sin(grid) - v[:, None] * np.cos(grid)) - q[None, :]
    g_grid = np.where(on_grid, g_grid, np.inf)
    # The data may reject the clamped point itself (e.g. both totals strongly negative): start from the
    # most plausible admissible angle instead; if none is accepted the interval is that single point.
    rejected = g(anchor) > 0
    best = grid[np.argmin(g_grid, axis=1)]
    anchor = np.where(rejected & (g_grid.min(axis=1) <= 0), best, anchor)
    accepted_anchor = g(anchor) <= 0

    def end(direction: int) -> FloatArray:
        bound = b if direction > 0 else a
        beyond = (grid[None, :] > anchor[:, None]) if direction > 0 else (grid[None, :] < anchor[:, None])
        out_mask = beyond & (g_grid > 0)
        if direction > 0:
            idx = np.where(out_mask.any(axis=1), np.argmax(out_mask, axis=1), -1)
        else:
            last = _GRID - 1 - np.argmax(out_mask[:, ::-1], axis=1)
            idx = np.where(out_mask.any(axis=1), last, -1)
        found = idx >= 0
        outside = np.where(found, grid[np.maximum(idx, 0)], bound)
        neighbour = grid[np.clip(idx - direction, 0, _GRID - 1)]
        inside = np.where(direction * (neighbour - anchor) > 0, neighbour, anchor)
        inside = np.where(found, inside, bound)
        lo, hi = inside.copy(), outside.copy()
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            ok = g(mid) <= 0
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
        # Where no grid point beyond the anchor is rejected the accepted set reaches the bound.
        return np.where(found, lo, bound)

    upper_end = np.where(accepted_anchor, end(+1), anchor)
    lower_end = np.where(accepted_anchor, end(-1), anchor)
    return lower_end, upper_end


def _arrays(*values: npt.ArrayLike) -> tuple[tuple[int, ...], list[FloatArray]]:
    arrays = [np.asarray(x, dtype=np.float64) for x in values]
    shape = np.broadcast_shapes(*(x.shape for x in arrays))
    return shape, [np.broadcast_to(x, shape).reshape(-1) for x in arrays]


def ratio_by_inversion(
    noisy_numerator: npt.ArrayLike,
    numerator_scales: float | Sequence[float],
    noisy_denominator: npt.ArrayLike,
    denominator_scales: float | Sequence[float],
    *,
    lower: float | None = None,
    upper: float | None = None,
    noise: NoiseKind = "discrete_laplace",
    confidence: float = CONFIDENCE,
) -> InvertedEstimate:
    """``X / Y`` of two independent noisy totals (each the sum of cells of the listed scales).

    Undefined (NaN, ``undefined`` set) where the denominator's interval reaches 0 or below; with an
    admissible range ``[lower, upper]`` (a mean of clamped values) the ratio is always defined once the
    noisy denominator is at least 1, and value and interval are clipped to the range.
    """
    shape, (x, y) = _arrays(noisy_numerator, noisy_denominator)
    grid, q, kx, ky = _pivot_quantiles(
        _scales(numerator_scales), _scales(denominator_scales), noise, confidence
    )
    u, v = x / kx, y / ky
    c = kx / ky
    bounded = lower is not None and upper is not None
    if bounded:
        assert lower is not None and upper is not None
        # ratio = c cot t decreases in t on (0, pi): its range [lower, upper] is the angles between these.
        a = np.full(u.shape, math.atan2(1.0, upper / c))
        b = np.full(u.shape, math.atan2(1.0, lower / c))
        undefined = y < 1.0
    else:
        eps = 1e-12
        a, b = np.full(u.shape, eps), np.full(u.shape, math.pi - eps)
        undefined = v <= 1.0  # the denominator's own interval [y - k_y, y + k_y] reaches 0
    t_lo, t_hi = _accepted_angles(u, v, a, b, grid, q)
    with np.errstate(divide="ignore", invalid="ignore"):
        low = c / np.tan(t_hi)
        high = c / np.tan(t_lo)
        value = x / y
    if bounded:
        assert lower is not None and upper is not None
        value = np.clip(value, lower, upper)
        low, high = np.clip(low, lower, upper), np.clip(high, lower, upper)
        low, high = np.where(undefined, lower, low), np.where(undefined, upper, high)
        value = np.where(undefined, np.nan, value)
    else:
        value, low, high = (np.where(undefined, np.nan, z) for z in (value, low, high))
    low, high = np.fmin(low, value), np.fmax(high, value)
    return InvertedEstimate(
        value=value.reshape(shape),
        low=low.reshape(shape),
        high=high.reshape(shape),
        undefined=np.asarray(undefined).reshape(shape),
        confidence=confidence,
    )


def share_by_inversion(
    noisy_part: npt.ArrayLike,
    part_scales: float | Sequence[float],
    noisy_rest: npt.ArrayLike,
    rest_scales: float | Sequence[float],
    *,
    noise: NoiseKind = "discrete_laplace",
    confidence: float = CONFIDENCE,
) -> InvertedEstimate:
    """``X / (X + Y)`` for the noisy part ``X`` and the noisy rest ``Y`` (independent: disjoint cells).

    The value clips each total at 0; it is undefined (NaN) where both are at most 0. The interval is the
    set of shares the noise makes plausible (with or without a value), so a share of a cell the noise
    swamps has a wide interval, up to ``[0, 1]``, instead of a narrow one around a clipped value.
    """
    shape, (x, y) = _arrays(noisy_part, noisy_rest)
    grid, q, kx, ky = _pivot_quantiles(_scales(part_scales), _scales(rest_scales), noise, confidence)
    u, v = x / kx, y / ky
    a, b = np.zeros(u.shape), np.full(u.shape, math.pi / 2)
    t_lo, t_hi = _accepted_angles(u, v, a, b, grid, q)

    def share(t: FloatArray) -> FloatArray:
        num = kx * np.cos(t)
        return np.asarray(np.clip(num / (num + ky * np.sin(t)), 0.0, 1.0), dtype=np.float64)

    px, py = np.maximum(x, 0.0), np.maximum(y, 0.0)
    undefined = px + py <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(undefined, np.nan, px / (px + py))
    # Without a value the interval is still the set of shares the noise makes plausible.
    low, high = np.fmin(share(t_hi), value), np.fmax(share(t_lo), value)
    return InvertedEstimate(
        value=value.reshape(shape),
        low=low.reshape(shape),
        high=high.reshape(shape),
        undefined=undefined.reshape(shape),
        confidence=confidence,
    )
