"""Routes: run an approved query, fetch its released result, and see or set budgets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import StringConstraints

from gateway import budget, queries, runner
from gateway.api import examples
from gateway.api.deps import Analyst, ContextDep, CurrentPrincipal, DepartmentAdmin, Operator
from gateway.api.errors import error_responses
from gateway.api.limits import RunSlot
from gateway.api.schemas import BudgetOut, DataYearBudgetOut, EpsilonIn, MeOut, ResultOut
from gateway.auth import Role
from gateway.errors import NotFound
from privacy.ledger import BudgetView
from privacy.neighbours import DEFAULT_NEIGHBOURING

router = APIRouter(prefix="/v1", tags=["runs and budget"])


def _budget_out(view: BudgetView, analyst: str | None) -> BudgetOut:
    mine = analyst is not None
    return BudgetOut(
        year_cap=str(view.year_cap),
        analyst=analyst,
        analyst_quota=str(view.analyst_quota) if mine and view.analyst_quota is not None else None,
        dataset_caps={k: str(v) for k, v in view.dataset_caps.items()},
        years=[
            DataYearBudgetOut(
                year=y.year,
                cap=str(y.cap),
                spent=str(y.spent),
                remaining=str(y.remaining),
                analyst_spent=str(y.analyst_spent) if mine else None,
                analyst_remaining=str(y.analyst_remaining)
                if mine and y.analyst_remaining is not None
                else None,
                datasets={k: str(v) for k, v in y.datasets.items()},
            )
            for y in view.years
        ],
    )


def result_out(doc: dict[str, Any]) -> ResultOut:
    return ResultOut(
        query_id=doc["query_id"],
        digest=doc["digest"],
        epsilon=doc["epsilon"],
        # Results released before the relation was recorded were all add/remove.
        neighbouring=doc.get("neighbouring", DEFAULT_NEIGHBOURING.value),
        released_at=doc["released_at"],
        result=doc,
    )


@router.post(
    "/queries/{query_id}/run", responses=error_responses(403, 404, 409, 422, 502), response_model=ResultOut
)
def run_query(query_id: str, ctx: ContextDep, analyst: Analyst, slot: RunSlot) -> ResultOut:
    """Run an approved query once; running it again returns the stored numbers and charges nothing."""
    return result_out(runner.run_query(ctx, query_id, analyst))


@router.get("/queries/{query_id}/result", responses=error_responses(404, 422), response_model=ResultOut)
def get_result(query_id: str, ctx: ContextDep, who: CurrentPrincipal) -> ResultOut:
    """A released result, re-served for free."""
    record = queries.get_query(ctx.engine, query_id)
    allowed = who.role in (Role.AUDITOR, Role.OPERATOR) or (
        who.role is Role.ANALYST and record.analyst == who.name
    )
    if not allowed:
        raise NotFound("no query with that id", "query_id")
    return result_out(runner.stored_result(ctx, record))


@router.get("/me", responses=error_responses(), response_model=MeOut)
def whoami(who: CurrentPrincipal) -> MeOut:
    """The caller's name, role and (for a department admin) department."""
    return MeOut(
        name=who.name, role=who.role.value, department=who.department, expires_at=who.expires_at.isoformat()
    )


DataYears = Annotated[
    list[Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")]] | None,
    Query(
        alias="year",
        max_length=50,
        description="data years to show (repeat: ?year=2024&year=2025); default: every year charged so far",
    ),
]


@router.get("/budget", responses=error_responses(422), response_model=BudgetOut)
def get_budget(ctx: ContextDep, who: CurrentPrincipal, years: DataYears = None) -> BudgetOut:
    """Spent and remaining epsilon per data year and, for an analyst, their own share of each year."""
    analyst = who.name if who.role is Role.ANALYST else None
    return _budget_out(ctx.ledger.remaining(analyst or "", years), analyst)


@router.put(
    "/budget/quotas/{analyst}", responses=error_responses(403, 404, 413, 422), response_model=BudgetOut
)
def set_quota(
    analyst: str,
    body: Annotated[EpsilonIn, Body(openapi_examples=examples.EPSILON)],
    ctx: ContextDep,
    operator: Operator,
) -> BudgetOut:
    """Set an analyst's epsilon quota per data year (operator); audited."""
    budget.set_quota(ctx.audit, ctx.ledger, analyst, body.epsilon, operator)
    return _budget_out(ctx.ledger.remaining(analyst), analyst)


@router.put(
    "/budget/datasets/{dataset}", responses=error_responses(403, 404, 413, 422), response_model=BudgetOut
)
def set_dataset_cap(
    dataset: str,
    body: Annotated[EpsilonIn, Body(openapi_examples=examples.EPSILON)],
    ctx: ContextDep,
    admin: DepartmentAdmin,
) -> BudgetOut:
    """A department caps the epsilon each data year of one of its datasets may lose (`connector.dataset`)."""
    budget.set_dataset_cap(ctx.audit, ctx.ledger, dataset, body.epsilon, admin)
    return _budget_out(ctx.ledger.remaining(""), None)
