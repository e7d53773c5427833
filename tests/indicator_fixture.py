"""Indicators run in process: extracts straight from the connectors' sources, releases through OpenDP.

No HTTP, signatures or ledger here (the gateway tests cover those); this exercises the templates, the
planner, the token join and the releases exactly as the gateway composes them, many times over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import polars as pl

from aggregation.executor import unit_frame
from aggregation.indicators import SubQuery
from aggregation.planner import plan_query
from connectors.extract import Extractor
from connectors.protocol import ConnectorSchema
from connectors.service import ConnectorService
from gateway.runner import release_spec
from privacy.release import prepare_release

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
