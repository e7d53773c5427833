"""Gini coefficient, quintile income shares, the Lorenz curve and quantiles from a released ``lorenz`` table.

Post-processing only (no budget): every function takes *noisy* values (the parameters are named ``noisy_*``)
and public parameters (edges, bounds, noise scales), never a true value. The ``lorenz`` statistic of
:mod:`privacy.release` releases, per cell and bin ``j`` with public boundaries ``[b_j, b_j + w_j]``
(:func:`privacy.intervals.histogram_boundaries`), a noisy count ``c_j`` and the noisy sum ``s_j`` of the
units' offsets ``x - b_j`` in yuan.

**Estimates.** The raw noisy counts and offset-sums are used as released (not clipped per bin: clipping
would add the positive part of the noise of every empty tail bin, at that bin's high edge, and bias the
mean, the top quintile and the Gini upwards); bin ``j``'s total is ``T_j = c_j b_j + s_j``, an unbiased
estimate, and only the resulting figures are clipped to their admissible ranges.
With ``N = sum c_j`` and ``T = sum T_j``, the Lorenz curve has the points ``(P_j, L_j)`` at the bin boundaries
(``P_j`` = cumulative count share, ``L_j`` = cumulative income share, from ``(0, 0)`` to ``(1, 1)``) and is
linear between them, which is what equality within each bin gives. Then

- Gini ``= 1 - sum_j p_j (L_{j-1} + L_j)`` with ``p_j = c_j / N`` (the trapezoid rule over the points),
- quintile shares ``= L(0.2 k) - L(0.2 (k - 1))``, ``L`` interpolated linearly between the points,
- mean ``= T / N``.

**Grouping bias.** Treating every bin as if its units all had the bin's mean drops the within-bin spread:
the grouped Gini is the Gini of the true values *minus* ``sum_j p_j^2 D_j / (2 mean)`` with ``D_j`` the mean
absolute difference inside bin ``j``. As ``D_j <= w_j / 2`` the understatement lies in
``[0, sum_j p_j^2 w_j / (4 mean)]`` (reported as ``gini_grouping_bias_max``; about two thirds of that for
values spread evenly in their bins). For a smooth distribution ``p_j`` is about proportional to ``w_j``, so
halving every bin width divides the bias by about four. The quintile shares of the lower quintiles are
overstated in the same way (the true curve sags below the chord inside a bin).

**Negative incomes.** With ``lower < 0`` the bins below 0 have negative totals: the Lorenz curve dips below 0,
the bottom shares can be negative and the Gini can exceed 1. That is the standard formula's honest answer
for such data, so values are *not* clipped to [0, 1] then (the Gini is still at least 0 whenever the total
is positive). With ``lower >= 0`` the true figures lie in [0, 1], and the estimates are clipped to it
(noisy bins can push them slightly outside). Shares and the Gini are undefined (NaN) where the noisy
total ``T`` is not positive or the noisy count ``N`` is below 1; the mean where ``N`` is below 1.

**Intervals.** As in :mod:`privacy.intervals`: the known noise is drawn ``draws`` times around the noisy
values (integer Laplace of the count scale for the counts; Laplace of each bin's yuan scale for the
offset-sums, whose released noise is integer Laplace on a lattice of ``w_j / R`` yuan: the same but for
that lattice, since the scale spans ``unit_multiplicity * R / share`` steps), every figure is recomputed per
draw and the interval is the central ``confidence`` percentile range. Where more
than ``1 - confidence`` of the draws are undefined the interval is the admissible range (NaN ends where there
is none, i.e. shares and Gini with negative incomes).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from privacy.intervals import (
    CONFIDENCE,
    DEFAULT_DRAWS,
    histogram_boundaries,
    quantiles_from_noisy_histogram,
    sample_noise,
)
from privacy.vocabulary import ReleaseResult, histogram_bin_labels

__all__ = [
    "QUINTILES",
    "DistributionEstimate",
    "Figure",
    "GroupKey",
    "lorenz_from_noisy",
    "lorenz_from_noisy_cells",
    "lorenz_from_release",
    "quantiles_from_lorenz",
]

QUINTILES = (0.2, 0.4, 0.6, 0.8)
"""Population shares at which the Lorenz curve is read for the quintile income shares."""

GroupKey = tuple[str | None, ...]
"""A cell's group values, in the release's ``group_names`` order (``()`` for an ungrouped release)."""

FloatArray = npt.NDArray[np.float64]

# Elements of one simulation batch (draws x cells x bins); the figures need several arrays of that size.
_MAX_BATCH_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class Figure:
    """A point estimate and its interval; NaN marks what is undefined (see the module docstring)."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class DistributionEstimate:
    """The distribution figures of one cell, each with its simulated ``confidence`` interval.

    ``population_shares[j]`` and ``income_shares[j]`` are the Lorenz curve's point at ``boundaries[j]``
    (cumulative share of units and of income below it); ``quintile_shares`` are the income shares of the
    bottom 20% of units, ..., the top 20%.
    """

    boundaries: tuple[float, ...]
    population_shares: tuple[Figure, ...]
    income_shares: tuple[Figure, ...]
    gini: Figure
    gini_grouping_bias_max: float
    """upper bound of the grouping bias (the grouped Gini understates the true one by at most this)"""
    quintile_shares: tuple[Figure, ...]
    mean: Figure
    confidence: float

    @property
    def lorenz_curve(self) -> tuple[tuple[float, float], ...]:
        """The Lorenz curve's points (population share, income share), point estimates only."""
        return tuple(
            (p.value, q.value) for p, q in zip(self.population_shares, self.income_shares, strict=True)
        )


@dataclass(frozen=True)
class _Figures:
    """The figures of many histograms at once; leading axes are broadcast, the last is bins or points."""

    population: FloatArray  # (..., B + 1)
    income: FloatArray  # (..., B + 1)
    gini: FloatArray  # (...)
    quintiles: FloatArray  # (..., 5)
    mean: FloatArray  # (...)
    bias: FloatArray  # (...)
    counted: npt.NDArray[np.bool_]  # N >= 1: population shares and the mean are defined
    positive: npt.NDArray[np.bool_]  # also T > 0: income shares, Gini and quintiles are defined


def _cumulative(parts: FloatArray, total: FloatArray) -> FloatArray:
    """Points 0, cumsum/total..., with the last point exactly 1 (cumsum and sum round differently)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = np.cumsum(parts, axis=-1) / total[..., None]
    zeros = np.zeros((*parts.shape[:-1], 1))
    out = np.concatenate([zeros, inner], axis=-1)
    out[..., -1] = 1.0
    return out


def _interpolate(population: FloatArray, income: FloatArray, at: FloatArray) -> FloatArray:
    """Income share L(p) on the piecewise-linear Lorenz curve, for each p in ``at``; (..., K) -> (..., P)."""
    last = population.shape[-1] - 1
    # First point with P_k >= p; P_0 = 0 < p, so k >= 1 and P_{k-1} < p <= P_k (empty bins repeat a P).
    k = np.clip((population[..., None, :] < at[:, None]).sum(axis=-1), 1, last)
    p_hi = np.take_along_axis(population, k, axis=-1)
    p_lo = np.take_along_axis(population, k - 1, axis=-1)
    l_hi = np.take_along_axis(income, k, axis=-1)
    l_lo = np.take_along_axis(income, k - 1, axis=-1)
    step = p_hi - p_lo
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.where(step > 0, (at - p_lo) / step, 1.0), 0.0, 1.0)
    return np.asarray(l_lo + frac * (l_hi - l_lo), dtype=np.float64)


def _figures(
    noisy_counts: FloatArray, noisy_offset_sums: FloatArray, bounds: FloatArray, *, lower: float, upper: float
) -> _Figures:
    # Undefined figures (N < 1 or T <= 0) produce inf/NaN on the way; they are masked at the end.
    with np.errstate(divide="ignore", invalid="ignore"):
        return _figures_unchecked(noisy_counts, noisy_offset_sums, bounds, lower=lower, upper=upper)


def _figures_unchecked(
    noisy_counts: FloatArray, noisy_offset_sums: FloatArray, bounds: FloatArray, *, lower: float, upper: float
) -> _Figures:
    widths = np.diff(bounds)
    # Raw noisy bins, not clipped: clipping every bin at 0 adds the positive part of the noise of every
    # empty bin (most of them in the income tail, each at a high bin edge) and biases the mean, the top
    # quintile and the Gini upwards; raw sums are unbiased, and only the figures are clipped.
    counts = np.asarray(noisy_counts, dtype=np.float64)
    offsets = np.asarray(noisy_offset_sums, dtype=np.float64)
    totals = counts * bounds[:-1] + offsets
    n = counts.sum(axis=-1)
    t = totals.sum(axis=-1)
    counted = n >= 1.0
    positive = counted & (t > 0.0)
    population = _cumulative(counts, n)
    income = _cumulative(totals, t)
    p = counts / n[..., None]
    gini = 1.0 - np.sum(p * (income[..., :-1] + income[..., 1:]), axis=-1)
    mean = np.clip(t / n, lower, upper)
    bias = np.sum(p * p * widths, axis=-1) / (4.0 * mean)
    at = np.asarray(QUINTILES, dtype=np.float64)
    curve = _interpolate(population, income, at)
    end = (*curve.shape[:-1], 1)
    quintiles = np.diff(np.concatenate([np.zeros(end), curve, np.ones(end)], axis=-1), axis=-1)
    if lower >= 0:
        # Noisy bins can push a figure slightly outside [0, 1]; the true one lies inside.
        income, gini, quintiles = np.clip(income, 0, 1), np.clip(gini, 0, 1), np.clip(quintiles, 0, 1)
    nan = np.nan
    return _Figures(
        population=np.where(counted[..., None], np.clip(population, 0, 1), nan),
        income=np.where(positive[..., None], income, nan),
        gini=np.where(positive, gini, nan),
        quintiles=np.where(positive[..., None], quintiles, nan),
        mean=np.where(counted, mean, nan),
        bias=np.where(positive, bias, nan),
        counted=counted,
        positive=positive,
    )


def _interval(
    draws: FloatArray,
    defined: npt.NDArray[np.bool_],
    value: FloatArray,
    admissible: tuple[float, float],
    confidence: float,
) -> tuple[FloatArray, FloatArray]:
    """Central percentile range of the defined draws (axis 0), or the admissible range (see module doc)."""
    alpha = 1.0 - confidence
    while defined.ndim < draws.ndim:
        defined = defined[..., None]
    masked = np.where(defined, draws, np.nan)
    with warnings.catch_warnings():
        # All-undefined slices are replaced below.
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(masked, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)], axis=0)
    undefined_share = 1.0 - np.broadcast_to(defined, draws.shape).mean(axis=0)
    wide = (undefined_share > alpha) | np.isnan(value)
    return np.where(wide, admissible[0], low), np.where(wide, admissible[1], high)


def _isotonic(y: FloatArray) -> FloatArray:
    """The non-decreasing sequence closest to ``y`` in least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in y.tolist():
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, w2), (m1, w1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    return np.repeat([b[0] for b in blocks], [int(b[1]) for b in blocks]).astype(np.float64)


def _widen_monotone(low: FloatArray, high: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Bands of a non-decreasing curve made non-decreasing by widening only (so no point loses coverage):
    each low end drops to the smallest low end after it, each high end rises to the largest before it."""
    low = np.minimum.accumulate(low[..., ::-1], axis=-1)[..., ::-1]
    return low, np.maximum.accumulate(high, axis=-1)


def _monotone_curve(
    population: FloatArray,
    income: FloatArray,
    lows: dict[str, FloatArray],
    highs: dict[str, FloatArray],
    non_negative: bool,
) -> tuple[FloatArray, FloatArray]:
    """The Lorenz points post-processed to what a Lorenz curve is: p never falls, the income share never
    rises above the line of equality (L <= p) and, for incomes of at least 0, never falls either; the
    bands are widened to monotone and cut at the line of equality. Changes ``lows``/``highs`` in place."""
    population, income = population.copy(), income.copy()
    p_low, p_high = _widen_monotone(lows["population"], highs["population"])
    i_low, i_high = lows["income"], highs["income"]
    if non_negative:
        i_low, i_high = _widen_monotone(i_low, i_high)
    for row in range(population.shape[0]):
        if not np.isnan(population[row]).any():
            population[row] = np.clip(_isotonic(population[row]), 0.0, 1.0)
        if non_negative and not np.isnan(income[row]).any():
            income[row] = _isotonic(income[row])
    income = np.fmin(income, population)
    i_high = np.fmin(i_high, population)
    lows["population"] = np.fmin(p_low, population)
    highs["population"] = np.fmax(p_high, population)
    lows["income"] = np.fmin(i_low, income)
    highs["income"] = np.fmax(i_high, income)
    return population, income


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def lorenz_from_noisy_cells(
    noisy_counts: npt.ArrayLike,
    noisy_offset_sums: npt.ArrayLike,
    *,
    edges: Sequence[int],
    lower: int,
    upper: int,
    count_scale: float,
    sum_scales_per_bin: npt.ArrayLike,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
    confidence: float = CONFIDENCE,
) -> list[DistributionEstimate]:
    """:func:`lorenz_from_noisy` for many cells at once: arrays of shape (cells, bins), one estimate each."""
    _check_confidence(confidence)
    if draws < 1:
        raise ValueError("draws must be at least 1")
    bounds = histogram_boundaries(edges, lower, upper)
    n_bins = bounds.size - 1
    counts = np.asarray(noisy_counts, dtype=np.float64)
    offsets = np.asarray(noisy_offset_sums, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != n_bins or offsets.shape != counts.shape:
        raise ValueError(
            f"expected noisy counts and offset-sums of shape (cells, {n_bins}), got {counts.shape} "
            f"and {offsets.shape}"
        )
    if counts.shape[0] == 0:
        return []
    sum_scales = np.broadcast_to(np.asarray(sum_scales_per_bin, dtype=np.float64), (n_bins,))
    generator = rng if rng is not None else np.random.default_rng()
    fig = _figures(counts, offsets, bounds, lower=lower, upper=upper)
    unit = (0.0, 1.0)
    share_range = unit if lower >= 0 else (np.nan, np.nan)
    gini_range = unit if lower >= 0 else (0.0, np.nan)

    lows: dict[str, list[FloatArray]] = {k: [] for k in ("population", "income", "gini", "quintiles", "mean")}
    highs: dict[str, list[FloatArray]] = {k: [] for k in lows}
    batch = max(1, _MAX_BATCH_ELEMENTS // (draws * (n_bins + 1)))
    for start in range(0, counts.shape[0], batch):
        stop = min(start + batch, counts.shape[0])
        size = (draws, stop - start, n_bins)
        sim = _figures(
            counts[start:stop] + sample_noise(generator, count_scale, size),
            offsets[start:stop] + sample_noise(generator, sum_scales, size, "laplace"),
            bounds,
            lower=lower,
            upper=upper,
        )
        point = slice(start, stop)
        for name, draws_of, defined, value, admissible in (
            ("population", sim.population, sim.counted, fig.population[point], unit),
            ("income", sim.income, sim.positive, fig.income[point], share_range),
            ("gini", sim.gini, sim.positive, fig.gini[point], gini_range),
            ("quintiles", sim.quintiles, sim.positive, fig.quintiles[point], share_range),
            ("mean", sim.mean, sim.counted, fig.mean[point], (float(lower), float(upper))),
        ):
            low, high = _interval(draws_of, defined, value, admissible, confidence)
            lows[name].append(low)
            highs[name].append(high)
    low_all = {k: np.concatenate(v) for k, v in lows.items()}
    high_all = {k: np.concatenate(v) for k, v in highs.items()}
    population, income = _monotone_curve(fig.population, fig.income, low_all, high_all, lower >= 0)

    def figures(name: str, values: FloatArray, i: int) -> tuple[Figure, ...]:
        return tuple(
            Figure(float(v), float(lo), float(hi))
            for v, lo, hi in zip(values[i], low_all[name][i], high_all[name][i], strict=True)
        )

    out = []
    for i in range(counts.shape[0]):
        out.append(
            DistributionEstimate(
                boundaries=tuple(float(b) for b in bounds),
                population_shares=figures("population", population, i),
                income_shares=figures("income", income, i),
                gini=Figure(float(fig.gini[i]), float(low_all["gini"][i]), float(high_all["gini"][i])),
                gini_grouping_bias_max=float(fig.bias[i]),
                quintile_shares=figures("quintiles", fig.quintiles, i),
                mean=Figure(float(fig.mean[i]), float(low_all["mean"][i]), float(high_all["mean"][i])),
                confidence=confidence,
            )
        )
    return out


def lorenz_from_noisy(
    noisy_counts: npt.ArrayLike,
    noisy_offset_sums: npt.ArrayLike,
    *,
    edges: Sequence[int],
    lower: int,
    upper: int,
    count_scale: float,
    sum_scales_per_bin: npt.ArrayLike,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
    confidence: float = CONFIDENCE,
) -> DistributionEstimate:
    """Lorenz curve, Gini, quintile shares and mean of one cell, with simulated intervals.

    ``noisy_counts`` and ``noisy_offset_sums`` (yuan) have one entry per bin of ``edges`` (the underflow bin,
    the inner bins, the overflow bin); ``count_scale`` is the counts' integer-Laplace scale and
    ``sum_scales_per_bin`` each bin's offset-sum scale in yuan (``scales["lorenz_sum"] * w_j / R``).
    See the module docstring for the method, the grouping bias and negative incomes.
    """
    counts = np.asarray(noisy_counts, dtype=np.float64)
    offsets = np.asarray(noisy_offset_sums, dtype=np.float64)
    if counts.ndim != 1 or offsets.ndim != 1:
        raise ValueError(
            "lorenz_from_noisy takes one cell (1-D arrays over bins); see lorenz_from_noisy_cells"
        )
    return lorenz_from_noisy_cells(
        counts[None, :],
        offsets[None, :],
        edges=edges,
        lower=lower,
        upper=upper,
        count_scale=count_scale,
        sum_scales_per_bin=sum_scales_per_bin,
        draws=draws,
        rng=rng,
        confidence=confidence,
    )[0]


_LABEL = re.compile(r"^(?:<(-?\d+)|\[(-?\d+),(-?\d+)\)|>=(-?\d+))$")


def _edges_from_labels(labels: Sequence[str]) -> tuple[int, ...]:
    """The public edges back from the bin labels ``<e0``, ``[e0,e1)``, ..., ``>=ek`` (checked round trip)."""
    matches = [_LABEL.match(label) for label in labels]
    if len(labels) < 2 or any(m is None for m in matches):
        raise ValueError(f"not histogram bin labels: {list(labels)}")
    first = matches[0]
    assert first is not None and first.group(1) is not None
    edges = [int(first.group(1))] + [int(m.group(3)) for m in matches[1:-1] if m is not None]
    result = tuple(edges)
    if histogram_bin_labels(result) != tuple(labels):
        raise ValueError(f"bin labels out of order or inconsistent: {list(labels)}")
    return result


@dataclass(frozen=True)
class _LorenzTable:
    keys: list[GroupKey]
    edges: tuple[int, ...]
    counts: FloatArray  # (cells, bins)
    offsets: FloatArray  # (cells, bins), yuan


def _lorenz_table(result: ReleaseResult | Mapping[str, Any]) -> tuple[ReleaseResult, _LorenzTable]:
    release = result if isinstance(result, ReleaseResult) else ReleaseResult.from_json_dict(result)
    if "lorenz_count" not in release.scales or "lorenz_sum" not in release.scales:
        raise ValueError("the release has no lorenz statistic; add Lorenz(edges=...) to its statistics")
    labels: list[str] = []
    counts: dict[GroupKey, dict[str, float]] = {}
    offsets: dict[GroupKey, dict[str, float]] = {}
    for cell in release.cells:
        if cell.statistic not in ("lorenz", "lorenz_sum"):
            continue
        if cell.bin is None or cell.value is None:
            raise ValueError("a lorenz cell lacks its bin or value")
        key = tuple(cell.groups.get(name) for name in release.group_names)
        target = counts if cell.statistic == "lorenz" else offsets
        target.setdefault(key, {})[cell.bin] = float(cell.value)
        if cell.bin not in labels:
            labels.append(cell.bin)
    edges = _edges_from_labels(labels)
    keys = list(counts)
    if set(offsets) != set(keys) or any(
        set(counts[k]) != set(labels) or set(offsets[k]) != set(labels) for k in keys
    ):
        raise ValueError("the release lacks some lorenz or lorenz_sum cells")
    table = _LorenzTable(
        keys=keys,
        edges=edges,
        counts=np.asarray([[counts[k][b] for b in labels] for k in keys], dtype=np.float64),
        offsets=np.asarray([[offsets[k][b] for b in labels] for k in keys], dtype=np.float64),
    )
    return release, table


def lorenz_from_release(
    result: ReleaseResult | Mapping[str, Any],
    *,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
    confidence: float = CONFIDENCE,
) -> dict[GroupKey, DistributionEstimate]:
    """The distribution figures of every cell of a release (or its JSON dict) with a ``lorenz`` statistic.

    Keys are the cells' group values in ``group_names`` order, in the release's cell order.
    """
    release, table = _lorenz_table(result)
    if release.lorenz_resolution is None:
        raise ValueError("the release does not state its lorenz resolution R")
    bounds = histogram_boundaries(table.edges, release.lower, release.upper)
    sum_scales = release.scales["lorenz_sum"] * np.diff(bounds) / release.lorenz_resolution
    estimates = lorenz_from_noisy_cells(
        table.counts,
        table.offsets,
        edges=table.edges,
        lower=release.lower,
        upper=release.upper,
        count_scale=release.scales["lorenz_count"],
        sum_scales_per_bin=sum_scales,
        draws=draws,
        rng=rng,
        confidence=confidence,
    )
    return dict(zip(table.keys, estimates, strict=True))


def quantiles_from_lorenz(
    result: ReleaseResult | Mapping[str, Any],
    probs: Sequence[float],
    *,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
    confidence: float = CONFIDENCE,
) -> dict[GroupKey, tuple[Figure, ...]]:
    """Quantiles (e.g. P10, P50, P90) per cell from the lorenz counts, one :class:`Figure` per prob.

    The lorenz counts are a histogram over the same public edges, so this is
    :func:`privacy.intervals.quantiles_from_noisy_histogram` applied to them: no extra budget.
    """
    release, table = _lorenz_table(result)
    est = quantiles_from_noisy_histogram(
        table.counts,
        release.scales["lorenz_count"],
        edges=table.edges,
        lower=release.lower,
        upper=release.upper,
        probs=probs,
        confidence=confidence,
        draws=draws,
        rng=rng,
    )
    return {
        key: tuple(
            Figure(float(est.value[i, j]), float(est.low[i, j]), float(est.high[i, j]))
            for j in range(len(probs))
        )
        for i, key in enumerate(table.keys)
    }
