"""Income-band shares from a released DP histogram: post-processing of noisy counts only (no budget).

A band such as 100k–500k yuan is a union of histogram bins with public edges. Cells of the release
(villages, urban–rural codes) can be pooled into larger groups (county, urban, rural) by adding their noisy
bins. A pool's share is ``X / (X + Y)`` with ``X`` the raw noisy households in the band's bins and ``Y`` those
in the other bins (raw sums are unbiased; each is clipped at 0 only once added up). Its 95% interval
inverts the known noise of both sums (:func:`privacy.inversion.share_by_inversion`): it covers at the
nominal rate in small noisy cells too, where treating the noisy counts as the truth does not. No true
value is ever used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privacy.inversion import share_by_inversion
from privacy.vocabulary import histogram_bin_labels

UNDEFINED_SHARE = "undefined: the noisy households of this pool are all at most 0"


@dataclass(frozen=True)
class BandShare:
    group: str
    band: str
    share: float | None
    """None where the pool's noisy households are all at most 0 (the interval still holds)"""
    low: float
    high: float
    households: float
    """the noisy number of households in the band (clipped at 0), for display"""


def _histogram(
    release: Mapping[str, Any], edges: Sequence[int], group_key: str | None
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Noisy bins per cell key (the value of `group_key`, or '' for an ungrouped release)."""
    labels = list(histogram_bin_labels(edges))
    cells: dict[str, np.ndarray] = {}
    for cell in release["cells"]:
        if cell["statistic"] != "histogram":
            continue
        key = "" if group_key is None else str(cell["groups"].get(group_key))
        cells.setdefault(key, np.zeros(len(labels)))[labels.index(cell["bin"])] = float(cell["value"])
    return cells, labels


def band_shares(
    release: Mapping[str, Any],
    *,
    edges: Sequence[int],
    bands: Mapping[str, tuple[int, int]],
    pools: Mapping[str, Sequence[str]] | None = None,
    group_key: str | None = None,
) -> list[BandShare]:
    """Share of units per band, for each pool of cells (default: every cell alone), with 95% intervals.

    `edges` are the histogram's public edges; `bands` maps a label to [low, high) yuan, both ends edges.
    """
    cells, labels = _histogram(release, edges, group_key)
    edges = list(edges)
    scale = float(release["scales"]["histogram"])
    masks = {}
    for name, (low, high) in bands.items():
        if low not in edges or high not in edges:
            raise ValueError(f"band {name}: {low} and {high} must be histogram edges")
        first, last = edges.index(low) + 1, edges.index(high) + 1
        mask = np.zeros(len(labels), dtype=bool)
        mask[first:last] = True
        masks[name] = mask
    pools = pools or {k: [k] for k in cells}
    out = []
    for name, mask in masks.items():
        # Pools of the same number of cells share their noise distribution: one inversion for all of them.
        by_size: dict[int, list[tuple[str, np.ndarray]]] = {}
        for pool, keys in pools.items():
            present = [cells[k] for k in keys if k in cells]
            if present:
                by_size.setdefault(len(present), []).append((pool, np.sum(present, axis=0)))
        for size, members in by_size.items():
            noisy = np.array([bins for _, bins in members])
            part, rest = noisy[:, mask].sum(axis=1), noisy[:, ~mask].sum(axis=1)
            est = share_by_inversion(
                part, (scale,) * (size * int(mask.sum())), rest, (scale,) * (size * int((~mask).sum()))
            )
            for i, (pool, _) in enumerate(members):
                value = float(est.value[i])
                out.append(
                    BandShare(
                        pool,
                        name,
                        None if math.isnan(value) else value,
                        float(est.low[i]),
                        float(est.high[i]),
                        float(max(part[i], 0.0)),
                    )
                )
    order = {pool: i for i, pool in enumerate(pools)}
    bands_order = {name: i for i, name in enumerate(masks)}
    return sorted(out, key=lambda s: (order[s.group], bands_order[s.band]))
