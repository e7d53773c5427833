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
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import numpy as np
import opendp.prelude as dp
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from privacy import intervals
from privacy.errors import PrivacyMapExceeded, ReleaseAlreadyRun, ReleaseInputError, SpecError
from privacy.neighbours import DEFAULT_NEIGHBOURING, Neighbouring, frame_distance

__all__ = [
    "FRAME_ROWS_LIMIT",
    "LORENZ_RESOLUTION",
    "MAX_SUM_BOUND",
    "OTHER",
    "Count",
    "GroupDomain",
    "Histogram",
    "Lorenz",
    "Mean",
    "PreparedRelease",
    "Quantiles",
    "ReleaseCell",
    "ReleaseResult",
    "ReleaseSpec",
    "Statistic",
    "Sum",
    "histogram_bin_labels",
    "prepare_release",
    "sum_bound_message",
]

OTHER: Final = None
"""The public bucket of every group domain: nulls and values outside the declared values land here."""

CONFIDENCE: Final = intervals.CONFIDENCE

# Relative enlargement of every scale: OpenDP rounds its float privacy map outwards, and a scale computed
# as exactly sensitivity/share could otherwise map to one ulp above the share.
SCALE_HEADROOM: Final = 1e-9

LORENZ_RESOLUTION: Final = 2**20
"""Common integer resolution ``R`` of the Lorenz offsets: a unit's offset in its bin is ``t`` in ``[0, R]``.

Rounding moves a unit's offset by at most ``w_j / (2 R)``, so a bin of a million units is off by at most
half a bin width, below the noise. OpenDP refuses an i64 sum whose bound times the frame-length bound could
overflow: ``FRAME_ROWS_LIMIT * R`` is about 4.5e15, far below ``2**63``.
"""

_I64_MAX: Final = 2**63 - 1

FRAME_ROWS_LIMIT: Final = 2**32 - 1
"""The frame-length bound OpenDP is promised (its margin's ``max_length``): the most rows a polars frame can
hold with the 32-bit row index this project runs on, which is also the largest margin OpenDP 0.16 accepts.
No frame can be longer, so the bound never depends on the data and a release never fails because of the
data's size (a configured, smaller bound would fail exactly when the data passed it, revealing that bit).
"""

MAX_SUM_BOUND: Final = _I64_MAX // FRAME_ROWS_LIMIT
"""The widest ``max(|lower|, |upper|)`` a sum (or mean) may clamp to: beyond it OpenDP cannot rule out an
i64 overflow over ``FRAME_ROWS_LIMIT`` rows and refuses the measurement (2,147,483,648 yuan per unit)."""

assert LORENZ_RESOLUTION * FRAME_ROWS_LIMIT <= _I64_MAX

# Internal column names; group and measure names may not use the prefix.
_PREFIX: Final = "fedgate__"
_COUNT: Final = _PREFIX + "count"
_SUM: Final = _PREFIX + "sum"
_HBIN: Final = _PREFIX + "hbin"
_QBIN: Final = _PREFIX + "qbin"
_LBIN: Final = _PREFIX + "lbin"
_LOFFSET: Final = _PREFIX + "loffset"
_CELL: Final = _PREFIX + "cell"
_BIN_INDEX: Final = _PREFIX + "bin_index"

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class GroupDomain(BaseModel):
    """A group column and its public code list; the released keys are ``values`` plus :data:`OTHER`."""

    model_config = _FROZEN

    name: str
    values: tuple[str, ...]

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name or name.startswith(_PREFIX):
            raise ValueError(f"a group name must be non-empty and not start with {_PREFIX!r}")
        return name

    @field_validator("values")
    @classmethod
    def _values(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        if not values:
            raise ValueError("a group domain needs at least one public value")
        if len(set(values)) != len(values):
            raise ValueError("group domain values must be distinct")
        return values

    @property
    def keys(self) -> tuple[str | None, ...]:
        """The released keys: the declared values, then the public other/null bucket."""
        return (*self.values, OTHER)


class Count(BaseModel):
    """Units per cell."""

    model_config = _FROZEN
    kind: Literal["count"] = "count"


class Sum(BaseModel):
    """Sum of the measure per cell."""

    model_config = _FROZEN
    kind: Literal["sum"] = "sum"


class Mean(BaseModel):
    """Mean of the measure per cell: noisy sum / noisy count (post-processing)."""

    model_config = _FROZEN
    kind: Literal["mean"] = "mean"


def _check_edges(edges: tuple[int, ...]) -> tuple[int, ...]:
    if not edges:
        raise ValueError("at least one bin edge is needed")
    if list(edges) != sorted(set(edges)):
        raise ValueError("bin edges must be strictly increasing")
    return edges


class Histogram(BaseModel):
    """Units per cell x bin over public edges: (-inf, e0), [e0, e1), ..., [ek, +inf)."""

    model_config = _FROZEN
    kind: Literal["histogram"] = "histogram"
    edges: tuple[int, ...]

    _edges = field_validator("edges")(_check_edges)


class Quantiles(BaseModel):
    """Quantiles per cell, from a noisy histogram over public fine ``edges``."""

    model_config = _FROZEN
    kind: Literal["quantiles"] = "quantiles"
    probs: tuple[float, ...]
    edges: tuple[int, ...]

    _edges = field_validator("edges")(_check_edges)

    @field_validator("probs")
    @classmethod
    def _probs(cls, probs: tuple[float, ...]) -> tuple[float, ...]:
        if not probs or any(not 0.0 < p < 1.0 for p in probs):
            raise ValueError("quantile probabilities must lie strictly between 0 and 1")
        return probs


class Lorenz(BaseModel):
    """Units and their income per cell x bin over public ``edges`` (the histogram's bins), for the Gini
    coefficient, income shares and the Lorenz curve; each bin's income noise is sized to its width."""

    model_config = _FROZEN
    kind: Literal["lorenz"] = "lorenz"
    edges: tuple[int, ...]

    _edges = field_validator("edges")(_check_edges)


# "lorenz_sum" names released cells only: it is the second half of the lorenz statistic.
StatKind = Literal["count", "sum", "mean", "histogram", "quantiles", "lorenz", "lorenz_sum"]

Statistic = Annotated[Count | Sum | Mean | Histogram | Quantiles | Lorenz, Field(discriminator="kind")]


class ReleaseSpec(BaseModel):
    """Everything public about one release; validated at construction."""

    model_config = _FROZEN

    groups: tuple[GroupDomain, ...]
    measure: str | None = None
    lower: int = 0
    upper: int = 0
    statistics: tuple[Statistic, ...]
    epsilon: Decimal
    unit_multiplicity: int = Field(default=1, ge=1, description="rows one household can contribute")
    neighbouring: Neighbouring = Field(
        default=DEFAULT_NEIGHBOURING, description="the neighbour relation the epsilon is guaranteed under"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ReleaseSpec:
        if not self.epsilon.is_finite() or self.epsilon <= 0:
            raise ValueError("epsilon must be a finite positive number")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError("group names must be distinct")
        if not self.statistics:
            raise ValueError("at least one statistic is needed")
        kinds = [s.kind for s in self.statistics]
        if len(set(kinds)) != len(kinds):
            raise ValueError("each statistic kind may appear once")
        needs_measure = {"sum", "mean", "histogram", "quantiles", "lorenz"} & set(kinds)
        if needs_measure and self.measure is None:
            raise ValueError(f"statistics {sorted(needs_measure)} need a measure column")
        if self.measure is not None:
            if self.measure in names or self.measure.startswith(_PREFIX) or not self.measure:
                raise ValueError("the measure must be a non-empty name distinct from the group names")
            if self.lower >= self.upper:
                raise ValueError("the measure bounds need lower < upper")
        for stat in self.statistics:
            if isinstance(stat, Histogram | Quantiles | Lorenz) and not (
                self.lower <= stat.edges[0] and stat.edges[-1] <= self.upper
            ):
                raise ValueError(f"{stat.kind} edges must lie within [lower, upper]")
        if {"sum", "mean"} & set(kinds) and max(abs(self.lower), abs(self.upper)) > MAX_SUM_BOUND:
            raise ValueError(sum_bound_message(self.lower, self.upper))
        return self

    @property
    def d_in(self) -> int:
        """The symmetric distance between neighbouring frames, where OpenDP's privacy map is checked."""
        return frame_distance(self.neighbouring, self.unit_multiplicity)

    def statistic(self, kind: str) -> Statistic | None:
        """The statistic of this kind, if asked for."""
        return next((s for s in self.statistics if s.kind == kind), None)


def sum_bound_message(lower: int, upper: int) -> str:
    """Why bounds this wide cannot be summed, and the fix (one text for the planner and the release)."""
    return (
        f"a sum or mean clamps each unit to [{lower}, {upper}], wider than OpenDP can sum without a possible "
        f"overflow over {FRAME_ROWS_LIMIT} rows; keep both bounds within ±{MAX_SUM_BOUND}"
    )


class ReleaseCell(BaseModel):
    """One released figure: a cell (group values), a statistic, optionally a bin or a probability.

    ``value`` is the raw output (noisy integer for count, sum, histogram and lorenz; float for mean,
    quantile and lorenz_sum, the noisy offset-sum of a bin in the measure's unit; None where undefined);
    ``display`` is the post-processed value to show; ``low``/``high`` is the interval.
    """

    model_config = _FROZEN

    groups: dict[str, str | None]
    statistic: StatKind
    bin: str | None = None
    prob: float | None = None
    value: int | float | None
    display: int | float | None
    low: int | float | None
    high: int | float | None


class ReleaseResult(BaseModel):
    """A released table with its privacy accounting; stored and re-served as JSON."""

    model_config = _FROZEN

    group_names: tuple[str, ...]
    measure: str | None
    lower: int
    upper: int
    epsilon: Decimal = Field(description="OpenDP's privacy map of the whole release at d_in")
    epsilon_allowed: Decimal
    unit_multiplicity: int
    neighbouring: Neighbouring = Field(
        default=DEFAULT_NEIGHBOURING,
        description="the neighbour relation epsilon holds under: add_remove_household or change_household",
    )
    d_in: int = Field(description="rows two neighbouring frames may differ by; epsilon is the map at it")
    confidence: float
    scales: dict[str, float]
    epsilon_shares: dict[str, Decimal]
    methods: dict[str, str]
    cells: tuple[ReleaseCell, ...]
    lorenz_resolution: int | None = Field(
        default=None,
        description="R of a lorenz release: bin j's lorenz_sum scale in yuan is scales['lorenz_sum'] w_j / R",
    )

    @model_validator(mode="before")
    @classmethod
    def _stored_before_relations(cls, data: Any) -> Any:
        # Results stored before the relation was recorded were all add/remove, mapped at the multiplicity.
        if isinstance(data, dict) and "d_in" not in data and "unit_multiplicity" in data:
            return {**data, "d_in": data["unit_multiplicity"]}
        return data

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON types only (Decimals as strings), for storage and for the API."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> ReleaseResult:
        """Inverse of :meth:`to_json_dict`."""
        return cls.model_validate(dict(data))


def histogram_bin_labels(edges: Sequence[int]) -> tuple[str, ...]:
    """Labels of the bins ``<e0``, ``[e0,e1)``, ..., ``>=ek``."""
    inner = [f"[{a},{b})" for a, b in itertools.pairwise(edges)]
    return (f"<{edges[0]}", *inner, f">={edges[-1]}")


class _Quantity:
    """One noisy quantity: its share of epsilon, per-unit sensitivity and noise scale."""

    def __init__(self, name: str, share: Decimal, sensitivity: Decimal, scale: float) -> None:
        self.name = name
        self.share = share
        self.sensitivity = sensitivity
        self.scale = scale


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
    if "quantiles" in kinds and not _quantiles_share_histogram(spec):
        out.append(("quantile_histogram", m))
    if "lorenz" in kinds:
        out.append(("lorenz_count", m))
        out.append(("lorenz_sum", m * LORENZ_RESOLUTION))
    return out


def _quantiles_share_histogram(spec: ReleaseSpec) -> bool:
    hist, quant = spec.statistic("histogram"), spec.statistic("quantiles")
    return isinstance(hist, Histogram) and isinstance(quant, Quantiles) and hist.edges == quant.edges


def _keys_frame(groups: Sequence[GroupDomain]) -> pl.DataFrame:
    schema = {g.name: pl.String for g in groups}
    rows = list(itertools.product(*(g.keys for g in groups)))
    return pl.DataFrame(rows, schema=schema, orient="row")


def _bins_frame(column: str, edges: Sequence[int]) -> pl.DataFrame:
    labels = histogram_bin_labels(edges)
    return pl.DataFrame(
        {column: list(labels), _BIN_INDEX: list(range(len(labels)))},
        schema={column: pl.String, _BIN_INDEX: pl.Int64},
    )


class PreparedRelease:
    """An OpenDP measurement built and privacy-checked for one spec; :meth:`run` applies it once."""

    def __init__(
        self,
        spec: ReleaseSpec,
        quantities: Sequence[_Quantity],
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
        self._keys = _keys_frame(spec.groups).with_row_index(_CELL)

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
        return self._postprocess(outputs, rng)

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

    def _cells_table(self, output: pl.DataFrame, bins: pl.DataFrame | None) -> pl.DataFrame:
        """OpenDP's output joined back to the public keys in their fixed order (post-processing)."""
        names = [g.name for g in self.spec.groups]
        keys = self._keys if bins is None else self._keys.join(bins, how="cross")
        on = names + ([bins.columns[0]] if bins is not None else [])
        if not on:
            return output.with_row_index(_CELL)
        order = [_CELL] + ([_BIN_INDEX] if bins is not None else [])
        return keys.join(output, on=on, how="left", nulls_equal=True).sort(order)

    def _postprocess(
        self, outputs: Mapping[str, pl.DataFrame], rng: np.random.Generator | None
    ) -> ReleaseResult:
        spec = self.spec
        generator = rng if rng is not None else np.random.default_rng()
        names = [g.name for g in spec.groups]
        group_rows: list[dict[str, str | None]] = (
            [dict(zip(names, row, strict=True)) for row in self._keys.select(names).iter_rows()]
            if names
            else [{}]
        )
        cells: list[ReleaseCell] = []
        methods: dict[str, str] = {}
        confidence = CONFIDENCE

        table = self._cells_table(outputs["cells"], None) if "cells" in outputs else None
        counts = table[_COUNT].to_numpy() if table is not None and _COUNT in table.columns else None
        sums = table[_SUM].to_numpy() if table is not None and _SUM in table.columns else None

        def direct(stat: StatKind, values: np.ndarray, quantity: _Quantity, sign: int) -> None:
            # sign: +1 if the true figure cannot be negative, -1 if it cannot be positive, 0 if either.
            width = intervals.discrete_laplace_half_width(quantity.scale, confidence)
            for groups, raw in zip(group_rows, values.tolist(), strict=True):
                v = int(raw)
                shown, low, high = _shown(v, width, sign)
                cells.append(
                    ReleaseCell(groups=groups, statistic=stat, value=v, display=shown, low=low, high=high)
                )
            methods[stat] = _direct_note(stat, quantity, spec, width, sign)

        sum_sign = 1 if spec.lower >= 0 else -1 if spec.upper <= 0 else 0
        for stat in spec.statistics:
            if isinstance(stat, Count):
                assert counts is not None
                direct("count", counts, self.quantities["count"], 1)
            elif isinstance(stat, Sum):
                assert sums is not None
                direct("sum", sums, self.quantities["sum"], sum_sign)
            elif isinstance(stat, Mean):
                assert counts is not None and sums is not None
                est = intervals.mean_from_noisy(
                    sums,
                    self.quantities["sum"].scale,
                    counts,
                    self.quantities["count"].scale,
                    lower=spec.lower,
                    upper=spec.upper,
                    confidence=confidence,
                    rng=generator,
                )
                for i, groups in enumerate(group_rows):
                    value = _float_or_none(est.value[i])
                    cells.append(
                        ReleaseCell(
                            groups=groups,
                            statistic="mean",
                            value=value,
                            display=value,
                            low=float(est.low[i]),
                            high=float(est.high[i]),
                        )
                    )
                methods["mean"] = _mean_note(self.quantities, spec)
            elif isinstance(stat, Histogram):
                quantity = self.quantities["histogram"]
                matrix = self._matrix(outputs["histogram"], _HBIN, stat.edges)
                width = intervals.discrete_laplace_half_width(quantity.scale, confidence)
                labels = histogram_bin_labels(stat.edges)
                for groups, row in zip(group_rows, matrix.tolist(), strict=True):
                    for label, raw in zip(labels, row, strict=True):
                        v = int(raw)
                        shown, low, high = _shown(v, width, 1)
                        cells.append(
                            ReleaseCell(
                                groups=groups,
                                statistic="histogram",
                                bin=label,
                                value=v,
                                display=shown,
                                low=low,
                                high=high,
                            )
                        )
                methods["histogram"] = _direct_note("histogram", quantity, spec, width, 1)
            elif isinstance(stat, Quantiles):
                shared = _quantiles_share_histogram(spec)
                name = "histogram" if shared else "quantile_histogram"
                quantity = self.quantities[name]
                matrix = self._matrix(outputs[name], _HBIN if shared else _QBIN, stat.edges)
                est = intervals.quantiles_from_noisy_histogram(
                    matrix,
                    quantity.scale,
                    edges=stat.edges,
                    lower=spec.lower,
                    upper=spec.upper,
                    probs=stat.probs,
                    confidence=confidence,
                    rng=generator,
                )
                for i, groups in enumerate(group_rows):
                    for j, prob in enumerate(stat.probs):
                        value = _float_or_none(est.value[i, j])
                        cells.append(
                            ReleaseCell(
                                groups=groups,
                                statistic="quantiles",
                                prob=prob,
                                value=value,
                                display=value,
                                low=float(est.low[i, j]),
                                high=float(est.high[i, j]),
                            )
                        )
                methods["quantiles"] = _quantile_note(quantity, shared)
            elif isinstance(stat, Lorenz):
                cells.extend(self._lorenz_cells(outputs["lorenz"], stat, group_rows, confidence))
                methods["lorenz"], methods["lorenz_sum"] = _lorenz_notes(self.quantities, spec, confidence)
        return ReleaseResult(
            group_names=tuple(names),
            measure=spec.measure,
            lower=spec.lower,
            upper=spec.upper,
            epsilon=self.epsilon,
            epsilon_allowed=spec.epsilon,
            unit_multiplicity=spec.unit_multiplicity,
            neighbouring=spec.neighbouring,
            d_in=spec.d_in,
            confidence=confidence,
            scales=self.scales,
            epsilon_shares={name: q.share for name, q in self.quantities.items()},
            methods=methods,
            cells=tuple(cells),
            lorenz_resolution=LORENZ_RESOLUTION if spec.statistic("lorenz") is not None else None,
        )

    def _lorenz_cells(
        self,
        output: pl.DataFrame,
        stat: Lorenz,
        group_rows: Sequence[dict[str, str | None]],
        confidence: float,
    ) -> list[ReleaseCell]:
        """A count cell and a yuan offset-sum cell per cell x bin, with analytic intervals."""
        spec = self.spec
        counts = self._matrix(output, _LBIN, stat.edges)
        offsets = self._matrix(output, _LBIN, stat.edges, _SUM)
        count_width = intervals.discrete_laplace_half_width(self.quantities["lorenz_count"].scale, confidence)
        offset_width = intervals.discrete_laplace_half_width(self.quantities["lorenz_sum"].scale, confidence)
        # Yuan per normalised offset unit, bin by bin: the noise in yuan is proportional to the bin width.
        per_unit = (
            np.diff(intervals.histogram_boundaries(stat.edges, spec.lower, spec.upper)) / LORENZ_RESOLUTION
        ).tolist()
        labels = histogram_bin_labels(stat.edges)
        out: list[ReleaseCell] = []
        for groups, count_row, offset_row in zip(group_rows, counts.tolist(), offsets.tolist(), strict=True):
            for label, raw_count, raw_offset, unit in zip(
                labels, count_row, offset_row, per_unit, strict=True
            ):
                n = int(raw_count)
                shown, low, high = _shown(n, count_width, 1)
                out.append(
                    ReleaseCell(
                        groups=groups,
                        statistic="lorenz",
                        bin=label,
                        value=n,
                        display=shown,
                        low=low,
                        high=high,
                    )
                )
                # A zero-width bin releases exactly 0 (never -0.0): its offsets are all 0 by definition.
                yuan = float(int(raw_offset) * unit) if unit > 0 else 0.0
                half = float(offset_width * unit)
                out.append(
                    ReleaseCell(
                        groups=groups,
                        statistic="lorenz_sum",
                        bin=label,
                        value=yuan,
                        display=max(yuan, 0.0),
                        low=max(yuan - half, 0.0),
                        high=max(yuan + half, 0.0),
                    )
                )
        return out

    def _matrix(
        self, output: pl.DataFrame, column: str, edges: Sequence[int], value: str = _COUNT
    ) -> np.ndarray:
        """Noisy per-bin values (counts by default) as a (cells, bins) matrix in the public key order."""
        bins = _bins_frame(column, edges)
        table = self._cells_table(output, bins)
        n_bins = bins.height
        return table[value].to_numpy().reshape(-1, n_bins)


def _shown(raw: int, width: int, sign: int) -> tuple[int, int, int]:
    """Display value and interval of a direct cell, clamped alike to the sign the figure must have
    (``sign`` +1: at least 0, -1: at most 0, 0: either): clamping drops only impossible values, so the
    raw interval's coverage is kept and the shown value lies inside the shown interval."""
    lower, upper = (0, None) if sign > 0 else (None, 0) if sign < 0 else (None, None)

    def clamp(x: int) -> int:
        return max(x, lower) if lower is not None else min(x, upper) if upper is not None else x

    return clamp(raw), clamp(raw - width), clamp(raw + width)


def _float_or_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _direct_note(stat: StatKind, q: _Quantity, spec: ReleaseSpec, width: int, sign: int) -> str:
    what = {
        "count": "units per cell: OpenDP dp.len(signed=True)",
        "sum": f"sum of {spec.measure} clamped to [{spec.lower}, {spec.upper}] per cell: OpenDP .dp.sum",
        "histogram": f"units per cell and bin of {spec.measure}: OpenDP dp.len(signed=True) per bin",
    }[stat]
    shown = {
        1: "display = max(raw, 0), interval ends clamped at 0 alike (post-processing)",
        -1: "display = min(raw, 0), interval ends clamped at 0 alike (post-processing)",
        0: "display = raw value",
    }[sign]
    return (
        f"{what}, integer Laplace noise of scale {q.scale:.6g} (epsilon share {q.share}, sensitivity "
        f"{q.sensitivity} between neighbouring frames); {CONFIDENCE:.0%} interval = raw ± {width}, the "
        f"analytic integer-Laplace half-width; {shown}"
    )


def _mean_note(quantities: Mapping[str, _Quantity], spec: ReleaseSpec) -> str:
    return (
        f"noisy sum / noisy count (integer Laplace scales {quantities['sum'].scale:.6g} and "
        f"{quantities['count'].scale:.6g}), "
        f"clipped to [{spec.lower}, {spec.upper}], undefined (null) where the noisy count is below 1; "
        f"{CONFIDENCE:.0%} interval by inverting the known noise of both: every mean m in the bounds for "
        f"which sum - m x count is within that noise's {CONFIDENCE:.0%} range"
    )


def _quantile_note(q: _Quantity, shared: bool) -> str:
    source = "the released histogram" if shared else "a noisy histogram over the public fine edges"
    return (
        f"inverse of the noisy CDF of {source} (negative bins clipped to 0, linear inside a bin; integer "
        f"Laplace scale {q.scale:.6g}); {CONFIDENCE:.0%} interval: the simulated pointwise CDF band inverted "
        f"at the bin edges, [F_hi^-1(p), F_lo^-1(p)]"
    )


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
    return pl.Series(_LOFFSET, np.clip(t, 0, LORENZ_RESOLUTION).astype(np.int64), dtype=pl.Int64)


def _lorenz_notes(
    quantities: Mapping[str, _Quantity], spec: ReleaseSpec, confidence: float
) -> tuple[str, str]:
    count, offsets = quantities["lorenz_count"], quantities["lorenz_sum"]
    count_width = intervals.discrete_laplace_half_width(count.scale, confidence)
    offset_width = intervals.discrete_laplace_half_width(offsets.scale, confidence)
    r = LORENZ_RESOLUTION
    count_note = (
        f"units per cell and bin of {spec.measure} clamped to [{spec.lower}, {spec.upper}]: OpenDP "
        f"dp.len(signed=True) per bin, integer Laplace noise of scale {count.scale:.6g} (epsilon share "
        f"{count.share}, sensitivity {count.sensitivity} between neighbouring frames); {confidence:.0%} "
        f"interval = raw ± {count_width}, the analytic integer-Laplace half-width; display = max(raw, 0), "
        f"interval clamped at 0 alike (post-processing). "
        f"Released with lorenz_sum, the bins' incomes, for the Gini coefficient, income shares and the "
        f"Lorenz curve (aggregation.distribution)"
    )
    sum_note = (
        f"per cell and bin j with boundaries [b_j, b_j + w_j]: the sum of the units' offsets x - b_j, in the "
        f"measure's unit. Each offset is normalised to t = round((x - b_j) * {r} / w_j) in [0, {r}] and one "
        f"OpenDP .dp.sum of t with bounds (0, {r}) adds integer Laplace noise of scale {offsets.scale:.6g} "
        f"(epsilon share {offsets.share}, sensitivity {offsets.sensitivity} between neighbouring frames); "
        f"value = noisy t-sum * w_j / {r}, so bin j's noise scale is {offsets.scale:.6g} * w_j / {r}, "
        f"proportional to the bin's "
        f"width. {confidence:.0%} interval = value ± {offset_width} * w_j / {r} (the analytic "
        f"integer-Laplace half-width, scaled); display = max(value, 0), interval clamped at 0 alike. A bin's "
        f"income is count * b_j + offset-sum; rounding moves each unit's offset by at most w_j / {2 * r}"
    )
    return count_note, sum_note


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
        quantities.append(_Quantity(name, share, sensitivity, scale))
    by_name = {q.name: q for q in quantities}

    bin_edges: dict[str, tuple[int, ...]] = {}
    hist, quant = spec.statistic("histogram"), spec.statistic("quantiles")
    if "histogram" in by_name and isinstance(hist, Histogram):
        bin_edges[_HBIN] = hist.edges
    if "quantile_histogram" in by_name and isinstance(quant, Quantiles):
        bin_edges[_QBIN] = quant.edges
    lorenz = spec.statistic("lorenz")
    lorenz_edges = lorenz.edges if isinstance(lorenz, Lorenz) else None
    if lorenz_edges is not None:
        bin_edges[_LBIN] = lorenz_edges
    bin_columns = list(bin_edges)
    int_columns = [_LOFFSET] if lorenz_edges is not None else []
    domain, columns = _input_domain(spec, bin_columns, int_columns)
    schema: dict[str, pl.DataType] = {g.name: pl.String() for g in spec.groups}
    if spec.measure is not None:
        schema[spec.measure] = pl.Int64()
    for column in bin_columns:
        schema[column] = pl.String()
    for column in int_columns:
        schema[column] = pl.Int64()
    names = [g.name for g in spec.groups]
    keys = _keys_frame(spec.groups) if names else None

    plans: list[tuple[str, pl.LazyFrame]] = []
    cell_aggs: list[pl.Expr] = []
    if "count" in by_name:
        cell_aggs.append(dp.len(scale=by_name["count"].scale, signed=True).alias(_COUNT))
    if "sum" in by_name:
        assert spec.measure is not None
        bounds = (spec.lower, spec.upper)
        noisy_sum = dp.polars.DPExpr(pl.col(spec.measure)).sum(bounds, scale=by_name["sum"].scale)
        cell_aggs.append(noisy_sum.alias(_SUM))
    if cell_aggs:
        plans.append(("cells", _grouped(schema, names, cell_aggs, keys)))
    for name, column in (("histogram", _HBIN), ("quantile_histogram", _QBIN)):
        if column in bin_edges:
            bins = _bins_frame(column, bin_edges[column]).drop(_BIN_INDEX)
            bin_keys = bins if keys is None else keys.join(bins, how="cross")
            agg = dp.len(scale=by_name[name].scale, signed=True).alias(_COUNT)
            plans.append((name, _grouped(schema, [*names, column], [agg], bin_keys)))
    if lorenz_edges is not None:
        bins = _bins_frame(_LBIN, lorenz_edges).drop(_BIN_INDEX)
        bin_keys = bins if keys is None else keys.join(bins, how="cross")
        aggs = [
            dp.len(scale=by_name["lorenz_count"].scale, signed=True).alias(_COUNT),
            dp.polars.DPExpr(pl.col(_LOFFSET))
            .sum((0, LORENZ_RESOLUTION), scale=by_name["lorenz_sum"].scale)
            .alias(_SUM),
        ]
        plans.append(("lorenz", _grouped(schema, [*names, _LBIN], aggs, bin_keys)))

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
