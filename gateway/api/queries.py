"""Routes: submit queries, approve or reject them with department signatures, pre-approval rules."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Response, status

from aggregation.planner import PlanError, plan_query
from aggregation.preview import Preview, preview
from aggregation.query import QuerySpec
from connectors.protocol import ConnectorSchema, SignedApproval, SignedRule
from gateway import queries
from gateway.api import examples
from gateway.api.deps import Analyst, ContextDep, CurrentPrincipal, DepartmentAdmin, GatewayContext
from gateway.api.errors import error_responses
from gateway.api.schemas import DecisionOut, QueriesOut, QueryOut, RejectionIn, RuleOut, RulesOut
from gateway.auth import Principal, Role
from gateway.errors import Invalid, NotFound
from gateway.registry import catalog
from gateway.runner import release_spec
from privacy.errors import PrivacyError

QUERY_SIGNATURE_HEADER = "x-fedgate-query-signature"
"""base64 Ed25519 signature, by the analyst's own key, of `connectors.protocol.query_signing_bytes`"""

router = APIRouter(prefix="/v1", tags=["queries"])


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
    out.departments = list(plan.departments)
    out.required_approvals = queries.required_scopes(plan)
    out.covered_by = {
        d: "approval" if isinstance(c, SignedApproval) else f"rule:{c.rule.rule_id}" for d, c in found.items()
    }
    out.decisions = [
        DecisionOut(department=d.department, decision=d.decision, decided_by=d.decided_by)
        for d in queries.decisions(ctx.engine, record.id)
    ]
    return out


def _visible(ctx: GatewayContext, record: queries.QueryRecord, who: Principal) -> None:
    try:
        departments = plan_query(record.spec, catalog(ctx.engine)).departments
    except PlanError:
        departments = ()
    if not queries.visible_to(record, who, departments):
        # Not 403: whether a query id exists is itself not for everyone to learn.
        raise NotFound("no query with that id", "query_id")


@router.post(
    "/queries",
    responses=error_responses(403, 413, 422),
    response_model=QueryOut,
    status_code=status.HTTP_201_CREATED,
)
def submit_query(
    spec: Annotated[QuerySpec, Body(openapi_examples=examples.QUERY)],
    ctx: ContextDep,
    analyst: Analyst,
    response: Response,
    signature: Annotated[
        str | None,
        Header(
            alias=QUERY_SIGNATURE_HEADER,
            max_length=128,
            description="base64 Ed25519 signature of the query by the analyst's own key (required when the "
            "query names analyst_key)",
        ),
    ] = None,
) -> QueryOut:
    """Submit a query; it is identified by the digest of its canonical form and never changes. A query
    naming `analyst_key` carries that key's signature of it in the `x-fedgate-query-signature` header."""
    record, new = queries.submit(ctx.audit, spec, analyst, signature=signature)
    if not new:
        response.status_code = status.HTTP_200_OK
    return query_view(ctx, record)


@router.post("/queries/preview", responses=error_responses(403, 413, 422), response_model=Preview)
def preview_query(
    spec: Annotated[QuerySpec, Body(openapi_examples=examples.QUERY)], ctx: ContextDep, analyst: Analyst
) -> Preview:
    """The expected 95% half-width of every statistic of a query at its epsilon, with warnings, from
    public parameters only: nothing is stored or charged and no connector is asked for data."""
    cat = catalog(ctx.engine)
    try:
        plan = plan_query(spec, cat)
    except PlanError as exc:
        raise Invalid(exc.message, exc.field) from None
    try:
        return preview(plan, release_spec(plan), cat)
    except (PrivacyError, ValueError) as exc:
        raise Invalid(f"the release cannot be built: {exc}", "statistics") from None


@router.get("/queries", responses=error_responses(), response_model=QueriesOut)
def list_queries(ctx: ContextDep, who: CurrentPrincipal) -> QueriesOut:
    """Queries you may see: an analyst's own; every query for operators, department admins and auditors."""
    records = queries.list_queries(ctx.engine, who)
    cat = catalog(ctx.engine)
    return QueriesOut(queries=[query_view(ctx, r, cat) for r in records])


@router.get("/queries/{query_id}", responses=error_responses(404, 422), response_model=QueryOut)
def get_query(query_id: str, ctx: ContextDep, who: CurrentPrincipal) -> QueryOut:
    """One query: its state, the approvals it still needs from each department and the decisions made."""
    record = queries.get_query(ctx.engine, query_id)
    _visible(ctx, record, who)
    return query_view(ctx, record)


@router.post(
    "/queries/{query_id}/approvals",
    responses=error_responses(403, 404, 409, 413, 422),
    response_model=QueryOut,
)
def approve_query(
    query_id: str,
    signed: Annotated[SignedApproval, Body(openapi_examples=examples.APPROVAL)],
    ctx: ContextDep,
    admin: DepartmentAdmin,
) -> QueryOut:
    """Store your department's approval, signed with the department's own key over the query digest."""
    return query_view(ctx, queries.record_approval(ctx.audit, query_id, signed, admin))


@router.post(
    "/queries/{query_id}/rejections",
    responses=error_responses(403, 404, 409, 413, 422),
    response_model=QueryOut,
)
def reject_query(
    query_id: str,
    body: Annotated[RejectionIn, Body(openapi_examples=examples.REJECTION)],
    ctx: ContextDep,
    admin: DepartmentAdmin,
) -> QueryOut:
    """Reject a query touching your department's data (department admin), with a reason for the analyst;
    audited."""
    return query_view(ctx, queries.record_rejection(ctx.audit, query_id, body.reason, admin))


def _rule_out(signed: SignedRule) -> RuleOut:
    r = signed.rule
    return RuleOut(
        rule_id=r.rule_id,
        department=r.department,
        units=[u.value for u in r.units],
        max_epsilon_per_query=r.max_epsilon_per_query,
        analysts=list(r.analysts),
        datasets=list(r.datasets),
        issued_at=r.issued_at,
        expires_at=r.expires_at,
        digest=r.digest(),
        replaces=r.replaces,
    )


@router.post(
    "/rules",
    responses=error_responses(403, 409, 413, 422),
    response_model=RuleOut,
    status_code=status.HTTP_201_CREATED,
)
def register_rule(
    signed: Annotated[SignedRule, Body(openapi_examples=examples.RULE)],
    ctx: ContextDep,
    admin: DepartmentAdmin,
) -> RuleOut:
    """Register a pre-approval rule signed with your department's key; a new version of one of your rules
    names the digest of the version it replaces, which is kept (superseded), never deleted."""
    queries.record_rule(ctx.audit, signed, admin)
    return _rule_out(signed)


@router.get("/rules", responses=error_responses(), response_model=RulesOut)
def list_rules(ctx: ContextDep, who: CurrentPrincipal) -> RulesOut:
    """The pre-approval rules in force, with what each covers."""
    department = who.department if who.role is Role.DEPARTMENT_ADMIN else None
    return RulesOut(rules=[_rule_out(r) for r in queries.list_rules(ctx.engine, department)])


@router.delete(
    "/rules/{rule_id}", responses=error_responses(403, 404, 422), status_code=status.HTTP_204_NO_CONTENT
)
def revoke_rule(rule_id: str, ctx: ContextDep, admin: DepartmentAdmin) -> Response:
    """Revoke one of your department's pre-approval rules (department admin); audited."""
    queries.revoke_rule(ctx.audit, rule_id, admin)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
