"""Differentially private releases over public cells, through OpenDP measurements only.

The noise is added to the **exact per-cell aggregates** of a frame with one row per privacy unit (or, for
person queries, one row per person with at most ``unit_multiplicity`` persons per household):
:mod:`privacy.cells` says which aggregate tables a spec needs and how each unit row maps to its cell, and an
engine (:mod:`aggregation.engines`: Polars in the gateway, or Spark) computes them wherever the rows live.
This module never draws noise itself: each noisy quantity is one OpenDP integer Laplace measurement
(``make_laplace`` over a vector of i64 aggregates with the L1 distance) under pure epsilon-DP. ``d_in`` is the
distance between the frames of two neighbouring federations (:mod:`privacy.neighbours`): ``unit_multiplicity``
rows when one household is added or removed, twice that when one household's records change; each row lies
in exactly one cell, so a table's L1 sensitivity is ``d_in`` times what one row adds to it.

**Public cells.** The cells are the cross product of the group domains. Each domain is its declared values
plus one more public key, ``None`` (:data:`OTHER`): nulls and values outside the code list are mapped to it
before the cells are aggregated (a row-wise map, so it changes no distance). Every cell of the public key
set is aggregated (0 where no unit falls in it), so empty cells are released with noise like any other and
the presence of a rare key is never revealed.

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

**Built once, checked before data.** :func:`prepare_release` builds one OpenDP measurement per quantity
(with explicit scales; no scale search), maps each at its table's L1 sensitivity and adds the maps up
exactly (sequential composition) against the epsilon before any data exists. :meth:`PreparedRelease.run_cells`
then applies them to the cells, once; :meth:`PreparedRelease.run` computes the cells of an in-memory frame
first.

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
from typing import Final

import numpy as np
import opendp.prelude as dp
import polars as pl

from privacy.cells import QUANTITY_CELLS, CellLayout, quantities
from privacy.errors import PrivacyMapExceeded, ReleaseAlreadyRun, ReleaseInputError, SpecError
from privacy.postprocess import Quantity, ReleasePostprocessor
from privacy.vocabulary import ReleaseResult, ReleaseSpec

__all__ = ["PreparedRelease", "prepare_release"]

# Relative enlargement of every scale: OpenDP rounds its float privacy map outwards, and a scale computed
# as exactly sensitivity/share could otherwise map to one ulp above the share.
SCALE_HEADROOM: Final = 1e-9


class PreparedRelease:
    """OpenDP measurements built and privacy-checked for one spec; :meth:`run_cells` applies them once."""

    def __init__(
        self,
        spec: ReleaseSpec,
        quantities: Sequence[Quantity],
        measurements: Mapping[str, dp.Measurement],
        epsilon: Decimal,
    ) -> None:
        self.spec = spec
        self.quantities = {q.name: q for q in quantities}
        self._measurements = dict(measurements)
        self.epsilon = epsilon
        self.layout = CellLayout(spec)
        self._lock = threading.Lock()
        self._used = False
        self._postprocessor = ReleasePostprocessor(spec, self.quantities, epsilon)

    @property
    def scales(self) -> dict[str, float]:
        """The noise scale OpenDP uses for each quantity."""
        return {name: q.scale for name, q in self.quantities.items()}

    def run(self, frame: pl.DataFrame, *, rng: np.random.Generator | None = None) -> ReleaseResult:
        """Release from a frame with one row per unit: its exact cells (in memory), then :meth:`run_cells`.

        ``rng`` only seeds the interval simulation (post-processing), never the release noise.
        """
        self.layout.check_schema(frame.schema)
        if self.spec.measure is not None and frame[self.spec.measure].null_count():
            raise ReleaseInputError(f"measure {self.spec.measure!r} holds nulls; the caller clamps and fills")
        layout = self.layout
        partial = {
            name: [agg.collect()] for name, agg in layout.aggregate(layout.unit_rows(frame.lazy())).items()
        }
        return self.run_cells(layout.complete(partial), rng=rng)

    def run_cells(
        self, cells: Mapping[str, pl.DataFrame], *, rng: np.random.Generator | None = None
    ) -> ReleaseResult:
        """Release every cell of every statistic from the exact aggregates (:meth:`CellLayout.complete`'s
        tables, every public cell in order). Draws OpenDP's noise once; a second call is refused."""
        layout = self.layout
        for table in layout.tables:
            given = cells.get(table.name)
            if given is None or given.height != max(1, layout.keys(table).height):
                raise ReleaseInputError(f"the aggregates of {table.name!r} do not cover every public cell")
        with self._lock:
            if self._used:
                raise ReleaseAlreadyRun(
                    "this prepared release has already drawn its noise; re-serve the stored result"
                )
            self._used = True
        outputs = {name: frame.clone() for name, frame in cells.items()}
        for name, meas in self._measurements.items():
            where, column = QUANTITY_CELLS[name]
            exact = cells[where][column].cast(pl.Int64).to_list()
            noisy = meas(exact)
            outputs[where] = outputs[where].with_columns(pl.Series(column, noisy, dtype=pl.Int64))
        return self._postprocessor.to_result(outputs, rng)


def _vector_laplace(scale: float) -> dp.Measurement:
    """OpenDP's integer Laplace on a vector of exact aggregates, with its L1 privacy map."""
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l1_distance(T=dp.i64), scale)


def prepare_release(
    spec: ReleaseSpec, *, scale_overrides: Mapping[str, float] | None = None
) -> PreparedRelease:
    """Build the OpenDP measurements for ``spec`` once and check OpenDP's privacy map against its epsilon.

    Each noisy quantity is one OpenDP integer Laplace measurement over its table of exact per-cell
    aggregates (:mod:`privacy.cells`), mapped at the table's L1 sensitivity; the release's loss is the
    sum of those maps (sequential composition, added exactly as the Decimal values of OpenDP's floats),
    which must be at most the spec's epsilon.

    ``scale_overrides`` replaces the computed noise scale of named quantities ("count", "sum", "histogram",
    "quantile_histogram", "lorenz_count", "lorenz_sum"; the last in normalised offset units); it exists for
    tests and for auditors reproducing a release, and it bypasses nothing: the privacy map still decides.
    Raises :class:`PrivacyMapExceeded` before any data is seen.
    """
    dp.enable_features("contrib")
    overrides = dict(scale_overrides or {})
    needed = quantities(spec)
    unknown = set(overrides) - {name for name, _ in needed}
    if unknown:
        raise SpecError(f"scale_overrides names quantities this spec does not measure: {sorted(unknown)}")
    share = spec.epsilon / len(needed)
    built: list[Quantity] = []
    measurements: dict[str, dp.Measurement] = {}
    total = Decimal(0)
    for name, sensitivity in needed:
        scale = overrides.get(name, float(sensitivity / share) * (1.0 + SCALE_HEADROOM))
        if not math.isfinite(scale) or scale <= 0:
            raise SpecError(f"the noise scale of {name} must be finite and positive")
        built.append(Quantity(name, share, sensitivity, scale))
        meas = _vector_laplace(scale)
        # Decimal(float) is the float's exact binary value, so the sum and the comparison have no tolerance.
        total += Decimal(float(meas.map(int(sensitivity))))
        measurements[name] = meas
    if total > spec.epsilon:
        raise PrivacyMapExceeded(spec.epsilon, Decimal(repr(float(total))), spec.d_in)
    # Reported in the float's short form; the exact total was checked, so the spec's epsilon bounds it.
    return PreparedRelease(spec, built, measurements, min(Decimal(repr(float(total))), spec.epsilon))
