"""Preflight: before any budget is reserved, every planned connector confirms it can serve its part.

Each connector gets the very extract request the run would send next, as a signed `POST /v1/preflight`,
and checks what it would check for the extract (the department's approval or rule covers it, the key
epoch is held, its caps leave room) plus a one-row probe of its source under the period filter. It
serves, counts and reserves nothing. A failure here costs the query nothing: no budget was reserved,
the query stays approved with its approvals, and the analyst is told which connector and which fixed
code, so the department can fix its side and the query can run again.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aggregation.planner import ExtractPlan, Plan
from connectors.protocol import PreflightRequest, SignedApproval, SignedRule
from gateway.analyst_keys import query_signature
from gateway.auth import Principal
from gateway.context import GatewayContext
from gateway.errors import ConnectorUnavailable
from gateway.events import ConnectorCall, QueryFailed
from gateway.federation import ConnectorCallError, ConnectorLink, extract_request
from gateway.registry import get_connector


@dataclass(frozen=True)
class PreflightFailure:
    connector: str
    dataset: str
    code: str
    """the connector's fixed error code, or the gateway's for a call that got no valid answer"""


Cover = dict[str, SignedApproval | SignedRule]

# Calls in flight at once: a pack asks a few connectors for dozens of queries' parts.
MAX_CONCURRENT = 8


def _one(
    ctx: GatewayContext,
    client: ConnectorLink | None,
    plan: Plan,
    e: ExtractPlan,
    cover: SignedApproval | SignedRule,
    analyst: Principal,
) -> PreflightFailure | None:
    """One connector's preflight for one query's part, audited as a `connector.call`."""
    if client is None:
        return PreflightFailure(e.connector, e.dataset, "disabled")
    spec = plan.query
    signed_by = query_signature(ctx.engine, spec.query_id)
    extract = extract_request(e, spec, cover, epoch=ctx.settings.token_epoch, signed_by=signed_by)
    audit_key = ctx.checkpointer.verifier.vkey() if ctx.checkpointer is not None else None
    request = PreflightRequest.model_validate({**extract.model_dump(), "audit_key": audit_key})
    outcome, status = "ok", 200
    receipt: dict[str, str] = {}
    failure = None
    try:
        _answer, receipt = client.preflight(request)
    except ConnectorCallError as exc:
        outcome, status, receipt = exc.code, exc.status or 0, exc.receipt
        failure = PreflightFailure(e.connector, e.dataset, exc.code)
    ctx.audit.record(
        ConnectorCall.from_receipt(
            receipt,
            connector=e.connector,
            path="/v1/preflight",
            query_id=spec.query_id,
            dataset=e.dataset,
            outcome=outcome,
            status=status or None,
        )
    )
    return failure


def _clients(ctx: GatewayContext, names: set[str]) -> dict[str, ConnectorLink | None]:
    """Each enabled connector's long-lived link (its TLS context and connections are reused by every
    call); None for a connector that is not registered or not enabled."""
    clients: dict[str, ConnectorLink | None] = {}
    for name in sorted(names):
        record = get_connector(ctx.engine, name)
        clients[name] = (
            None
            if record is None or not record.enabled
            else ctx.federation().link(name, record.endpoint, record.signing_key)
        )
    return clients


def preflight_many(
    ctx: GatewayContext, runs: list[tuple[Plan, Cover]], analyst: Principal
) -> dict[str, list[PreflightFailure]]:
    """Ask every planned connector of every query, concurrently; per query id, its failures."""
    calls = [(plan, e, found[e.department]) for plan, found in runs for e in plan.extracts]
    clients = _clients(ctx, {e.connector for _p, e, _c in calls})
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_CONCURRENT, len(calls)))) as pool:
        futures = [
            (plan, pool.submit(_one, ctx, clients[e.connector], plan, e, cover, analyst))
            for plan, e, cover in calls
        ]
        results = [(plan, f.result()) for plan, f in futures]
    failures: dict[str, list[PreflightFailure]] = {}
    for plan, failure in results:
        if failure is not None:
            failures.setdefault(plan.query.query_id, []).append(failure)
    return failures


def named(failures: list[PreflightFailure]) -> list[str]:
    """`connector.dataset: code` for each failure, for `query.failed` and the analyst's message."""
    return sorted({f"{f.connector}.{f.dataset}: {f.code}" for f in failures})


def unavailable(failures: list[PreflightFailure], *, queries: str = "") -> ConnectorUnavailable:
    """The analyst's error: each connector, dataset and fixed code, and that nothing was charged."""
    listed = "; ".join(sorted({f"connector {f.connector} (dataset {f.dataset}): {f.code}" for f in failures}))
    return ConnectorUnavailable(
        f"a connector cannot serve its part now{queries}: {listed}. Nothing was reserved or charged; "
        "the query stays approved and can run again once the department has fixed it",
        "query_id",
    )


def require_all_ready(ctx: GatewayContext, runs: list[tuple[Plan, Cover]], analyst: Principal) -> None:
    """Before an indicator or pack run reserves its whole total: every query's connectors are ready, or
    each query that is not gets its `query.failed` (charged: false) and the run is refused."""
    by_query = preflight_many(ctx, runs, analyst)
    if not by_query:
        return
    for query_id, failed in by_query.items():
        ctx.audit.record(
            QueryFailed(
                actor=analyst.name,
                query_id=query_id,
                reason="preflight",
                charged=False,
                connectors=named(failed),
            )
        )
    every = [f for failed in by_query.values() for f in failed]
    raise unavailable(every, queries=f" ({len(by_query)} of {len(runs)} queries)")
