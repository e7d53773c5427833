"""Routes: run an approved query, fetch its released result, and see or set budgets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from gateway import queries, runner
from gateway.api.schemas import BudgetOut, EpsilonIn, MeOut, ResultOut
from gateway.auth import Principal, Role
from gateway.context import ContextDep
from gateway.deps import CurrentPrincipal, require_roles
from gateway.errors import ApiError, ErrorCode, error_responses
from gateway.limits import RunSlot
from privacy.ledger import BudgetView

router = APIRouter(
    prefix="/v1", tags=["runs and budget"], responses=error_responses(401, 403, 404, 409, 413, 422, 429, 503)
)

Analyst = Annotated[Principal, Depends(require_roles(Role.ANALYST))]
Operator = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
DepartmentAdmin = Annotated[Principal, Depends(require_roles(Role.DEPARTMENT_ADMIN))]


def _budget_out(view: BudgetView, analyst: str | None) -> BudgetOut:
    mine = analyst is not None
    return BudgetOut(
        window=view.window,
        federation_cap=str(view.window_cap),
        federation_remaining=str(view.window_remaining),
        multi_year_windows=list(view.multi_year_windows),
        multi_year_cap=str(view.multi_year_cap),
        multi_year_remaining=str(view.multi_year_remaining),
        analyst=analyst,
        analyst_quota=str(view.analyst_quota) if mine and view.analyst_quota is not None else None,
        analyst_remaining=str(view.analyst_remaining)
        if mine and view.analyst_remaining is not None
        else None,
        datasets={k: str(v) for k, v in view.datasets.items()},
    )


def _result_out(doc: dict[str, Any]) -> ResultOut:
    return ResultOut(
        query_id=doc["query_id"],
        digest=doc["digest"],
        epsilon=doc["epsilon"],
        released_at=doc["released_at"],
        result=doc,
    )


@router.post("/queries/{query_id}/run", response_model=ResultOut)
async def run_query(query_id: str, ctx: ContextDep, analyst: Analyst, slot: RunSlot) -> ResultOut:
    """Run an approved query once; running it again returns the stored numbers and charges nothing."""
    doc = await run_in_threadpool(runner.run_query, ctx, query_id, analyst)
    return _result_out(doc)


@router.get("/queries/{query_id}/result", response_model=ResultOut)
async def get_result(query_id: str, ctx: ContextDep, who: CurrentPrincipal) -> ResultOut:
    """A released result, re-served for free."""
    record = await run_in_threadpool(queries.get_query, ctx.engine, query_id)
    allowed = who.role in (Role.AUDITOR, Role.OPERATOR) or (
        who.role is Role.ANALYST and record.analyst == who.name
    )
    if not allowed:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no query with that id", "query_id")
    return _result_out(await run_in_threadpool(runner.stored_result, ctx, record))


@router.get("/me", response_model=MeOut)
async def whoami(who: CurrentPrincipal) -> MeOut:
    """The caller's name, role and (for a department admin) department."""
    return MeOut(
        name=who.name, role=who.role.value, department=who.department, expires_at=who.expires_at.isoformat()
    )


@router.get("/budget", response_model=BudgetOut)
async def get_budget(ctx: ContextDep, who: CurrentPrincipal) -> BudgetOut:
    """The federation's remaining epsilon in this window and, for an analyst, their own quota."""
    analyst = who.name if who.role is Role.ANALYST else None
    view = await run_in_threadpool(ctx.ledger.remaining, analyst or "")
    return _budget_out(view, analyst)


@router.put("/budget/quotas/{analyst}", response_model=BudgetOut)
async def set_quota(analyst: str, body: EpsilonIn, ctx: ContextDep, operator: Operator) -> BudgetOut:
    await run_in_threadpool(ctx.ledger.set_analyst_quota, analyst, body.epsilon)
    await run_in_threadpool(
        lambda: ctx.audit.record(
            "quota.changed", actor=operator.name, analyst=analyst, epsilon=str(body.epsilon)
        )
    )
    return _budget_out(await run_in_threadpool(ctx.ledger.remaining, analyst), analyst)


@router.put("/budget/datasets/{dataset}", response_model=BudgetOut)
async def set_dataset_cap(
    dataset: str, body: EpsilonIn, ctx: ContextDep, admin: DepartmentAdmin
) -> BudgetOut:
    """A department caps the epsilon any window may spend on one of its datasets (`connector.dataset`)."""
    from gateway.registry import get_connector

    connector = await run_in_threadpool(get_connector, ctx.engine, dataset.partition(".")[0])
    if connector is None or connector.department != admin.department:
        raise ApiError(403, ErrorCode.FORBIDDEN, "you cap only your own department's datasets", "dataset")
    await run_in_threadpool(ctx.ledger.set_dataset_cap, dataset, body.epsilon)
    await run_in_threadpool(
        lambda: ctx.audit.record(
            "dataset_cap.changed", actor=admin.name, dataset=dataset, epsilon=str(body.epsilon)
        )
    )
    return _budget_out(await run_in_threadpool(ctx.ledger.remaining, ""), None)
