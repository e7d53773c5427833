"""Running an approved query: reserve budget, fetch concurrently, join, release through OpenDP, commit.

    approved --(CAS)--> running
      ledger.reserve (before the first extract; over budget: 409, state back to approved)
      prepare the OpenDP measurement and check its privacy map (before any data)
      signed extracts to every planned connector, concurrently (timeouts)
        every call failed, none returned data   -> refund, state back to approved (nothing charged)
        a call failed after another returned data -> the reservation stays spent, state failed
      token join -> one row per unit -> release -> ledger.commit(result) in one transaction -> released

`run` is idempotent: a released query returns its stored result and draws no fresh noise. The token-level
frames live only in this function's memory and are dropped when it returns.
"""

from __future__ import annotations

import base64
import datetime
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import pyarrow as pa
import structlog

from aggregation.executor import VALUE, unit_frame
from aggregation.planner import ExtractPlan, Plan
from aggregation.query import StatisticKind
from audit.checkpoint import Checkpoint
from audit.entries import ACTION_CONNECTOR_REQUEST, connector_call_event
from audit.errors import ProofError
from connectors.protocol import (
    SignedApproval,
    SignedRule,
    canonical_json,
    sha256_hex,
)
from gateway import queries
from gateway.auth import Principal
from gateway.context import GatewayContext
from gateway.errors import ApiError, ErrorCode
from gateway.federation import ConnectorCallError, ConnectorRefused, ConnectorUnavailable, extract_request
from gateway.registry import get_connector
from privacy.errors import BudgetExceeded, PrivacyError
from privacy.release import (
    Count,
    GroupDomain,
    Histogram,
    Lorenz,
    Mean,
    Quantiles,
    ReleaseSpec,
    Statistic,
    Sum,
    prepare_release,
)

log = structlog.get_logger("fedgate.runner")

PROXY_NOTE = (
    "Disposable income here is a proxy built from what departments hold (wages, business income, pensions, "
    "transfers, minus personal contributions); no department holds property income."
)


def release_spec(plan: Plan, max_rows: int) -> ReleaseSpec:
    """The OpenDP release a plan needs: public cells from the planned groups, public bounds and epsilon."""
    q = plan.query
    stats: list[Statistic] = []
    for s in q.statistics:
        if s.kind is StatisticKind.HISTOGRAM:
            stats.append(Histogram(edges=tuple(s.edges or ())))
        elif s.kind is StatisticKind.QUANTILES:
            stats.append(Quantiles(probs=tuple(s.probs or ()), edges=tuple(s.edges or ())))
        elif s.kind is StatisticKind.LORENZ:
            stats.append(Lorenz(edges=tuple(s.edges or ())))
        elif s.kind is StatisticKind.SUM:
            stats.append(Sum())
        elif s.kind is StatisticKind.MEAN:
            stats.append(Mean())
        else:
            stats.append(Count())
    measure = q.measure
    return ReleaseSpec(
        groups=tuple(GroupDomain(name=g.ref, values=g.domain) for g in plan.groups),
        measure=VALUE if measure is not None else None,
        lower=measure.lower if measure is not None else 0,
        upper=measure.upper if measure is not None else 0,
        statistics=tuple(stats),
        epsilon=q.epsilon,
        unit_multiplicity=plan.unit_multiplicity,
        max_rows=max_rows,
    )


def stored_result(ctx: GatewayContext, record: queries.QueryRecord) -> dict[str, Any]:
    doc = ctx.ledger.result(record.id)
    if doc is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no released result for this query", "query_id")
    return doc


def run_query(ctx: GatewayContext, query_id: str, analyst: Principal) -> dict[str, Any]:
    record = queries.get_query(ctx.engine, query_id)
    if record.analyst != analyst.name:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no query with that id", "query_id")
    if record.state == "released":
        return stored_result(ctx, record)
    if ctx.ledger.result(query_id) is not None:
        # A run committed its result but died before the state changed: serve what was released.
        queries.set_state(ctx.engine, query_id, "released", expect=("running", "approved", "failed"))
        return stored_result(ctx, record)
    plan = queries.plan_or_422(ctx.engine, record.spec)
    queries.refresh_state(ctx.engine, query_id, plan)
    record = queries.get_query(ctx.engine, query_id)
    if record.state != "approved":
        code = ErrorCode.NOT_APPROVED if record.state in ("submitted", "rejected") else ErrorCode.CONFLICT
        raise ApiError(409, code, f"the query is {record.state}; it runs only when approved", "query_id")
    found, _ = queries.covers(ctx.engine, record, plan)
    # Audited before anything changes: if the audit log cannot be written, nothing runs (503).
    ctx.audit.record("query.run", actor=analyst.name, query_id=query_id, query_digest=record.digest)
    if not queries.set_state(ctx.engine, query_id, "running", expect=("approved",)):
        raise ApiError(409, ErrorCode.CONFLICT, "the query is already running", "query_id")
    try:
        return _run(ctx, plan, found, analyst)
    except BaseException as exc:
        # Whatever failed, a query never stays 'running'. Without data it can run again (approved); once
        # data arrived its reservation stays spent (failed).
        entry = ctx.ledger.entry(query_id)
        spent = entry is not None and entry.state != "refunded"
        if spent and entry is not None and entry.state == "reserved" and not entry.data_arrived:
            ctx.ledger.refund(query_id)
            spent = False
        failure = exc.code.value if isinstance(exc, ApiError) else ErrorCode.INTERNAL.value
        queries.set_state(
            ctx.engine, query_id, "failed" if spent else "approved", expect=("running",), error_code=failure
        )
        raise


def _run(
    ctx: GatewayContext, plan: Plan, found: dict[str, SignedApproval | SignedRule], analyst: Principal
) -> dict[str, Any]:
    spec = plan.query
    qid = spec.query_id
    datasets = [e.ref for e in plan.extracts]
    try:
        prepared = prepare_release(release_spec(plan, ctx.settings.max_rows))
    except PrivacyError as exc:
        queries.set_state(ctx.engine, qid, "approved", expect=("running",), error_code="invalid_request")
        raise ApiError(
            422, ErrorCode.INVALID_REQUEST, f"the release cannot be built: {exc}", "statistics"
        ) from None
    try:
        reservation = ctx.ledger.reserve(qid, analyst=analyst.name, datasets=datasets, epsilon=spec.epsilon)
    except BudgetExceeded as exc:
        queries.set_state(ctx.engine, qid, "approved", expect=("running",), error_code="budget_exceeded")
        ctx.audit.record(
            "budget.refused",
            actor=analyst.name,
            query_id=qid,
            scope=exc.scope,
            requested=str(exc.requested),
            remaining=str(exc.remaining),
        )
        raise ApiError(409, ErrorCode.BUDGET_EXCEEDED, str(exc), "epsilon") from None
    del reservation
    down, witnessed = _health(ctx, plan)
    if down:
        ctx.ledger.refund(qid)
        queries.set_state(
            ctx.engine, qid, "approved", expect=("running",), error_code="connector_unavailable"
        )
        ctx.audit.record(
            "query.failed", query_id=qid, reason="connector_unavailable", charged=False, connectors=down
        )
        raise ApiError(
            503,
            ErrorCode.CONNECTOR_UNAVAILABLE,
            "a connector is not answering; nothing was charged, the query can be run again later",
            "query_id",
        )
    checkpoint = ctx.checkpointer.checkpoint() if ctx.checkpointer is not None else None
    tables, failures = _fetch(ctx, plan, found, analyst, checkpoint, witnessed)
    if failures:
        if not tables:
            ctx.ledger.refund(qid)
            queries.set_state(
                ctx.engine, qid, "approved", expect=("running",), error_code="connector_unavailable"
            )
            ctx.audit.record(
                "query.failed",
                query_id=qid,
                reason="connector_unavailable",
                charged=False,
                connectors=sorted(failures),
            )
            raise ApiError(
                503,
                ErrorCode.CONNECTOR_UNAVAILABLE,
                "a connector did not answer; nothing was charged, the query can be run again",
                "query_id",
            )
        ctx.ledger.fail(qid)
        queries.set_state(ctx.engine, qid, "failed", expect=("running",), error_code="connector_error")
        ctx.audit.record(
            "query.failed", query_id=qid, reason="connector_error", charged=True, connectors=sorted(failures)
        )
        raise ApiError(
            502,
            ErrorCode.CONNECTOR_ERROR,
            "a connector failed after others had answered; the reserved budget stays spent",
            "query_id",
        )
    frame = unit_frame(plan, tables)
    del tables
    released = prepared.run(frame)
    del frame
    doc = {
        "query_id": qid,
        "digest": spec.digest,
        "epsilon": str(spec.epsilon),
        "released_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "unit": spec.unit.value,
        "measure": spec.measure.label if spec.measure else None,
        "notes": [PROXY_NOTE] if spec.measure else [],
        "release": released.to_json_dict(),
    }
    # The release is audited before it is committed: if the entry cannot be written nothing is released
    # (503), and a crash between the two leaves an audited, charged release that is never served.
    ctx.audit.record(
        "query.released",
        actor=analyst.name,
        query_id=qid,
        query_digest=spec.digest,
        epsilon=str(spec.epsilon),
        result_digest=sha256_hex(canonical_json(doc)),
        release=doc["release"],
    )
    ctx.ledger.commit(qid, doc)
    queries.set_state(ctx.engine, qid, "released", expect=("running",))
    return doc


def _fetch(
    ctx: GatewayContext,
    plan: Plan,
    found: dict[str, SignedApproval | SignedRule],
    analyst: Principal,
    checkpoint: Checkpoint | None,
    witnessed: dict[str, int],
) -> tuple[dict[str, pa.Table], dict[str, str]]:
    """Call every planned connector concurrently; returns the tables and, per failed extract, its code."""
    spec = plan.query
    tables: dict[str, pa.Table] = {}
    failures: dict[str, str] = {}
    epoch = ctx.settings.token_epoch

    def call(e: ExtractPlan) -> tuple[pa.Table, dict[str, str]]:
        record = get_connector(ctx.engine, e.connector)
        if record is None or not record.enabled:
            raise ConnectorUnavailable(e.connector, None, "disabled", "the connector is not enabled")
        base = extract_request(e, spec, found[e.department], epoch=epoch, analyst=analyst.name)
        against = witnessed.get(e.connector, 0)
        link = ctx.federation().link(e.connector, record.endpoint, record.signing_key)

        def log_request(path: str, digest: str) -> None:
            ctx.audit.record(
                ACTION_CONNECTOR_REQUEST,
                actor="gateway",
                connector=e.connector,
                path=path,
                request_digest=digest,
                query_id=spec.query_id,
                dataset=e.dataset,
                checkpoint=checkpoint.note if checkpoint is not None else None,
            )

        for attempt in range(WITNESS_RETRIES):
            try:
                fields = _witness_fields(ctx, checkpoint, against)
            except ProofError:
                # The connector witnessed more of the log than this gateway holds: a restored backup or
                # another gateway's history. It will not serve us, and it must not: nothing is sent.
                raise ConnectorCallError(
                    e.connector,
                    None,
                    "audit_history_behind",
                    "the connector witnessed a longer audit log",
                ) from None
            req = base.model_copy(update=fields)
            try:
                table, receipt = link.extract(req, before_send=log_request)
                return table, receipt.as_dict()
            except ConnectorRefused as exc:
                moved = exc.extra.get("witnessed_size")
                # Concurrent runs moved the connector's witness on: prove against where it is now.
                if exc.code != "checkpoint_stale" or moved is None or attempt == WITNESS_RETRIES - 1:
                    raise
                against = moved
                time.sleep(random.uniform(0.002, 0.02))
        raise AssertionError("unreachable: the last attempt returns or raises")

    with ThreadPoolExecutor(max_workers=max(1, len(plan.extracts))) as pool:
        futures = {pool.submit(call, e): e for e in plan.extracts}
        note = checkpoint.note if checkpoint is not None else None
        for future in as_completed(futures):
            e = futures[future]
            try:
                table, receipt = future.result()
            except ConnectorCallError as exc:
                failures[e.ref] = exc.code
                _record_call(ctx, spec.query_id, e, note, exc.receipt, outcome=exc.code, status=exc.status)
                continue
            if not tables:
                ctx.ledger.mark_data_arrived(spec.query_id)
            tables[e.ref] = table
            _record_call(ctx, spec.query_id, e, note, receipt, outcome="ok", status=200)
    return tables, failures


def _record_call(
    ctx: GatewayContext,
    query_id: str,
    e: ExtractPlan,
    checkpoint: str | None,
    receipt: dict[str, str],
    *,
    outcome: str,
    status: int | None,
) -> None:
    """One `connector.call` entry, in the shape `fedgate audit reconcile` matches against the connector."""
    event = connector_call_event(
        connector=e.connector,
        path="/v1/extract",
        request_digest=receipt.get("request_digest", ""),
        response_digest=receipt.get("response_digest"),
        connector_signature=receipt.get("connector_signature"),
        checkpoint=checkpoint,
        outcome=outcome,
        query_id=query_id,
        dataset=e.dataset,
        status=status,
    )
    action = event.pop("action")
    ctx.audit.record(action, **event)


def _health(ctx: GatewayContext, plan: Plan) -> tuple[list[str], dict[str, int]]:
    """Connectors that do not answer a health check, and the audit size each live one last witnessed.

    Checked before any extract, so a connector that is down makes the query fail before any data arrives
    (and charge nothing)."""
    down: list[str] = []
    witnessed: dict[str, int] = {}
    for name in dict.fromkeys(e.connector for e in plan.extracts):
        record = get_connector(ctx.engine, name)
        if record is None or not record.enabled:
            down.append(name)
            continue
        link = ctx.federation().link(name, record.endpoint, record.signing_key)
        info = link.health(timeout=min(15.0, ctx.settings.connector_timeout_seconds))
        if info is None:
            down.append(name)
        else:
            size = info.get("witnessed_size", 0)
            witnessed[name] = size if isinstance(size, int) and size >= 0 else 0
    return down, witnessed


# Concurrent runs move a connector's witness on between our proof and its check; each retry proves
# against where it is now, after a short random pause so racing runs fall out of step.
WITNESS_RETRIES = 50


def _witness_fields(ctx: GatewayContext, checkpoint: Checkpoint | None, against: int) -> dict[str, Any]:
    """The checkpoint and the RFC 9162 consistency proof between it and the size a connector witnessed."""
    if checkpoint is None or ctx.checkpointer is None:
        return {}
    proof: list[bytes] = []
    if 0 < against != checkpoint.size:
        low, high = sorted((against, checkpoint.size))
        proof = ctx.checkpointer.log.consistency_proof(low, high)
    return {
        "checkpoint": checkpoint.note,
        "checkpoint_proof": tuple(base64.b64encode(p).decode() for p in proof),
        "checkpoint_against": against,
    }
