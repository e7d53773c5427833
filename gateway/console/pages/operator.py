"""The operator's pages: endpoints, connectors, principals and keys, quotas, and the metrics.

Each form calls the service the JSON API's route calls (`gateway.registry`, `gateway.auth`,
`gateway.budget`), with the same role check and the same audited change; a new key is shown once, on
the page that created it, and never stored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from aggregation.indicators import PACKS
from gateway import archive, budget, registry, schedules
from gateway.api.schemas import EpsilonIn
from gateway.auth import Role, create_principal, list_principals, revoke_principal
from gateway.console.deps import CsrfChecked, OperatorSession, PageLang, require_role
from gateway.console.render import nav, render
from gateway.console.sessions import Session
from gateway.context import GatewayContext, get_context
from gateway.errors import Invalid
from gateway.observability import GatewayMetrics

router = APIRouter(prefix="/operator")

nav(Role.OPERATOR, "/console/operator/endpoints", "console.nav_endpoints")
nav(Role.OPERATOR, "/console/operator/connectors", "console.nav_connectors")
nav(Role.OPERATOR, "/console/operator/principals", "console.nav_principals")
nav(Role.OPERATOR, "/console/operator/quotas", "console.nav_quotas")
nav(Role.OPERATOR, "/console/operator/schedules", "console.nav_schedules")
nav(Role.OPERATOR, "/console/operator/metrics", "console.nav_metrics")

Text = Annotated[str, Form(max_length=512)]


def _ctx(request: Request) -> GatewayContext:
    return get_context(request)


def _operator(session: Session) -> None:
    require_role(session, Role.OPERATOR)


def _back(path: str) -> Response:
    return RedirectResponse(f"/console/operator/{path}", status_code=303)


@router.get("/endpoints")
def endpoints(request: Request, session: OperatorSession, lang: PageLang) -> Response:
    return render(
        request,
        "operator_endpoints.html",
        lang,
        session,
        endpoints=registry.list_endpoints(_ctx(request).engine),
    )


@router.post("/endpoints")
def allow_endpoint(request: Request, session: CsrfChecked, url: Text) -> Response:
    _operator(session)
    ctx = _ctx(request)
    registry.allow_endpoint(ctx.audit, url, session.principal, production=ctx.settings.mode == "production")
    return _back("endpoints")


@router.post("/endpoints/remove")
def remove_endpoint(request: Request, session: CsrfChecked, url: Text) -> Response:
    _operator(session)
    registry.remove_endpoint(_ctx(request).audit, url, session.principal)
    return _back("endpoints")


@router.get("/connectors")
def connectors(request: Request, session: OperatorSession, lang: PageLang) -> Response:
    return render(
        request,
        "operator_connectors.html",
        lang,
        session,
        connectors=registry.list_connectors(_ctx(request).engine),
    )


@router.post("/connectors/{name}/{action}")
def set_connector(request: Request, name: str, action: str, session: CsrfChecked) -> Response:
    _operator(session)
    if action not in ("enable", "disable"):
        raise Invalid("the action is enable or disable", "action")
    registry.set_enabled(_ctx(request).audit, name, action == "enable", session.principal)
    return _back("connectors")


@router.get("/principals")
def principals(request: Request, session: OperatorSession, lang: PageLang) -> Response:
    return render(
        request,
        "operator_principals.html",
        lang,
        session,
        principals=list_principals(_ctx(request).engine),
        roles=[r.value for r in Role],
        new_key=None,
        new_name=None,
    )


@router.post("/principals")
def create(
    request: Request,
    session: CsrfChecked,
    lang: PageLang,
    name: Annotated[str, Form(max_length=64)],
    role: Annotated[str, Form(max_length=32)],
    department: Annotated[str, Form(max_length=64)] = "",
    expires_days: Annotated[int, Form(ge=1, le=3650)] = 90,
) -> Response:
    """Create a principal; its key is on this one response only (like `fedgate users create`)."""
    _operator(session)
    ctx = _ctx(request)
    _, key = create_principal(
        ctx.engine,
        role=role,
        name=name.strip(),
        department=department.strip() or None,
        expires_days=expires_days,
        trail=ctx.audit,
        actor=session.principal.name,
    )
    return render(
        request,
        "operator_principals.html",
        lang,
        session,
        status=201,
        principals=list_principals(ctx.engine),
        roles=[r.value for r in Role],
        new_key=key,
        new_name=name.strip(),
    )


@router.post("/principals/{name}/revoke")
def revoke(request: Request, name: str, session: CsrfChecked) -> Response:
    _operator(session)
    ctx = _ctx(request)
    revoke_principal(ctx.engine, name, trail=ctx.audit, actor=session.principal.name)
    return _back("principals")


@router.get("/quotas")
def quotas(request: Request, session: OperatorSession, lang: PageLang) -> Response:
    ctx = _ctx(request)
    analysts = [p for p in list_principals(ctx.engine) if p.role is Role.ANALYST]
    rows = [(p, ctx.ledger.remaining(p.name).analyst_quota) for p in analysts]
    return render(request, "operator_quotas.html", lang, session, rows=rows, year_cap=ctx.ledger.year_cap)


@router.post("/quotas")
def set_quota(
    request: Request, session: CsrfChecked, analyst: Annotated[str, Form(max_length=100)], epsilon: Text
) -> Response:
    _operator(session)
    try:
        amount = EpsilonIn.model_validate({"epsilon": epsilon.strip()}).epsilon
    except ValidationError:
        raise Invalid(
            "epsilon must be a positive number with at most 9 decimals, at most 1000", "epsilon"
        ) from None
    ctx = _ctx(request)
    budget.set_quota(ctx.audit, ctx.ledger, analyst, amount, session.principal)
    return _back("quotas")


@router.get("/metrics")
def metrics(request: Request, session: OperatorSession, lang: PageLang) -> Response:
    """The gateway's request counters, as the operator's `/metrics` has them, by route and status."""
    # The counters live on the gateway's app, which mounts this one.
    collected = request.app.state.gateway_metrics()
    rows: list[tuple[str, str, str, float]] = []
    if isinstance(collected, GatewayMetrics):
        for family in text_string_to_metric_families(collected.render().decode()):
            if family.name != "fedgate_http_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    rows.append((labels["method"], labels["route"], labels["status"], sample.value))
    rows.sort(key=lambda r: -r[3])
    return render(request, "operator_metrics.html", lang, session, rows=rows, enabled=collected is not None)


@router.get("/schedules")
def schedules_page(request: Request, session: OperatorSession, lang: PageLang) -> Response:
    ctx = _ctx(request)
    analysts = [
        p.name for p in list_principals(ctx.engine) if p.role is Role.ANALYST and p.status() == "active"
    ]
    return render(
        request,
        "operator_schedules.html",
        lang,
        session,
        schedules=schedules.list_schedules(ctx.engine),
        archived=archive.list_archived(ctx.engine, session.principal, limit=24),
        packs=list(PACKS.values()),
        analysts=analysts,
        timezone=ctx.settings.schedule_timezone,
    )


@router.post("/schedules")
def create_schedule(
    request: Request,
    session: CsrfChecked,
    name: Annotated[str, Form(max_length=100)],
    pack: Annotated[str, Form(max_length=32)],
    run_as: Annotated[str, Form(max_length=100)],
    day: Annotated[str, Form(max_length=20)] = "5",
    hour: Annotated[str, Form(max_length=20)] = "2",
    minute: Annotated[str, Form(max_length=20)] = "0",
    epsilon: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Schedule a pack for the previous month, e.g. on the 5th at 02:00 (`gateway.schedules.create`)."""
    _operator(session)
    amount = None
    if epsilon.strip():
        try:
            amount = EpsilonIn.model_validate({"epsilon": epsilon.strip()}).epsilon
        except ValidationError:
            raise Invalid("epsilon must be a positive number with at most 9 decimals", "epsilon") from None
    schedules.create(
        _ctx(request),
        session.principal,
        name=name.strip(),
        pack=pack,
        period_rule="previous_month",
        cron={
            "second": "0",
            "minute": minute.strip(),
            "hour": hour.strip(),
            "day": day.strip(),
            "month": "*",
            "day_of_week": "*",
        },
        run_as=run_as,
        epsilon=amount,
    )
    return _back("schedules")


@router.post("/schedules/{schedule_id}/{action}")
def schedule_action(request: Request, schedule_id: str, action: str, session: CsrfChecked) -> Response:
    _operator(session)
    ctx = _ctx(request)
    states = {
        "pause": schedules.ScheduleState.PAUSED,
        "resume": schedules.ScheduleState.ACTIVE,
        "remove": schedules.ScheduleState.REMOVED,
    }
    if action == "run":
        job = schedules.fire(ctx, schedule_id, actor=session.principal.name, trigger="operator")
        return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)
    if action not in states:
        raise Invalid("the action is pause, resume, remove or run", "action")
    schedules.set_state(ctx, schedule_id, session.principal, states[action])
    return _back("schedules")
