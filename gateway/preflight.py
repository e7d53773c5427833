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
from audit.entries import connector_call_event
from connectors.protocol import PreflightRequest, SignedApproval, SignedRule, parse_public_key
from gateway.auth import Principal
from gateway.connector_client import ConnectorCallError, ConnectorClient
from gateway.context import GatewayContext
from gateway.errors import ApiError, ErrorCode
from gateway.registry import get_connector

# Connector codes that say the department's side cannot be read or reached now (503); any other code is
# a refusal by the connector's own checks (409). Both leave the query approved and nothing reserved.
_UNAVAILABLE = frozenset({"source_unavailable", "unreachable", "disabled", "internal", "error"})


@dataclass(frozen=True)
class PreflightFailure:
    connector: str
    dataset: str
    code: str
    """the connector's fixed error code, or the gateway's for a call that got no valid answer"""


def _one(
    ctx: GatewayContext,
    plan: Plan,
    e: ExtractPlan,
    cover: SignedApproval | SignedRule,
    analyst: Principal,
) -> PreflightFailure | None:
    spec = plan.query
    record = get_connector(ctx.engine, e.connector)
    if record is None or not record.enabled:
        return PreflightFailure(e.connector, e.dataset, "disabled")
    extract = e.request(spec, cover, epoch=ctx.settings.token_epoch, analyst=analyst.name)
    request = PreflightRequest.model_validate(extract.model_dump())
    outcome, status, receipt = "ok", 200, {}
    failure = None
    with ConnectorClient(
        record.endpoint,
        connector=e.connector,
        gateway_key=ctx.gateway_key,
        connector_key=parse_public_key(record.signing_key),
        timeout=min(30.0, ctx.settings.connector_timeout_seconds),
        transport=ctx.transport,
        verify=ctx.tls or True,
    ) as client:
        try:
            client.preflight(request)
            receipt = client.last_receipt
        except ConnectorCallError as exc:
            outcome, status, receipt = exc.code, exc.status or 0, exc.receipt
            failure = PreflightFailure(e.connector, e.dataset, exc.code)
    event = connector_call_event(
        connector=e.connector,
        path="/v1/preflight",
        request_digest=receipt.get("request_digest", ""),
        response_digest=receipt.get("response_digest"),
        connector_signature=receipt.get("connector_signature"),
        checkpoint=None,
        outcome=outcome,
        query_id=spec.query_id,
        dataset=e.dataset,
        status=status or None,
    )
    action = event.pop("action")
    ctx.audit.record(action, **event)
    return failure


def preflight(
    ctx: GatewayContext, plan: Plan, found: dict[str, SignedApproval | SignedRule], analyst: Principal
) -> list[PreflightFailure]:
    """Ask every planned connector, concurrently; the failures, in plan order."""
    with ThreadPoolExecutor(max_workers=max(1, len(plan.extracts))) as pool:
        futures = [pool.submit(_one, ctx, plan, e, found[e.department], analyst) for e in plan.extracts]
        results = [f.result() for f in futures]
    return [r for r in results if r is not None]


def require_ready(
    ctx: GatewayContext, plan: Plan, found: dict[str, SignedApproval | SignedRule], analyst: Principal
) -> None:
    """Raise (503 or 409) naming each connector and its fixed code unless every connector is ready.

    Called before the reservation, so a failure leaves nothing reserved and nothing charged."""
    failures = preflight(ctx, plan, found, analyst)
    if not failures:
        return
    named = {f"{f.connector}.{f.dataset}": f.code for f in failures}
    ctx.audit.record(
        "query.failed",
        query_id=plan.query.query_id,
        reason="preflight",
        charged=False,
        connectors=named,
    )
    unavailable = any(f.code in _UNAVAILABLE for f in failures)
    listed = "; ".join(f"connector {f.connector} (dataset {f.dataset}): {f.code}" for f in failures)
    raise ApiError(
        503 if unavailable else 409,
        ErrorCode.CONNECTOR_UNAVAILABLE if unavailable else ErrorCode.CONNECTOR_ERROR,
        f"a connector cannot serve its part of this query now: {listed}. Nothing was reserved or "
        "charged; the query stays approved and can run again once the department has fixed it",
        "query_id",
    )
