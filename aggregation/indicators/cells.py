"""Reading released cells back into arrays: the noisy values and the public noise scales OpenDP used.

Post-processing only. The figures' intervals invert the known noise of the cells they use
(:mod:`privacy.inversion`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from privacy.vocabulary import histogram_bin_labels

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
