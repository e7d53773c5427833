"""Consistent tables across geography: the county, urban–rural and village tables of one release family,
reconciled by post-processing.

A family is several DP releases over one population, each splitting it into the cells of one level (the
county as a single cell, the urban–rural codes, the villages; each level with its public "other" cell)
over one shared set of columns (histogram bins, covered or not, income trend). Every level's cells add
up, column by column, to the same county total; their independent noise makes the released tables
disagree. `reconcile` makes them agree:

1. **Weighted least squares** with the known noise variances. The county total of a column is the
   inverse-variance weighted mean of every level's noisy sum; each level's cells then share the gap
   between that total and their own sum equally (a level has one noise scale). This is the unbiased
   linear estimate of least variance among those whose levels all add up to one total.
2. **TopDown-style rounding.** The total is rounded to a non-negative whole number; each level's cells
   are projected (least squares) onto the non-negative vectors with that sum and rounded to whole numbers
   keeping the sum (largest remainders). Every level then adds up exactly, in whole households or persons.
3. **Intervals from public scales only.** The linear estimate's error is a fixed linear combination of
   the releases' independent integer-Laplace noise; the 95% quantile of its absolute value (simulated from
   the scales alone) is the half-width around the linear estimate, clamped at 0 (a count is never
   negative: this never excludes a truth) and widened to hold the displayed whole number. The truth lies
   in it at least 95% of the time, whatever step 2 did.

Inputs are noisy values and public scales only: no data, no budget, no exact number.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privacy.intervals import CONFIDENCE

DRAWS = 20_000
"""Simulated draws per pool size for the half-widths: the 95% quantile to about ±0.15 points."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class ReconcileError(ValueError):
    """Tables that are not one family: `field` names what disagrees."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class NoisyTable:
    """One released level: noisy cell values (cells x columns) and the release's public noise scale."""

    level: str
    cells: tuple[str, ...]
    values: FloatArray
    scale: float
    groups: tuple[tuple[str, ...], ...] = ()
    """public groups of cells (e.g. the urban and the rural codes) rounded as a whole before their cells,
    so that a group's reconciled sum is off its least-squares value by less than one, like a cell's"""


@dataclass(frozen=True)
class Estimate:
    """Raw and reconciled values of some cells (or pools of cells), per column, with 95% intervals."""

    cells: tuple[str, ...]
    raw: FloatArray
    """the noisy measurement (a pool: the sum of its cells' noisy values)"""
    raw_low: FloatArray
    raw_high: FloatArray
    value: IntArray
    """the reconciled whole number: non-negative, and every level adds up to the same total"""
    low: FloatArray
    high: FloatArray


@dataclass(frozen=True)
class _Noise:
    """The family's public noise: each level's scale and cell count, and the weights of their sums."""

    scales: tuple[float, ...]
    sizes: tuple[int, ...]
    weights: tuple[float, ...]
    seed: int
    draws: int

    def half_widths(self, level: int, m: int) -> tuple[float, float]:
        """95% half-widths of the raw sum of `m` cells of a level and of their linear estimate."""
        return _pool_half_widths(self, level, m)


@functools.lru_cache(maxsize=1024)
def _pool_half_widths(noise: _Noise, level: int, m: int) -> tuple[float, float]:
    """The pool's estimate is its noisy sum plus m/n of the gap between the total and the level's noisy
    sum, so its error is E_P + (m/n) (S - E_P - R): E_P the pool's noise, R the rest of the level's, S the
    weighted total of every level's noise. Each is a sum of independent integer-Laplace draws, drawn
    exactly as one difference of two negative binomials. Public inputs only, so the answer is kept."""
    rng = np.random.default_rng([noise.seed, level, m])
    n, draws = noise.sizes[level], noise.draws
    own = _sum_of_noise(rng, noise.scales[level], m, draws)
    rest = _sum_of_noise(rng, noise.scales[level], n - m, draws)
    total = noise.weights[level] * (own + rest)
    for t, (scale, size) in enumerate(zip(noise.scales, noise.sizes, strict=True)):
        if t != level:
            total = total + noise.weights[t] * _sum_of_noise(rng, scale, size, draws)
    return _half_width(own), _half_width(own + (m / n) * (total - own - rest))


@dataclass(frozen=True)
class Level:
    """One reconciled level, able to pool its cells (e.g. urban and rural from the urban–rural codes)."""

    level: str
    cells: tuple[str, ...]
    raw: FloatArray
    linear: FloatArray
    value: IntArray
    index: int
    noise: _Noise

    def estimate(self) -> Estimate:
        return self.pooled({c: (c,) for c in self.cells})

    def pooled(self, pools: Mapping[str, Sequence[str]]) -> Estimate:
        """Each pool (name -> cells of this level) as the sum of its cells, raw and reconciled."""
        index = {c: i for i, c in enumerate(self.cells)}
        unknown = sorted({c for keys in pools.values() for c in keys} - set(index))
        if unknown:
            raise ReconcileError("pools", f"cells {unknown} are not cells of level {self.level}")
        mask = np.zeros((len(pools), len(self.cells)))
        for p, keys in enumerate(pools.values()):
            mask[p, [index[c] for c in keys]] = 1.0
        raw, linear, value = mask @ self.raw, mask @ self.linear, (mask @ self.value).astype(np.int64)
        # Pools of as many cells share one error distribution (a level's cells share one scale).
        halves = {m: self.noise.half_widths(self.index, m) for m in {int(k) for k in mask.sum(axis=1)}}
        raw_half = np.array([[halves[int(k)][0]] for k in mask.sum(axis=1)])
        half = np.array([[halves[int(k)][1]] for k in mask.sum(axis=1)])
        return Estimate(
            cells=tuple(pools),
            raw=raw,
            raw_low=raw - raw_half,
            raw_high=raw + raw_half,
            value=value,
            low=np.floor(np.maximum(np.minimum(linear - half, value), 0.0)),
            high=np.ceil(np.maximum(linear + half, value)),
        )


def noise_variance(scale: float) -> float:
    """Variance of OpenDP's integer Laplace noise of `scale`: 2q / (1 - q)^2 with q = exp(-1/scale)."""
    if scale <= 0:
        return 0.0
    q = math.exp(-1.0 / scale)
    return 2.0 * q / (1.0 - q) ** 2


def reconcile(tables: Sequence[NoisyTable], *, seed: int, draws: int = DRAWS) -> dict[str, Level]:
    """The family's levels made consistent (level name -> reconciled level); see the module docstring."""
    _check(tables)
    scales, sizes = tuple(t.scale for t in tables), tuple(len(t.cells) for t in tables)
    weights = _weights(scales, sizes)
    sums = np.stack([t.values.sum(axis=0) for t in tables])
    total = weights @ sums
    whole_total = np.maximum(np.rint(total), 0.0)
    noise = _Noise(scales, sizes, tuple(float(w) for w in weights), seed, draws)
    out = {}
    for i, (t, s) in enumerate(zip(tables, sums, strict=True)):
        linear = t.values + (total - s)[None, :] / len(t.cells)
        value = np.stack(
            [_whole_numbers(linear[:, j], s_j, _group_index(t)) for j, s_j in enumerate(whole_total)],
            axis=1,
        )
        out[t.level] = Level(t.level, t.cells, t.values, linear, value, i, noise)
    return out


def _check(tables: Sequence[NoisyTable]) -> None:
    if not tables:
        raise ReconcileError("tables", "a family needs at least one released level")
    columns = {t.values.shape[1] if t.values.ndim == 2 else -1 for t in tables}
    if len(columns) != 1 or -1 in columns:
        raise ReconcileError("tables", "every level needs a (cells x columns) table with the same columns")
    for t in tables:
        if t.values.shape[0] != len(t.cells) or len(t.cells) == 0:
            raise ReconcileError(t.level, "one row of values per cell, at least one cell")
        if len(set(t.cells)) != len(t.cells):
            raise ReconcileError(t.level, "a cell is named twice")
        if not math.isfinite(t.scale) or t.scale < 0:
            raise ReconcileError(t.level, f"noise scale {t.scale} must be finite and at least 0")
        grouped = [c for g in t.groups for c in g]
        if len(set(grouped)) != len(grouped) or not set(grouped) <= set(t.cells):
            raise ReconcileError(t.level, "rounding groups must be disjoint sets of the level's cells")
    if len({t.level for t in tables}) != len(tables):
        raise ReconcileError("tables", "a level is given twice")


def _weights(scales: Sequence[float], sizes: Sequence[int]) -> FloatArray:
    """Inverse-variance weights of each level's sum (a noiseless level, if any, decides alone)."""
    variances = np.array([noise_variance(s) * n for s, n in zip(scales, sizes, strict=True)])
    exact = variances == 0
    raw = exact.astype(np.float64) if exact.any() else 1.0 / variances
    return np.asarray(raw / raw.sum(), dtype=np.float64)


def _group_index(t: NoisyTable) -> list[list[int]]:
    """The level's rounding groups as cell indices; cells in no group form one group each."""
    index = {c: i for i, c in enumerate(t.cells)}
    grouped = [[index[c] for c in g] for g in t.groups]
    seen = {i for g in grouped for i in g}
    return grouped + [[i] for i in range(len(t.cells)) if i not in seen]


def _whole_numbers(x: FloatArray, total: float, groups: list[list[int]]) -> IntArray:
    """Non-negative whole numbers adding up to `total`, closest to `x`: project, round the groups' sums
    keeping the total, then within each group project onto its rounded sum and round keeping it."""
    z = _project(x, total)
    sums = _round_keeping_sum(np.array([z[g].sum() for g in groups]), total)
    out = np.zeros(len(x), dtype=np.int64)
    for g, whole in zip(groups, sums, strict=True):
        out[g] = _round_keeping_sum(_project(z[g], float(whole)), float(whole))
    return out


def _project(x: FloatArray, total: float) -> FloatArray:
    """The closest non-negative vector to `x` (least squares) whose entries add up to `total` >= 0."""
    if total <= 0:
        return np.zeros_like(x)
    u = np.sort(x)[::-1]
    excess = np.cumsum(u) - total
    rank = np.arange(1, len(x) + 1)
    rho = int(rank[u - excess / rank > 0][-1])
    return np.maximum(x - excess[rho - 1] / rho, 0.0)


def _round_keeping_sum(z: FloatArray, total: float) -> IntArray:
    """Whole numbers near `z` (non-negative, summing to `total`) with the same sum: largest remainders."""
    base = np.floor(z)
    short = int(np.rint(total - base.sum()))
    order = np.argsort(-(z - base), kind="stable")
    base[order[:short]] += 1.0
    return base.astype(np.int64)


def _sum_of_noise(rng: np.random.Generator, scale: float, m: int, draws: int) -> FloatArray:
    """Draws of the sum of `m` independent integer-Laplace noises of `scale`.

    Integer Laplace is the difference of two geometric counts; m of them add up to the difference of
    two negative binomials with m successes (the same draws `privacy.intervals.sample_noise` makes one
    by one)."""
    if m == 0 or scale == 0:
        return np.zeros(draws)
    p = -math.expm1(-1.0 / scale)
    return (rng.negative_binomial(m, p, draws) - rng.negative_binomial(m, p, draws)).astype(np.float64)


def _half_width(errors: FloatArray) -> float:
    """The 95% quantile of |error| over simulated draws (the next draw up: never narrower)."""
    return float(np.quantile(np.abs(errors), CONFIDENCE, method="higher"))
