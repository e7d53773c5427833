"""The release vocabulary: what a release is asked for and what it gives back, without OpenDP.

Group domains, statistic kinds, :class:`ReleaseSpec`, bin labels and the released :class:`ReleaseResult`, with
the public bounds every release keeps to. This module imports neither OpenDP nor polars, so the planner and
the indicator tables (:mod:`aggregation`) can name bins and read results without loading OpenDP;
:mod:`privacy.release` builds the OpenDP measurement and :mod:`privacy.postprocess` turns its raw output
into released cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from privacy.neighbours import DEFAULT_NEIGHBOURING, Neighbouring, frame_distance

__all__ = [
    "COLUMN_PREFIX",
    "FRAME_ROWS_LIMIT",
    "LORENZ_RESOLUTION",
    "MAX_SUM_BOUND",
    "OTHER",
    "Count",
    "GroupDomain",
    "Histogram",
    "Lorenz",
    "Mean",
    "Quantiles",
    "ReleaseCell",
    "ReleaseResult",
    "ReleaseSpec",
    "StatKind",
    "Statistic",
    "Sum",
    "histogram_bin_labels",
    "quantiles_share_histogram",
    "sum_bound_message",
]

OTHER: Final = None
"""The public bucket of every group domain: nulls and values outside the declared values land here."""

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

# Internal column names of a release's frames; group and measure names may not use the prefix.
COLUMN_PREFIX: Final = "fedgate__"

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class GroupDomain(BaseModel):
    """A group column and its public code list; the released keys are ``values`` plus :data:`OTHER`."""

    model_config = _FROZEN

    name: str
    values: tuple[str, ...]

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name or name.startswith(COLUMN_PREFIX):
            raise ValueError(f"a group name must be non-empty and not start with {COLUMN_PREFIX!r}")
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
            if self.measure in names or self.measure.startswith(COLUMN_PREFIX) or not self.measure:
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


def quantiles_share_histogram(spec: ReleaseSpec) -> bool:
    """Whether the quantiles read the released histogram (equal edges), so it is measured once."""
    hist, quant = spec.statistic("histogram"), spec.statistic("quantiles")
    return isinstance(hist, Histogram) and isinstance(quant, Quantiles) and hist.edges == quant.edges
