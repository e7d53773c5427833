"""Routes: submit queries, approve or reject them with department signatures, pre-approval rules."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Response, status
from fastapi.concurrency import run_in_threadpool

from aggregation.planner import PlanError, plan_query
from aggregation.preview import Preview, preview
from aggregation.query import QuerySpec
from connectors.protocol import ConnectorSchema, SignedApproval, SignedRule
from gateway import db, queries
from gateway.api.schemas import DecisionOut, QueriesOut, QueryOut, RejectionIn, RuleOut, RulesOut
from gateway.auth import Principal, Role
from gateway.context import ContextDep, GatewayContext
from gateway.deps import CurrentPrincipal, require_roles
from gateway.errors import ApiError, ErrorCode, error_responses
from gateway.registry import catalog
from gateway.runner import release_spec
from privacy.errors import PrivacyError

router = APIRouter(prefix="/v1", tags=["queries"], responses=error_responses(401, 403, 404, 409, 422))

Analyst = Annotated[Principal, Depends(require_roles(Role.ANALYST))]
DepartmentAdmin = Annotated[Principal, Depends(require_roles(Role.DEPARTMENT_ADMIN))]


def query_view(
    ctx: GatewayContext, record: queries.QueryRecord, cat: dict[str, ConnectorSchema] | None = None
) -> QueryOut:
    """A query with its departments, required approvals and decisions (`cat`: the catalog, read once
    by callers that show many queries)."""
    out = QueryOut(**record.view())
    try:
        plan = plan_query(record.spec, catalog(ctx.engine) if cat is None else cat)
    except PlanError:
        return out  # the catalog changed since submission; the run will refuse it with the reason
    found, _ = queries.covers(ctx.engine, record, plan)
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(db.approvals).where(db.approvals.c.query_id == record.id)).all()
    out.departments = list(plan.departments)
    out.required_approvals = queries.required_scopes(plan)
    out.covered_by = {
        d: "approval" if isinstance(c, SignedApproval) else f"rule:{c.rule.rule_id}" for d, c in found.items()
    }
    out.decisions = [
        DecisionOut(department=r.department, decision=r.decision, decided_by=r.decided_by) for r in rows
    ]
    return out


def _visible(ctx: GatewayContext, record: queries.QueryRecord, who: Principal) -> None:
    try:
        departments = plan_query(record.spec, catalog(ctx.engine)).departments
    except PlanError:
        departments = ()
    if not queries.visible_to(record, who, departments):
        # Not 403: whether a query id exists is itself not for everyone to learn.
        raise ApiError(404, ErrorCode.NOT_FOUND, "no query with that id", "query_id")


@router.post("/queries", response_model=QueryOut, status_code=status.HTTP_201_CREATED)
async def submit_query(spec: QuerySpec, ctx: ContextDep, analyst: Analyst, response: Response) -> QueryOut:
    """Submit a query; it is identified by the digest of its canonical form and never changes."""
    record, new = await run_in_threadpool(queries.submit, ctx.engine, spec, analyst)
    if new:
        await run_in_threadpool(
            lambda: ctx.audit.record(
                "query.submitted",
                actor=analyst.name,
                query_id=record.id,
                query_digest=record.digest,
                spec=spec.model_dump(mode="json"),
                state=record.state,
            )
        )
    else:
        response.status_code = status.HTTP_200_OK
    return await run_in_threadpool(query_view, ctx, record)


def _preview(ctx: GatewayContext, spec: QuerySpec) -> Preview:
    cat = catalog(ctx.engine)
    try:
        plan = plan_query(spec, cat)
    except PlanError as exc:
        raise ApiError(422, ErrorCode.INVALID_REQUEST, exc.message, exc.field) from None
    try:
        return preview(plan, release_spec(plan, ctx.settings.max_rows), cat)
    except (PrivacyError, ValueError) as exc:
        raise ApiError(
            422, ErrorCode.INVALID_REQUEST, f"the release cannot be built: {exc}", "statistics"
        ) from None


@router.post("/queries/preview", response_model=Preview)
async def preview_query(spec: QuerySpec, ctx: ContextDep, analyst: Analyst) -> Preview:
    """The expected 95% half-width of every statistic of a query at its epsilon, with warnings, from
    public parameters only: nothing is stored or charged and no connector is asked for data."""
    return await run_in_threadpool(_preview, ctx, spec)


@router.get("/queries", response_model=QueriesOut)
async def list_queries(ctx: ContextDep, who: CurrentPrincipal) -> QueriesOut:
    def views() -> list[QueryOut]:
        records = queries.list_queries(ctx.engine, who)
        cat = catalog(ctx.engine)
        return [query_view(ctx, r, cat) for r in records]

    return QueriesOut(queries=await run_in_threadpool(views))


@router.get("/queries/{query_id}", response_model=QueryOut)
async def get_query(query_id: str, ctx: ContextDep, who: CurrentPrincipal) -> QueryOut:
    record = await run_in_threadpool(queries.get_query, ctx.engine, query_id)
    await run_in_threadpool(_visible, ctx, record, who)
    return await run_in_threadpool(query_view, ctx, record)


@router.post("/queries/{query_id}/approvals", response_model=QueryOut)
async def approve_query(
    query_id: str, signed: SignedApproval, ctx: ContextDep, admin: DepartmentAdmin
) -> QueryOut:
    """Store your department's approval, signed with the department's own key over the query digest."""
    record = await run_in_threadpool(queries.record_approval, ctx.engine, query_id, signed, admin)
    await run_in_threadpool(
        lambda: ctx.audit.record(
            "query.approved",
            actor=admin.name,
            department=admin.department,
            query_id=query_id,
            query_digest=record.digest,
            approval_signature=signed.signature,
            approval_key=signed.key_fingerprint,
            epsilon=str(signed.approval.epsilon),
            state=record.state,
        )
    )
    return await run_in_threadpool(query_view, ctx, record)


@router.post("/queries/{query_id}/rejections", response_model=QueryOut)
async def reject_query(query_id: str, body: RejectionIn, ctx: ContextDep, admin: DepartmentAdmin) -> QueryOut:
    record = await run_in_threadpool(queries.record_rejection, ctx.engine, query_id, body.reason, admin)
    await run_in_threadpool(
        lambda: ctx.audit.record(
            "query.rejected",
            actor=admin.name,
            department=admin.department,
            query_id=query_id,
            reason=body.reason,
        )
    )
    return await run_in_threadpool(query_view, ctx, record)


def _rule_out(signed: SignedRule) -> RuleOut:
    r = signed.rule
    return RuleOut(
        rule_id=r.rule_id,
        department=r.department,
        units=[u.value for u in r.units],
        max_epsilon_per_query=r.max_epsilon_per_query,
        analysts=list(r.analysts),
        datasets=list(r.datasets),
    )


@router.post("/rules", response_model=RuleOut, status_code=status.HTTP_201_CREATED)
async def register_rule(signed: SignedRule, ctx: ContextDep, admin: DepartmentAdmin) -> RuleOut:
    """Register a pre-approval rule signed with your department's key (replaces a rule of the same id)."""
    rule = await run_in_threadpool(queries.record_rule, ctx.engine, signed, admin)
    await run_in_threadpool(
        lambda: ctx.audit.record(
            "rule.registered",
            actor=admin.name,
            department=rule.department,
            rule=rule.model_dump(mode="json"),
            signature=signed.signature,
        )
    )
    return _rule_out(signed)


@router.get("/rules", response_model=RulesOut)
async def list_rules(ctx: ContextDep, who: CurrentPrincipal) -> RulesOut:
    department = who.department if who.role is Role.DEPARTMENT_ADMIN else None
    rules = await run_in_threadpool(queries.list_rules, ctx.engine, department)
    return RulesOut(rules=[_rule_out(r) for r in rules])


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_rule(rule_id: str, ctx: ContextDep, admin: DepartmentAdmin) -> Response:
    await run_in_threadpool(queries.revoke_rule, ctx.engine, rule_id, admin)
    await run_in_threadpool(
        lambda: ctx.audit.record(
            "rule.revoked", actor=admin.name, department=admin.department, rule_id=rule_id
        )
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
