"""Indicators run in process: extracts straight from the connectors' sources, releases through OpenDP.

No HTTP, signatures or ledger here (the gateway tests cover those); this exercises the templates, the
planner, the token join and the releases exactly as the gateway composes them, many times over.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import polars as pl

from aggregation.executor import unit_frame
from aggregation.indicators import SubQuery
from aggregation.planner import plan_query
from connectors.extract import Extractor
from connectors.protocol import ConnectorSchema
from connectors.service import ConnectorService
from gateway.runner import release_spec
from privacy.intervals import histogram_boundaries, sample_noise
from privacy.release import prepare_release
from privacy.vocabulary import histogram_bin_labels

EXACT_EPSILON = Decimal(10) ** 12
"""Epsilon of an unsafe exact evaluation: noise scales near 1e-6 and below, so the noise is 0."""


def frames(queries: Sequence[SubQuery], services: Mapping[str, ConnectorService]) -> dict[str, pl.DataFrame]:
    """The one-row-per-unit frame of every sub-query, keyed by role."""
    catalog: dict[str, ConnectorSchema] = {n: s.schema for n, s in services.items()}
    out = {}
    for q in queries:
        plan = plan_query(q.spec, catalog)
        tables = {}
        for e in plan.extracts:
            service = services[e.connector]
            req = e.unsafe_unapproved_request(q.spec, epoch=service.keyring.current_epoch)
            dataset = service.cfg.dataset(e.dataset)
            assert dataset is not None
            tables[e.ref] = Extractor(service.loaded, service.source, service.keyring).run(req, dataset).table
        out[q.role] = unit_frame(plan, tables)
    return out


def release(
    queries: Sequence[SubQuery],
    services: Mapping[str, ConnectorService],
    unit_frames: Mapping[str, pl.DataFrame],
    *,
    exact: bool = False,
) -> dict[str, dict[str, Any]]:
    """Release every sub-query once through OpenDP (role -> release JSON); `exact` draws no noise."""
    catalog = {n: s.schema for n, s in services.items()}
    out = {}
    for q in queries:
        spec = release_spec(plan_query(q.spec, catalog))
        if exact:
            spec = spec.model_copy(update={"epsilon": EXACT_EPSILON})
        out[q.role] = prepare_release(spec).run(unit_frames[q.role]).to_json_dict()
    return out


def scales(
    queries: Sequence[SubQuery], services: Mapping[str, ConnectorService]
) -> dict[str, dict[str, float]]:
    """The noise scales each sub-query's release uses (public: built from the spec, no data)."""
    catalog = {n: s.schema for n, s in services.items()}
    return {q.role: prepare_release(release_spec(plan_query(q.spec, catalog))).scales for q in queries}


_QUANTITY = {"count": "count", "sum": "sum", "histogram": "histogram", "lorenz": "lorenz_count"}


def with_noise(
    exact: Mapping[str, Mapping[str, Any]],
    noise_scales: Mapping[str, Mapping[str, float]],
    rng: np.random.Generator,
) -> dict[str, dict[str, Any]]:
    """Exact releases with the known noise added at the real scales: the releases OpenDP would make, drawn
    from a seeded generator so that coverage tests are repeatable (the noise's distribution and scale are
    OpenDP's, checked in tests/test_privacy_release.py). Lorenz offset-sums get integer noise on their
    lattice of w_j / R yuan, as released."""
    out = {}
    for role, release in exact.items():
        doc = copy.deepcopy(dict(release))
        scale = noise_scales[role]
        doc["scales"] = dict(scale)
        width: dict[str, float] = {}
        if doc.get("lorenz_resolution"):
            labels = list(dict.fromkeys(c["bin"] for c in doc["cells"] if c["statistic"] == "lorenz_sum"))
            edges = tuple(
                int(x) for x in [labels[0][1:]] + [b.split(",")[1].rstrip(")") for b in labels[1:-1]]
            )
            assert histogram_bin_labels(edges) == tuple(labels)
            bounds = histogram_boundaries(edges, doc["lower"], doc["upper"])
            width = dict(zip(labels, (np.diff(bounds) / doc["lorenz_resolution"]).tolist(), strict=True))
        by_quantity: dict[str, list[dict[str, Any]]] = {}
        for cell in doc["cells"]:
            stat = cell["statistic"]
            if stat in _QUANTITY:
                by_quantity.setdefault(_QUANTITY[stat], []).append(cell)
            elif stat == "lorenz_sum" and width[cell["bin"]] > 0:
                by_quantity.setdefault("lorenz_sum", []).append(cell)
        for quantity, cells in by_quantity.items():
            noise = sample_noise(rng, scale[quantity], len(cells)).tolist()
            for cell, e in zip(cells, noise, strict=True):
                if quantity == "lorenz_sum":
                    w = width[cell["bin"]]
                    cell["value"] = float((round(cell["value"] / w) + e) * w)
                else:
                    cell["value"] = int(cell["value"] + e)
        out[role] = doc
    return out
