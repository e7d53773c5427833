"""Income-band shares from a released DP histogram: post-processing of noisy counts only (no budget).

A band such as 100k–500k yuan is a union of histogram bins with public edges. Cells of the release
(villages, urban–rural codes) can be pooled into larger groups (county, urban, rural) by adding their noisy
bins. The share's 95% interval is simulated from the known noise distribution around the noisy counts
(`privacy.intervals.sample_noise`); no true value is ever used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privacy.intervals import CONFIDENCE, sample_noise
from privacy.vocabulary import histogram_bin_labels

DRAWS = 2_000


@dataclass(frozen=True)
class BandShare:
    group: str
    band: str
    share: float
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
    seed: int | None = None,
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
    rng = np.random.default_rng(seed)
    alpha = (1 - CONFIDENCE) / 2
    out = []
    for pool, keys in pools.items():
        present = [cells[k] for k in keys if k in cells]
        if not present:
            continue
        noisy = np.sum(present, axis=0)
        draws = noisy + sample_noise(rng, scale, (DRAWS, len(present), len(labels))).sum(axis=1)
        clipped, sim = np.clip(noisy, 0, None), np.clip(draws, 0, None)
        total, sim_total = max(clipped.sum(), 1.0), np.maximum(sim.sum(axis=1), 1.0)
        for name, mask in masks.items():
            share = clipped[mask].sum() / total
            sim_share = sim[:, mask].sum(axis=1) / sim_total
            low, high = np.quantile(sim_share, [alpha, 1 - alpha])
            out.append(
                BandShare(pool, name, float(share), float(low), float(high), float(clipped[mask].sum()))
            )
    return out
