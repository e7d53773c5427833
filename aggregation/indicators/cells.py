"""Reading released cells back into arrays, and simulated intervals for figures pooled from many cells.

Post-processing only: the inputs are a stored release (noisy values and the public noise scales OpenDP
used). A pooled or derived figure's interval comes from adding the known integer-Laplace noise of every
cell it uses around the noisy values, recomputing the figure for each draw, and taking the central 95%.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from privacy.intervals import CONFIDENCE, sample_noise
from privacy.vocabulary import histogram_bin_labels

DRAWS = 2_000
FloatArray = npt.NDArray[np.float64]
CellKey = tuple[str | None, ...]


def group_names(release: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(release["group_names"])


def direct(release: Mapping[str, Any], statistic: str) -> dict[CellKey, float]:
    """Noisy value of every cell of a direct statistic (count or sum), keyed by its group values."""
    names = group_names(release)
    return {
        tuple(c["groups"].get(n) for n in names): float(c["value"])
        for c in release["cells"]
        if c["statistic"] == statistic
    }


def binned(release: Mapping[str, Any], statistic: str, edges: Sequence[int]) -> dict[CellKey, FloatArray]:
    """Noisy bins of every cell of a histogram-like statistic, in bin order."""
    names = group_names(release)
    labels = {label: i for i, label in enumerate(histogram_bin_labels(edges))}
    out: dict[CellKey, FloatArray] = {}
    for c in release["cells"]:
        if c["statistic"] != statistic:
            continue
        key = tuple(c["groups"].get(n) for n in names)
        out.setdefault(key, np.zeros(len(labels)))[labels[c["bin"]]] = float(c["value"])
    return out


def scale(release: Mapping[str, Any], quantity: str) -> float:
    return float(release["scales"][quantity])


def simulate(
    noisy: Sequence[FloatArray],
    scales: Sequence[float | FloatArray],
    figure: Callable[..., FloatArray],
    *,
    rng: np.random.Generator,
    draws: int = DRAWS,
    clip: tuple[float, float] | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Point value and 95% interval of `figure(*arrays)`, vectorised over a leading draws axis.

    `figure` receives arrays shaped (draws, *input shape) and returns (draws, *output shape); the point
    value is `figure` of the noisy inputs themselves.
    """
    point = figure(*(np.asarray(x, dtype=np.float64)[None, ...] for x in noisy))[0]
    sims = [
        np.asarray(x, dtype=np.float64)[None, ...]
        + sample_noise(
            rng, np.broadcast_to(np.asarray(s, dtype=np.float64), np.shape(x)), (draws, *np.shape(x))
        )
        for x, s in zip(noisy, scales, strict=True)
    ]
    values = figure(*sims)
    if clip is not None:
        values = np.clip(values, *clip)
        point = np.clip(point, *clip)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha], axis=0)
    return np.asarray(point, dtype=np.float64), np.asarray(low), np.asarray(high)


def safe_ratio(numerator: FloatArray, denominator: FloatArray, floor: float = 1.0) -> FloatArray:
    """numerator / max(denominator, floor): a noisy denominator below the floor says nothing usable."""
    return np.asarray(numerator / np.maximum(denominator, floor), dtype=np.float64)
