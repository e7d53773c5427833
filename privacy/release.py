"""Differentially private releases over public cells, through OpenDP measurements only.

The caller hands over a polars frame with exactly one row per privacy unit (or, for person queries, one row
per person with at most ``unit_multiplicity`` persons per household), string group columns and optionally
one integer measure already clamped to ``[lower, upper]``. This module never draws noise itself: OpenDP's
``make_private_lazyframe`` adds integer Laplace noise under pure epsilon-DP (``max_divergence``) with the
input distance measured as the symmetric distance between frames. ``d_in`` is the distance between the
frames of two neighbouring federations (:mod:`privacy.neighbours`): ``unit_multiplicity`` rows when one
household is added or removed, twice that when one household's records change. The frame-length bound OpenDP
is promised is :data:`FRAME_ROWS_LIMIT`, the most rows a polars frame can hold, so no frame breaks it.

**Public cells.** The cells are the cross product of the group domains. Each domain is its declared values
plus one more public key, ``None`` (:data:`OTHER`): nulls and values outside the code list are mapped to it
before OpenDP sees the frame (a row-wise map, so it changes no distance). Every cell is joined to the public
key set inside the OpenDP plan, so empty cells are released with noise like any other and the presence of a
rare key is never revealed.

**Measured quantities and the epsilon split.** The statistics asked for are reduced to the distinct noisy
quantities they need: ``count`` (units per cell; for ``count`` and ``mean``), ``sum`` (of the measure per
cell; for ``sum`` and ``mean``), ``histogram`` (units per cell x bin; for ``histogram``) and
``quantile_histogram`` (for ``quantiles``; the same quantity as ``histogram`` when the edges are equal, and
then measured once), and for ``lorenz`` two more: ``lorenz_count`` (units per cell x bin) and ``lorenz_sum``
(per cell x bin, the units' offsets inside their bin, see below). Epsilon is split in **equal shares** among
these quantities; ``mean`` is post-processing of the count and the sum, so asking for count, sum and mean
costs the same as count and sum. Each quantity's noise scale is ``sensitivity / share`` where the
sensitivity between neighbouring frames is ``d_in`` rows for counts and histograms (``lorenz_count`` too),
``d_in * max(|lower|, |upper|)`` for sums and ``d_in * R`` for ``lorenz_sum``.
Scales are enlarged by one part in 10^9 so that OpenDP's outward-rounded floating-point privacy map never
passes the exact share; the check against the spec's epsilon is then exact (no tolerance): the Decimal value
of OpenDP's composed map must be at most ``epsilon``.

**Lorenz: bin sums with noise sized to the bin width.** For the Gini coefficient, income shares and the
Lorenz curve, ``lorenz`` releases a fine histogram over public edges together with each bin's income. The
bins are the histogram's, and after clamping every bin ``j`` has finite boundaries ``b_j`` and
``b_{j+1} = b_j + w_j`` (:func:`privacy.intervals.histogram_boundaries`). A unit's income in its bin is
``b_j`` (public) plus its offset ``x - b_j`` in ``[0, w_j]``, so only the offsets need noise. Each offset is
normalised to the common integer resolution ``R`` (:data:`LORENZ_RESOLUTION`),
``t = round((x - b_j) R / w_j)`` in ``[0, R]``, and one OpenDP sum of ``t`` with bounds ``(0, R)`` and one
scale ``s`` noises every bin. Back in yuan, bin ``j``'s offset-sum is ``noisy_t * w_j / R`` with noise scale
``s * w_j / R``: proportional to the bin's width rather than to the global bound, so narrow low-income bins
get small absolute noise. ``ReleaseResult.scales["lorenz_sum"]`` is ``s`` in normalised units. The bin label
and ``t`` are row-wise maps of the clamped measure computed before OpenDP sees the frame, so they change no
distance. A zero-width bin (an edge equal to a bound) has ``t = 0`` and releases 0 yuan.

**Built once, checked before data.** :func:`prepare_release` builds one OpenDP measurement per group-by (with
explicit scales; no scale search) and OpenDP's adaptive compositor over them, then compares the compositor's
privacy map at ``d_in`` with the epsilon before any data exists.
:meth:`PreparedRelease.run` then applies it to the collected frame, once.

**What is released.** Every cell of every statistic with its noisy value, a post-processed display value and
a 95% interval: raw noisy integers for counts, sums, histogram and lorenz bins (which may be negative), with
an analytic integer-Laplace interval (``lorenz_sum`` cells: the noisy offset-sum in yuan, the half-width
scaled by ``w_j / R`` too); the display value clips to what the figure can be (counts at 0; sums at 0 when
the bounds force a sign; offset-sums at 0), and the interval's ends are clamped alike, so the shown value
always lies in the shown interval. Means are ``noisy sum / noisy count`` (undefined where the noisy count is
below 1) with an interval that inverts both noises (:mod:`privacy.inversion`); quantiles invert the noisy
histogram's CDF with a simulated band (:mod:`privacy.intervals`). Gini, income shares and the Lorenz curve
are post-processing of the lorenz cells (:mod:`aggregation.distribution`).

This module is the OpenDP build and its run; the spec, statistic kinds, bin labels and result models are
:mod:`privacy.vocabulary` (no OpenDP), and turning raw outputs into cells is :mod:`privacy.postprocess`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import numpy as np
import opendp.prelude as dp
import polars as pl

from privacy import intervals
from privacy.errors import PrivacyMapExceeded, ReleaseAlreadyRun, ReleaseInputError, SpecError
from privacy.postprocess import (
    BIN_INDEX,
    COUNT,
    HBIN,
    LBIN,
    LOFFSET,
    QBIN,
    SUM,
    Quantity,
    ReleasePostprocessor,
    bins_frame,
    keys_frame,
)
from privacy.vocabulary import (
    FRAME_ROWS_LIMIT,
    LORENZ_RESOLUTION,
    OTHER,
    Histogram,
    Lorenz,
    Quantiles,
    ReleaseResult,
    ReleaseSpec,
    histogram_bin_labels,
    quantiles_share_histogram,
)

__all__ = ["PreparedRelease", "prepare_release"]

# Relative enlargement of every scale: OpenDP rounds its float privacy map outwards, and a scale computed
# as exactly sensitivity/share could otherwise map to one ulp above the share.
SCALE_HEADROOM: Final = 1e-9


def _quantities(spec: ReleaseSpec) -> list[tuple[str, Decimal]]:
    """Names and per-unit sensitivities of the noisy quantities the statistics need, in a fixed order."""
    kinds = {s.kind for s in spec.statistics}
    m = Decimal(spec.d_in)
    out: list[tuple[str, Decimal]] = []
    if kinds & {"count", "mean"}:
        out.append(("count", m))
    if kinds & {"sum", "mean"}:
        out.append(("sum", m * max(abs(spec.lower), abs(spec.upper))))
    if "histogram" in kinds:
        out.append(("histogram", m))
    if "quantiles" in kinds and not quantiles_share_histogram(spec):
        out.append(("quantile_histogram", m))
    if "lorenz" in kinds:
        out.append(("lorenz_count", m))
        out.append(("lorenz_sum", m * LORENZ_RESOLUTION))
    return out


class PreparedRelease:
    """An OpenDP measurement built and privacy-checked for one spec; :meth:`run` applies it once."""

    def __init__(
        self,
        spec: ReleaseSpec,
        quantities: Sequence[Quantity],
        measurements: Sequence[tuple[str, dp.Measurement]],
        compositor: dp.Measurement,
        epsilon: Decimal,
        input_columns: Sequence[str],
        bin_edges: Mapping[str, tuple[int, ...]],
        lorenz_edges: tuple[int, ...] | None = None,
    ) -> None:
        self.spec = spec
        self.quantities = {q.name: q for q in quantities}
        self._measurements = list(measurements)
        self._compositor = compositor
        self.epsilon = epsilon
        self._input_columns = list(input_columns)
        self._bin_edges = dict(bin_edges)
        self._lorenz_edges = lorenz_edges
        self._lock = threading.Lock()
        self._used = False
        self._postprocessor = ReleasePostprocessor(spec, self.quantities, epsilon)

    @property
    def scales(self) -> dict[str, float]:
        """The noise scale OpenDP uses for each quantity."""
        return {name: q.scale for name, q in self.quantities.items()}

    def run(self, frame: pl.DataFrame, *, rng: np.random.Generator | None = None) -> ReleaseResult:
        """Release every cell of every statistic. Draws OpenDP's noise once; a second call is refused.

        ``rng`` only seeds the interval simulation (post-processing), never the release noise.
        """
        data = self._input(frame)
        with self._lock:
            if self._used:
                raise ReleaseAlreadyRun(
                    "this prepared release has already drawn its noise; re-serve the stored result"
                )
            self._used = True
        queryable = self._compositor(data.lazy())
        outputs = {name: queryable(meas).collect() for name, meas in self._measurements}
        return self._postprocessor.to_result(outputs, rng)

    def _input(self, frame: pl.DataFrame) -> pl.DataFrame:
        spec = self.spec
        missing = [c for c in [*(g.name for g in spec.groups), spec.measure] if c and c not in frame.columns]
        if missing:
            raise ReleaseInputError(f"the frame lacks the column(s) {missing}")
        exprs: list[pl.Expr] = []
        for group in spec.groups:
            dtype = frame.schema[group.name]
            if not (dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)):
                raise ReleaseInputError(f"group column {group.name!r} must hold strings, not {dtype}")
            col = pl.col(group.name).cast(pl.String)
            exprs.append(
                pl.when(col.is_in(list(group.values))).then(col).otherwise(pl.lit(OTHER)).alias(group.name)
            )
        if spec.measure is not None:
            dtype = frame.schema[spec.measure]
            if not dtype.is_integer():
                raise ReleaseInputError(f"measure {spec.measure!r} must be an integer column, not {dtype}")
            if frame[spec.measure].null_count():
                raise ReleaseInputError(f"measure {spec.measure!r} holds nulls; the caller clamps and fills")
            measure = pl.col(spec.measure).cast(pl.Int64).clip(spec.lower, spec.upper)
            exprs.append(measure.alias(spec.measure))
            # Binning is a row-wise map of the clamped measure: it changes no distance between frames.
            for column, edges in self._bin_edges.items():
                labels = list(histogram_bin_labels(edges))
                exprs.append(
                    measure.cut(list(edges), labels=labels, left_closed=True).cast(pl.String).alias(column)
                )
        data = frame.select(exprs)
        if self._lorenz_edges is not None:
            assert spec.measure is not None
            data = data.with_columns(
                _lorenz_offsets(data[spec.measure], self._lorenz_edges, spec.lower, spec.upper)
            )
        return data.select(self._input_columns)


def _lorenz_offsets(clamped: pl.Series, edges: Sequence[int], lower: int, upper: int) -> pl.Series:
    """Each unit's offset inside its bin, normalised to ``[0, LORENZ_RESOLUTION]`` (a row-wise map)."""
    bounds = intervals.histogram_boundaries(edges, lower, upper)
    widths = np.diff(bounds)
    x = clamped.to_numpy().astype(np.float64)
    # Bin j holds e_{j-1} <= x < e_j, the same bins as polars' left-closed cut; the clamped upper bound
    # falls in the last bin.
    j = np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right")
    width = widths[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(width > 0, np.rint((x - bounds[j]) * LORENZ_RESOLUTION / width), 0.0)
    return pl.Series(LOFFSET, np.clip(t, 0, LORENZ_RESOLUTION).astype(np.int64), dtype=pl.Int64)


def _input_domain(
    spec: ReleaseSpec, bin_columns: Sequence[str], int_columns: Sequence[str] = ()
) -> tuple[Any, list[str]]:
    series = [dp.series_domain(g.name, dp.option_domain(dp.atom_domain(T=dp.String))) for g in spec.groups]
    columns = [g.name for g in spec.groups]
    if spec.measure is not None:
        series.append(dp.series_domain(spec.measure, dp.atom_domain(T=dp.i64)))
        columns.append(spec.measure)
    for column in bin_columns:
        series.append(dp.series_domain(column, dp.atom_domain(T=dp.String)))
        columns.append(column)
    for column in int_columns:
        series.append(dp.series_domain(column, dp.atom_domain(T=dp.i64)))
        columns.append(column)
    domain = dp.with_margin(dp.lazyframe_domain(series), dp.polars.Margin(by=[], max_length=FRAME_ROWS_LIMIT))
    return domain, columns


def _grouped(
    schema: Mapping[str, pl.DataType], by: Sequence[str], aggs: Sequence[pl.Expr], keys: pl.DataFrame | None
) -> pl.LazyFrame:
    """A plan over the public key set: group by, then right-join the keys so that empty cells appear."""
    frame = pl.LazyFrame(schema=dict(schema))
    if not by:
        return frame.select(*aggs)
    assert keys is not None
    return frame.group_by(list(by)).agg(*aggs).join(keys.lazy(), on=list(by), how="right", nulls_equal=True)


def prepare_release(
    spec: ReleaseSpec, *, scale_overrides: Mapping[str, float] | None = None
) -> PreparedRelease:
    """Build the OpenDP measurements for ``spec`` once and check OpenDP's privacy map against its epsilon.

    ``scale_overrides`` replaces the computed noise scale of named quantities ("count", "sum", "histogram",
    "quantile_histogram", "lorenz_count", "lorenz_sum"; the last in normalised offset units); it exists for
    tests and for auditors reproducing a release, and it bypasses nothing: the privacy map still decides.
    Raises :class:`PrivacyMapExceeded` before any data is seen.
    """
    dp.enable_features("contrib")
    if pl.get_index_type() != pl.UInt32:
        # A 64-bit row index lets a frame pass OpenDP's margin; refuse before any data rather than after.
        raise SpecError(
            f"this polars build holds frames longer than OpenDP's margin of {FRAME_ROWS_LIMIT} rows; run the "
            "gateway with polars' standard 32-bit row index (polars-runtime-32)"
        )
    overrides = dict(scale_overrides or {})
    needed = _quantities(spec)
    unknown = set(overrides) - {name for name, _ in needed}
    if unknown:
        raise SpecError(f"scale_overrides names quantities this spec does not measure: {sorted(unknown)}")
    share = spec.epsilon / len(needed)
    quantities = []
    for name, sensitivity in needed:
        scale = overrides.get(name, float(sensitivity / share) * (1.0 + SCALE_HEADROOM))
        if not math.isfinite(scale) or scale <= 0:
            raise SpecError(f"the noise scale of {name} must be finite and positive")
        quantities.append(Quantity(name, share, sensitivity, scale))
    by_name = {q.name: q for q in quantities}

    bin_edges: dict[str, tuple[int, ...]] = {}
    hist, quant = spec.statistic("histogram"), spec.statistic("quantiles")
    if "histogram" in by_name and isinstance(hist, Histogram):
        bin_edges[HBIN] = hist.edges
    if "quantile_histogram" in by_name and isinstance(quant, Quantiles):
        bin_edges[QBIN] = quant.edges
    lorenz = spec.statistic("lorenz")
    lorenz_edges = lorenz.edges if isinstance(lorenz, Lorenz) else None
    if lorenz_edges is not None:
        bin_edges[LBIN] = lorenz_edges
    bin_columns = list(bin_edges)
    int_columns = [LOFFSET] if lorenz_edges is not None else []
    domain, columns = _input_domain(spec, bin_columns, int_columns)
    schema: dict[str, pl.DataType] = {g.name: pl.String() for g in spec.groups}
    if spec.measure is not None:
        schema[spec.measure] = pl.Int64()
    for column in bin_columns:
        schema[column] = pl.String()
    for column in int_columns:
        schema[column] = pl.Int64()
    names = [g.name for g in spec.groups]
    keys = keys_frame(spec.groups) if names else None

    plans: list[tuple[str, pl.LazyFrame]] = []
    cell_aggs: list[pl.Expr] = []
    if "count" in by_name:
        cell_aggs.append(dp.len(scale=by_name["count"].scale, signed=True).alias(COUNT))
    if "sum" in by_name:
        assert spec.measure is not None
        bounds = (spec.lower, spec.upper)
        noisy_sum = dp.polars.DPExpr(pl.col(spec.measure)).sum(bounds, scale=by_name["sum"].scale)
        cell_aggs.append(noisy_sum.alias(SUM))
    if cell_aggs:
        plans.append(("cells", _grouped(schema, names, cell_aggs, keys)))
    for name, column in (("histogram", HBIN), ("quantile_histogram", QBIN)):
        if column in bin_edges:
            bins = bins_frame(column, bin_edges[column]).drop(BIN_INDEX)
            bin_keys = bins if keys is None else keys.join(bins, how="cross")
            agg = dp.len(scale=by_name[name].scale, signed=True).alias(COUNT)
            plans.append((name, _grouped(schema, [*names, column], [agg], bin_keys)))
    if lorenz_edges is not None:
        bins = bins_frame(LBIN, lorenz_edges).drop(BIN_INDEX)
        bin_keys = bins if keys is None else keys.join(bins, how="cross")
        aggs = [
            dp.len(scale=by_name["lorenz_count"].scale, signed=True).alias(COUNT),
            dp.polars.DPExpr(pl.col(LOFFSET))
            .sum((0, LORENZ_RESOLUTION), scale=by_name["lorenz_sum"].scale)
            .alias(SUM),
        ]
        plans.append(("lorenz", _grouped(schema, [*names, LBIN], aggs, bin_keys)))

    d_in = spec.d_in
    measurements = [
        (name, dp.m.make_private_lazyframe(domain, dp.symmetric_distance(), dp.max_divergence(), plan))
        for name, plan in plans
    ]
    # OpenDP's adaptive compositor, with each measurement's own privacy map as its budget, gives the map of
    # the whole release and re-checks each measurement when it runs. (make_composition would also give the
    # map, but in 0.16 collecting the OnceFrames it returns crashes the interpreter.)
    d_mids = [float(meas.map(d_in)) for _, meas in measurements]
    compositor = dp.c.make_adaptive_composition(
        domain, dp.symmetric_distance(), dp.max_divergence(), d_in=d_in, d_mids=d_mids
    )
    total = float(compositor.map(d_in))
    # Decimal(float) is the float's exact binary value, so this comparison has no tolerance at all.
    if Decimal(total) > spec.epsilon:
        raise PrivacyMapExceeded(spec.epsilon, Decimal(repr(total)), d_in)
    epsilon = Decimal(repr(total))
    return PreparedRelease(
        spec, quantities, measurements, compositor, epsilon, columns, bin_edges, lorenz_edges
    )
