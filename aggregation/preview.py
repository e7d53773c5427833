"""Accuracy before spending: the expected 95% half-width of every statistic of a query, from public
parameters only.

A preview reads no data, stores nothing and charges nothing. It takes the planned query and the OpenDP
release the run would build (:func:`privacy.release.prepare_release` is the one home of the noise scales:
the preview builds the very same measurement, privacy map checked, and never applies it), and turns each
noisy quantity's public scale into the half-width the release will state:

- counts, sums, histogram and lorenz bins: the analytic integer-Laplace half-width, exactly the ``±`` of
  every cell of the release that follows (clamped at 0 there where the figure cannot be negative);
- means: ``(k_sum + B k_count) / n`` for a cell of ``n`` units (``B`` the larger absolute bound), shown
  for a few cell sizes since ``n`` is data;
- quantiles: the rank error, the half-width of a cumulative count over half the bins: a quantile of a
  cell is located to within that many units of rank;
- lorenz offset-sums: per bin, in the measure's unit (the scale times the bin's width over R).

Warnings name what the analyst can change: bounds wider than the datasets' declared bounds allow (the
noise of a sum is sized to the bound), or cells whose counts the noise swamps at this epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aggregation.planner import Plan
from aggregation.query import HOUSEHOLD_MEMBERS, Measure
from connectors.config import Unit
from connectors.protocol import ConnectorSchema
from privacy.intervals import CONFIDENCE, discrete_laplace_half_width, histogram_boundaries
from privacy.inversion import noise_half_width
from privacy.vocabulary import (
    LORENZ_RESOLUTION,
    Histogram,
    Lorenz,
    Quantiles,
    ReleaseSpec,
    histogram_bin_labels,
)

__all__ = ["Preview", "StatisticAccuracy", "preview"]

MEAN_CELL_SIZES = (100, 1_000, 10_000)
"""Cell sizes at which a mean's expected half-width is shown (the true sizes are data)."""

SWAMPED_SHARE = Decimal("0.1")
"""A cell needs about half-width / this many units for its count to be within ±10%."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class StatisticAccuracy(BaseModel):
    """The expected 95% half-width of one released quantity, per cell (and bin)."""

    model_config = _FROZEN

    statistic: str = Field(description="the statistic")
    quantity: str = Field(description="the noisy quantity released for it, e.g. count, sum / count")
    scale: float = Field(description="its noise scale")
    epsilon_share: str = Field(description="its share of the query's epsilon")
    half_width: float | None = Field(
        description="± per cell (per cell and bin for binned quantities; the widest bin for lorenz "
        "offset-sums)"
    )
    unit: str = Field(description="the unit of the half-width, e.g. households or yuan")
    per: str = Field(description="what one half-width applies to, e.g. cell, cell and bin")
    half_width_by_cell_size: dict[str, float] | None = Field(
        None, description="means: the half-width for cells of these sizes"
    )
    half_width_by_bin: dict[str, float] | None = Field(
        None, description="per bin where bins differ (lorenz offset-sums)"
    )
    note: str = Field(description="how to read it")


class Preview(BaseModel):
    """What a query's release will state about its accuracy, before it runs."""

    model_config = _FROZEN

    query_id: str = Field(description="the query previewed")
    epsilon: str = Field(description="its epsilon")
    unit: str = Field(description="household or person")
    unit_multiplicity: int = Field(description="rows one household can contribute")
    neighbouring: str = Field(description="the neighbour relation: add_remove_household or change_household")
    d_in: int = Field(
        description="rows two neighbouring frames may differ by: the noise scales are proportional to it"
    )
    cells: int = Field(description="public cells of the result (from the domains, not the data)")
    group_by: list[str] = Field(description="the dimensions grouped by")
    confidence: float = Field(description="the confidence of the half-widths: 0.95")
    statistics: list[StatisticAccuracy] = Field(description="the expected accuracy of each released quantity")
    warnings: list[str] = Field(description="where the expected accuracy is poor, and what helps")


def _units(plan: Plan) -> str:
    return "persons" if plan.query.unit is Unit.PERSON else "households"


def _value_range(measure: Measure, catalog: Mapping[str, ConnectorSchema], unit: Unit) -> tuple[float, float]:
    """The smallest and largest value the declared measure bounds allow per unit (households add up any
    number of members, so their range is open on the side any term can reach)."""
    low = high = 0.0
    for term in measure.terms:
        if term.dataset == HOUSEHOLD_MEMBERS:
            lo, hi = 1.0, math.inf
        else:
            connector, _, name = term.dataset.partition(".")
            dataset = next(d for d in catalog[connector].datasets if d.name == name)
            declared = next(m for m in dataset.measures if m.name == term.measure)
            lo, hi = float(declared.lower), float(declared.upper)
        if term.sign < 0:
            lo, hi = -hi, -lo
        low, high = low + lo, high + hi
    if unit is Unit.HOUSEHOLD and not measure.per_capita:
        low = -math.inf if low < 0 else 0.0
        high = math.inf if high > 0 else 0.0
    return low, high


def _measure_unit(measure: Measure | None, catalog: Mapping[str, ConnectorSchema]) -> str:
    """The declared unit of the measure's terms (e.g. yuan), or a neutral word where they differ."""
    if measure is None:
        return "measure units"
    units = set()
    for term in measure.terms:
        if term.dataset == HOUSEHOLD_MEMBERS:
            units.add("members")
            continue
        connector, _, name = term.dataset.partition(".")
        dataset = next(d for d in catalog[connector].datasets if d.name == name)
        units.add(next(m.unit for m in dataset.measures if m.name == term.measure))
    unit = units.pop() if len(units) == 1 else "measure units"
    return f"{unit} per member" if measure.per_capita else unit


def _bounds_warnings(plan: Plan, catalog: Mapping[str, ConnectorSchema]) -> list[str]:
    measure = plan.query.measure
    if measure is None:
        return []
    low, high = _value_range(measure, catalog, plan.query.unit)
    out = []
    if measure.lower < low or measure.upper > high:
        shown = f"[{low:,.0f}, {high:,.0f}]".replace("inf", "∞")
        out.append(
            f"query bounds exceed the dataset's declared bounds: measure.lower..upper = "
            f"[{measure.lower:,}, {measure.upper:,}] while the declared bounds of its terms allow at most "
            f"{shown} per {plan.query.unit.value}; the noise of a sum grows with the larger bound, so "
            f"tighten them"
        )
    return out


def _direct(
    name: str, stat: str, q: float, share: Decimal, unit: str, per: str, note: str
) -> StatisticAccuracy:
    return StatisticAccuracy(
        statistic=stat,
        quantity=name,
        scale=q,
        epsilon_share=str(share),
        half_width=float(discrete_laplace_half_width(q)),
        unit=unit,
        per=per,
        note=note,
    )


def preview(plan: Plan, spec: ReleaseSpec, catalog: Mapping[str, ConnectorSchema]) -> Preview:
    """The expected accuracy of the release ``spec`` of ``plan``; reads no data, charges nothing.

    Raises :class:`privacy.errors.PrivacyError` (as the run would) if the release cannot be built.
    """
    # Imported here: building the release loads OpenDP, which importing aggregation must not.
    from privacy.release import prepare_release

    prepared = prepare_release(spec)
    quantities = prepared.quantities
    units = _units(plan)
    measure_unit = _measure_unit(plan.query.measure, catalog)
    groups = [g.name for g in spec.groups]
    cells = int(np.prod([len(g.keys) for g in spec.groups])) if spec.groups else 1
    per = "cell" if groups else "release"
    stats: list[StatisticAccuracy] = []
    warnings = _bounds_warnings(plan, catalog)
    count_like: list[tuple[str, float]] = []
    for stat in spec.statistics:
        kind = stat.kind
        if (
            kind in ("count", "mean")
            and "count" in quantities
            and not any(s.quantity == "count" for s in stats)
        ):
            q = quantities["count"]
            stats.append(_direct("count", "count", q.scale, q.share, units, per, f"{units} per {per}"))
            count_like.append(("count", float(discrete_laplace_half_width(q.scale))))
        if kind in ("sum", "mean") and "sum" in quantities and not any(s.quantity == "sum" for s in stats):
            q = quantities["sum"]
            note = f"sum of the measure clamped to [{spec.lower:,}, {spec.upper:,}] per {per}"
            stats.append(_direct("sum", "sum", q.scale, q.share, measure_unit, per, note))
        if kind == "mean":
            k_sum = discrete_laplace_half_width(quantities["sum"].scale)
            k_count = discrete_laplace_half_width(quantities["count"].scale)
            bound = max(abs(spec.lower), abs(spec.upper))
            by_size = {
                str(n): min((k_sum + bound * k_count) / n, float(spec.upper - spec.lower))
                for n in MEAN_CELL_SIZES
            }
            stats.append(
                StatisticAccuracy(
                    statistic="mean",
                    quantity="sum / count",
                    scale=quantities["sum"].scale,
                    epsilon_share=str(quantities["sum"].share + quantities["count"].share),
                    half_width=None,
                    unit=measure_unit,
                    per=per,
                    half_width_by_cell_size=by_size,
                    note=f"about (±{k_sum:,} + {bound:,} × ±{k_count:,}) / n for a {per} of n {units}; "
                    "the release inverts both noises exactly",
                )
            )
        if isinstance(stat, Histogram):
            q = quantities["histogram"]
            stats.append(
                _direct(
                    "histogram",
                    "histogram",
                    q.scale,
                    q.share,
                    units,
                    f"{per} and bin",
                    f"{units} per {per} and bin",
                )
            )
            count_like.append(("histogram bin", float(discrete_laplace_half_width(q.scale))))
        if isinstance(stat, Quantiles):
            name = "quantile_histogram" if "quantile_histogram" in quantities else "histogram"
            q = quantities[name]
            half_bins = max(1, (len(stat.edges) + 1) // 2)
            rank = noise_half_width((q.scale,) * half_bins)
            stats.append(
                StatisticAccuracy(
                    statistic="quantiles",
                    quantity=name,
                    scale=q.scale,
                    epsilon_share=str(q.share),
                    half_width=rank,
                    unit=f"{units} of rank",
                    per=per,
                    note=f"each quantile is located to within about ±{rank:,.0f} {units} of rank (the "
                    f"noise of a cumulative count over {half_bins} bins); in the measure's unit that depends "
                    f"on how many {units} a bin holds",
                )
            )
        if isinstance(stat, Lorenz):
            qc, qs = quantities["lorenz_count"], quantities["lorenz_sum"]
            stats.append(
                _direct(
                    "lorenz_count",
                    "lorenz",
                    qc.scale,
                    qc.share,
                    units,
                    f"{per} and bin",
                    f"{units} per {per} and bin",
                )
            )
            count_like.append(("lorenz bin", float(discrete_laplace_half_width(qc.scale))))
            k = discrete_laplace_half_width(qs.scale)
            widths = np.diff(histogram_boundaries(stat.edges, spec.lower, spec.upper))
            by_bin = {
                label: float(k * w / LORENZ_RESOLUTION)
                for label, w in zip(histogram_bin_labels(stat.edges), widths.tolist(), strict=True)
            }
            stats.append(
                StatisticAccuracy(
                    statistic="lorenz_sum",
                    quantity="lorenz_sum",
                    scale=qs.scale,
                    epsilon_share=str(qs.share),
                    half_width=max(by_bin.values()),
                    unit=measure_unit,
                    per=f"{per} and bin",
                    half_width_by_bin=by_bin,
                    note="the offsets' sum in each bin; its noise is proportional to the bin's width",
                )
            )
    for what, half in count_like:
        if groups:
            needed = math.ceil(half / float(SWAMPED_SHARE))
            warnings.append(
                f"at this ε, each {' × '.join(groups)} {what}'s count is ±{half:,.0f} {units} (95%); a {per} "
                f"needs about {needed:,} {units} for ±{SWAMPED_SHARE:.0%}"
            )
    if spec.d_in > 1:
        why = []
        if spec.unit_multiplicity > 1:
            why.append(f"a household can contribute {spec.unit_multiplicity} rows (the member cap)")
        if spec.d_in > spec.unit_multiplicity:
            why.append(f"the {spec.neighbouring.value} relation counts a change as a removal and an addition")
        warnings.append(
            f"{' and '.join(why)}: neighbouring frames may differ by {spec.d_in} rows, so every noise scale "
            f"is {spec.d_in} times that of a household query under add/remove"
        )
    return Preview(
        query_id=plan.query.query_id,
        epsilon=str(spec.epsilon),
        unit=plan.query.unit.value,
        unit_multiplicity=spec.unit_multiplicity,
        neighbouring=spec.neighbouring.value,
        d_in=spec.d_in,
        cells=cells,
        group_by=groups,
        confidence=CONFIDENCE,
        statistics=stats,
        warnings=warnings,
    )
