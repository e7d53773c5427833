"""Post-processing of a raw OpenDP release: noisy outputs joined back to the public cells, display values,
error bars and method notes.

Everything here reads only OpenDP's noisy outputs and public facts (the spec, the noise scales), so it spends
no privacy (:mod:`privacy.intervals` simulates the intervals of derived figures). :mod:`privacy.release`
builds and runs the measurement and hands its outputs to :class:`ReleasePostprocessor`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Final

import numpy as np
import polars as pl

from privacy import intervals
from privacy.cells import BIN_INDEX, COUNT, HBIN, LBIN, QBIN, SUM, bins_frame, keys_frame
from privacy.vocabulary import (
    COLUMN_PREFIX,
    LORENZ_RESOLUTION,
    Count,
    Histogram,
    Lorenz,
    Mean,
    Quantiles,
    ReleaseCell,
    ReleaseResult,
    ReleaseSpec,
    StatKind,
    Sum,
    histogram_bin_labels,
    quantiles_share_histogram,
)

__all__ = ["CONFIDENCE", "Quantity", "ReleasePostprocessor", "bins_frame", "keys_frame"]

CONFIDENCE: Final = intervals.CONFIDENCE

CELL: Final = COLUMN_PREFIX + "cell"


class Quantity:
    """One noisy quantity: its share of epsilon, per-unit sensitivity and noise scale."""

    def __init__(self, name: str, share: Decimal, sensitivity: Decimal, scale: float) -> None:
        self.name = name
        self.share = share
        self.sensitivity = sensitivity
        self.scale = scale


class ReleasePostprocessor:
    """Turns one release's raw OpenDP outputs into its :class:`ReleaseResult` (post-processing only)."""

    def __init__(self, spec: ReleaseSpec, quantities: Mapping[str, Quantity], epsilon: Decimal) -> None:
        self.spec = spec
        self.quantities = dict(quantities)
        self.epsilon = epsilon
        self._keys = keys_frame(spec.groups).with_row_index(CELL)

    @property
    def scales(self) -> dict[str, float]:
        """The noise scale OpenDP used for each quantity."""
        return {name: q.scale for name, q in self.quantities.items()}

    def _cells_table(self, output: pl.DataFrame, bins: pl.DataFrame | None) -> pl.DataFrame:
        """OpenDP's output joined back to the public keys in their fixed order (post-processing)."""
        names = [g.name for g in self.spec.groups]
        keys = self._keys if bins is None else self._keys.join(bins, how="cross")
        on = names + ([bins.columns[0]] if bins is not None else [])
        if not on:
            return output.with_row_index(CELL)
        order = [CELL] + ([BIN_INDEX] if bins is not None else [])
        return keys.join(output, on=on, how="left", nulls_equal=True).sort(order)

    def to_result(
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
        counts = table[COUNT].to_numpy() if table is not None and COUNT in table.columns else None
        sums = table[SUM].to_numpy() if table is not None and SUM in table.columns else None

        def direct(stat: StatKind, values: np.ndarray, quantity: Quantity, sign: int) -> None:
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
                matrix = self._matrix(outputs["histogram"], HBIN, stat.edges)
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
                shared = quantiles_share_histogram(spec)
                name = "histogram" if shared else "quantile_histogram"
                quantity = self.quantities[name]
                matrix = self._matrix(outputs[name], HBIN if shared else QBIN, stat.edges)
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
        counts = self._matrix(output, LBIN, stat.edges)
        offsets = self._matrix(output, LBIN, stat.edges, SUM)
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
        self, output: pl.DataFrame, column: str, edges: Sequence[int], value: str = COUNT
    ) -> np.ndarray:
        """Noisy per-bin values (counts by default) as a (cells, bins) matrix in the public key order."""
        bins = bins_frame(column, edges)
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


def _direct_note(stat: StatKind, q: Quantity, spec: ReleaseSpec, width: int, sign: int) -> str:
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


def _mean_note(quantities: Mapping[str, Quantity], spec: ReleaseSpec) -> str:
    return (
        f"noisy sum / noisy count (integer Laplace scales {quantities['sum'].scale:.6g} and "
        f"{quantities['count'].scale:.6g}), "
        f"clipped to [{spec.lower}, {spec.upper}], undefined (null) where the noisy count is below 1; "
        f"{CONFIDENCE:.0%} interval by inverting the known noise of both: every mean m in the bounds for "
        f"which sum - m x count is within that noise's {CONFIDENCE:.0%} range"
    )


def _quantile_note(q: Quantity, shared: bool) -> str:
    source = "the released histogram" if shared else "a noisy histogram over the public fine edges"
    return (
        f"inverse of the noisy CDF of {source} (negative bins clipped to 0, linear inside a bin; integer "
        f"Laplace scale {q.scale:.6g}); {CONFIDENCE:.0%} interval: the simulated pointwise CDF band inverted "
        f"at the bin edges, [F_hi^-1(p), F_lo^-1(p)]"
    )


def _lorenz_notes(
    quantities: Mapping[str, Quantity], spec: ReleaseSpec, confidence: float
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
