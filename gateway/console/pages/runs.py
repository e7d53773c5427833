"""Runs as jobs in the console: the analyst starts a query, an indicator or a pack and watches it progress.

    GET  /console/analyst/runs          the indicator library and the packs, each with a run form
    POST /console/analyst/runs          queue an indicator or pack job (`gateway.jobs.submit`)
    POST /console/analyst/queries/{id}/job   queue a query job
    GET  /console/jobs                  one's jobs (an operator: every job)
    GET  /console/jobs/{id}             the job: a progress bar the page keeps current by polling
                                        `/console/jobs/{id}/status`, the figures with charts once done
    POST /console/jobs/{id}/cancel      cancel (`gateway.jobs.request_cancel`: the refund rule applies)

The jobs are the API's (`POST /v1/jobs` does the same `jobs.submit`): same principal, approvals, budget
and audit; the page only watches the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from aggregation.indicators import INDICATORS, PACKS
from gateway import jobs, queries
from gateway.api.indicators import IndicatorRunIn, PackRunIn
from gateway.auth import Role
from gateway.console import charts
from gateway.console.deps import AnalystSession, ConsoleSession, CsrfChecked, PageLang, require_role
from gateway.console.names import ConsoleLabels
from gateway.console.render import nav, render
from gateway.console.sessions import Session
from gateway.context import GatewayContext, get_context
from gateway.errors import Invalid, NotFound
from gateway.i18n import Lang, translate
from gateway.registry import catalog

router = APIRouter()

nav(Role.ANALYST, "/console/analyst/runs", "console.nav_runs")
nav(Role.ANALYST, "/console/jobs", "console.nav_jobs")
nav(Role.OPERATOR, "/console/jobs", "console.nav_jobs")


def _ctx(request: Request) -> GatewayContext:
    return get_context(request)


def _analyst(session: Session) -> None:
    require_role(session, Role.ANALYST)


@router.get("/analyst/runs")
def runs_page(request: Request, session: AnalystSession, lang: PageLang) -> Response:
    return render(
        request,
        "analyst_runs.html",
        lang,
        session,
        indicators=list(INDICATORS.values()),
        packs=list(PACKS.values()),
    )


@router.post("/analyst/runs")
def start_run(
    request: Request,
    session: CsrfChecked,
    kind: Annotated[str, Form(max_length=16)],
    name: Annotated[str, Form(max_length=64)],
    period: Annotated[str, Form(max_length=32)],
    epsilon: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    _analyst(session)
    known: set[str] = set(INDICATORS) if kind == "indicator" else set(PACKS) if kind == "pack" else set()
    if name not in known:
        raise NotFound(f"no {kind} named {name!r}", "name")
    body: dict[str, Any] = {"period": period.strip()}
    if epsilon.strip():
        body["epsilon"] = epsilon.strip()
    try:
        model = (PackRunIn if kind == "pack" else IndicatorRunIn).model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        raise Invalid(f"{field}: {first.get('msg', 'invalid value')}", field) from None
    params = model.model_dump(mode="json", exclude_none=True)
    job = jobs.submit(
        _ctx(request),
        jobs.JobKind(kind),
        name,
        params,
        principal=session.principal,
        submitted_by=session.principal.name,
    )
    return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)


@router.post("/analyst/queries/{query_id}/job")
def start_query_job(request: Request, query_id: str, session: CsrfChecked) -> Response:
    _analyst(session)
    ctx = _ctx(request)
    if queries.get_query(ctx.engine, query_id).analyst != session.principal.name:
        raise NotFound("no query with that id", "query_id")
    job = jobs.submit(
        ctx,
        jobs.JobKind.QUERY,
        query_id,
        {},
        principal=session.principal,
        submitted_by=session.principal.name,
    )
    return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)


@router.get("/jobs")
def jobs_page(request: Request, session: ConsoleSession, lang: PageLang) -> Response:
    require_role(session, Role.ANALYST, Role.OPERATOR)
    return render(
        request, "jobs.html", lang, session, jobs=jobs.list_jobs(_ctx(request).engine, session.principal)
    )


def _status(job: jobs.JobRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state.value,
        "steps_done": job.steps_done,
        "steps_total": job.steps_total,
        "current_step": job.current_step,
        "cancel_requested": job.cancel_requested,
        "final": job.state in jobs.FINAL,
    }


@router.get("/jobs/{job_id}/status")
def job_status(request: Request, job_id: str, session: ConsoleSession) -> Response:
    return JSONResponse(_status(jobs.visible_job(_ctx(request).engine, job_id, session.principal)))


def _indicator_charts(result: Mapping[str, Any], lang: Lang, names: ConsoleLabels) -> list[Any]:
    """Charts of an indicator's figures: each Lorenz curve with its band; shares by group with error
    bars; a ratio over several groups (months) as a line with its band."""
    out: list[Any] = []
    for name, points in (result.get("curves") or {}).items():
        out.append(
            charts.lorenz(
                [
                    charts.Point(x=p["p"], y=p.get("share"), low=p.get("low"), high=p.get("high"))
                    for p in points
                ],
                title=f"{result.get('title_zh' if lang is Lang.ZH else 'title')} · {name}",
                x_label=translate("console.chart_population_share", lang),
                y_label=translate("console.chart_income_share", lang),
            )
        )
    by_figure: dict[str, list[Mapping[str, Any]]] = {}
    for f in result.get("figures", ()):
        by_figure.setdefault(f["figure"], []).append(f)
    for figure, rows in by_figure.items():
        if len(rows) < 2:
            continue
        unit = rows[0].get("unit")
        title = f"{rows[0].get('label') or figure}"
        if unit == "share":
            out.append(
                charts.bars(
                    [
                        charts.Bar(
                            label=names.any_label(r["group"]), value=r["value"], low=r["low"], high=r["high"]
                        )
                        for r in rows[:60]
                    ],
                    title=title,
                )
            )
        elif unit == "ratio":
            out.append(
                charts.line(
                    [
                        charts.Point(x=i, y=r["value"], low=r["low"], high=r["high"], label=r["group"])
                        for i, r in enumerate(rows)
                    ],
                    title=title,
                    target=1.5 if "urban" in figure else None,
                    target_label=translate("console.target_line", lang, value="1.5"),
                )
            )
    return out


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, session: ConsoleSession, lang: PageLang) -> Response:
    ctx = _ctx(request)
    job = jobs.visible_job(ctx.engine, job_id, session.principal)
    indicators = []
    if job.state is jobs.JobState.SUCCEEDED and job.kind is not jobs.JobKind.QUERY and job.result:
        names = ConsoleLabels.of(catalog(ctx.engine))
        for result in job.result.get("indicators", ()):
            indicators.append({"result": result, "charts": _indicator_charts(result, lang, names)})
    return render(request, "job.html", lang, session, job=job, job_status=_status(job), indicators=indicators)


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, session: CsrfChecked) -> Response:
    jobs.request_cancel(_ctx(request), job_id, session.principal)
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)
