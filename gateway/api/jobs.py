"""Routes: runs as jobs. Submit (202 and the job), list, show, follow (server-sent events), fetch the
result, cancel.

    POST /v1/jobs                 {"kind": "query", "query_id": ...}
                                  {"kind": "indicator", "name": ..., <the body of /v1/indicators/{name}/run>}
                                  {"kind": "pack", "name": ..., <the body of /v1/packs/{name}/run>}
    GET  /v1/jobs                 own jobs (an operator: every job), newest first
    GET  /v1/jobs/{id}            the job
    GET  /v1/jobs/{id}/events     text/event-stream: `event: job` with the job on every change, closing
                                  at a final state
    GET  /v1/jobs/{id}/result     the result of a succeeded job
    POST /v1/jobs/{id}/cancel     the job, cancelled or asked to stop at its next step

The synchronous routes (`/v1/queries/{id}/run`, `/v1/indicators/{name}/run`, `/v1/packs/{name}/run`)
stay as they are: they call the same services, and a job is the same call made in the background.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from aggregation.indicators import INDICATORS, PACKS
from gateway import jobs, queries, runner
from gateway.api import examples
from gateway.api.deps import Analyst, ContextDep, CurrentPrincipal
from gateway.api.errors import ErrorBody, error_responses
from gateway.api.indicators import IndicatorRunIn, IndicatorsRunOut, PackRunIn
from gateway.api.runs import result_out
from gateway.api.schemas import ResultOut
from gateway.errors import Conflict, NotFound

router = APIRouter(prefix="/v1", tags=["jobs"])

# How often the events stream looks at the job's row, and how often it sends a keep-alive comment.
POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0


class QueryJobIn(BaseModel):
    """A job that runs one approved query of the caller."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"kind": "query", "query_id": "q-0673c320d93cf623"}]}
    )
    kind: Literal["query"] = Field(description="`query`: run an approved query")
    query_id: str = Field(min_length=1, max_length=64, description="an approved query of the caller")


class IndicatorJobIn(IndicatorRunIn):
    """A job that runs one indicator of the library, with the body of `/v1/indicators/{name}/run`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"kind": "indicator", "name": "income_bands", "period": "2025-12"}]},
    )
    kind: Literal["indicator"] = Field(description="`indicator`: run an indicator of the library")
    name: str = Field(min_length=1, max_length=64, description="an indicator of the library")


class PackJobIn(PackRunIn):
    """A job that runs one pack of the monitoring calendar, with the body of `/v1/packs/{name}/run`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"kind": "pack", "name": "monthly", "period": "2025-12"}]},
    )
    kind: Literal["pack"] = Field(description="`pack`: run a pack of the monitoring calendar")
    name: str = Field(min_length=1, max_length=64, description="a pack of the monitoring calendar")


JobIn = Annotated[QueryJobIn | IndicatorJobIn | PackJobIn, Field(discriminator="kind")]


class JobOut(BaseModel):
    """A job: what it runs, as whom, how far it got, and its result or public error."""

    id: str = Field(description="the job's id")
    kind: jobs.JobKind = Field(description="what the job runs: a query, an indicator or a pack")
    target: str = Field(description="the query id, the indicator's name or the pack's name")
    params: dict[str, Any] = Field(description="the run's parameters as submitted")
    principal: str = Field(description="the analyst the job runs as")
    submitted_by: str = Field(description="who submitted it: the analyst, or the operator's schedule")
    schedule_id: str | None = Field(description="the schedule that submitted it, if one did")
    state: jobs.JobState = Field(description="queued, running, or a final state")
    steps_done: int = Field(description="steps finished so far")
    steps_total: int = Field(description="0 until the run knows how many steps it takes")
    current_step: str | None = Field(description="a public label of the step under way")
    cancel_requested: bool = Field(description="a cancel was asked for; a running job stops at its next step")
    created_at: datetime = Field(description="when it was submitted (UTC)")
    started_at: datetime | None = Field(description="when it started running, or null while queued")
    finished_at: datetime | None = Field(description="when it reached a final state, or null")
    updated_at: datetime = Field(description="its last change (UTC)")
    error: ErrorBody | None = Field(description="the public error of a failed, cancelled or interrupted job")
    result: str | None = Field(description="the result's path, once the job succeeded")
    events: str = Field(description="the path of the job's server-sent events")


class JobListOut(BaseModel):
    """Jobs, newest first."""

    jobs: list[JobOut] = Field(description="the jobs the caller may see")


class JobResultOut(BaseModel):
    """A succeeded job's result: a query's released result, or an indicator's or a pack's figures."""

    job_id: str = Field(description="the job's id")
    kind: jobs.JobKind = Field(description="what the job ran")
    query: ResultOut | None = Field(None, description="a query job's released result")
    run: IndicatorsRunOut | None = Field(None, description="an indicator or pack job's figures")


def job_out(job: jobs.JobRecord) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        target=job.target,
        params=job.params,
        principal=job.principal,
        submitted_by=job.submitted_by,
        schedule_id=job.schedule_id,
        state=job.state,
        steps_done=job.steps_done,
        steps_total=job.steps_total,
        current_step=job.current_step,
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        error=ErrorBody.model_validate(job.error) if job.error is not None else None,
        result=f"/v1/jobs/{job.id}/result" if job.state is jobs.JobState.SUCCEEDED else None,
        events=f"/v1/jobs/{job.id}/events",
    )


def _target_and_params(
    body: QueryJobIn | IndicatorJobIn | PackJobIn,
) -> tuple[jobs.JobKind, str, dict[str, Any]]:
    if isinstance(body, QueryJobIn):
        return jobs.JobKind.QUERY, body.query_id, {}
    params = body.model_dump(mode="json", exclude={"kind", "name"}, exclude_none=True)
    return jobs.JobKind(body.kind), body.name, params


@router.post("/jobs", response_model=JobOut, status_code=202, responses=error_responses(403, 404, 413, 422))
def submit_job(
    body: Annotated[JobIn, Body(openapi_examples=examples.JOB)], ctx: ContextDep, analyst: Analyst
) -> JobOut:
    """Queue a run of a query, an indicator or a pack; it runs as the caller, with the approvals, budget
    and audit of the synchronous route. 202 with the job at once; follow it at `events`."""
    kind, target, params = _target_and_params(body)
    # Refused now rather than in the background: a query that is not the caller's, an indicator or a
    # pack that does not exist.
    if kind is jobs.JobKind.QUERY and queries.get_query(ctx.engine, target).analyst != analyst.name:
        raise NotFound("no query with that id", "query_id")
    known = INDICATORS if kind is jobs.JobKind.INDICATOR else PACKS if kind is jobs.JobKind.PACK else None
    if known is not None and target not in known:
        raise NotFound(f"no {kind} named {target!r}; known: {', '.join(sorted(known))}", "body.name")
    return job_out(jobs.submit(ctx, kind, target, params, principal=analyst, submitted_by=analyst.name))


@router.get("/jobs", response_model=JobListOut, responses=error_responses(422))
def list_jobs(
    ctx: ContextDep,
    who: CurrentPrincipal,
    state: Annotated[jobs.JobState | None, Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JobListOut:
    """The caller's jobs, newest first; an operator sees every job."""
    return JobListOut(jobs=[job_out(j) for j in jobs.list_jobs(ctx.engine, who, state=state, limit=limit)])


@router.get("/jobs/{job_id}", response_model=JobOut, responses=error_responses(404, 422))
def get_job(job_id: str, ctx: ContextDep, who: CurrentPrincipal) -> JobOut:
    """The job, if it is the caller's (an operator sees every job)."""
    return job_out(jobs.visible_job(ctx.engine, job_id, who))


@router.get("/jobs/{job_id}/result", response_model=JobResultOut, responses=error_responses(404, 409, 422))
def get_job_result(job_id: str, ctx: ContextDep, who: CurrentPrincipal) -> JobResultOut:
    """A succeeded job's result; a job that has not succeeded is a conflict naming its state."""
    job = jobs.visible_job(ctx.engine, job_id, who)
    if job.state is not jobs.JobState.SUCCEEDED or job.result is None:
        raise Conflict(
            f"the job is {job.state}; it has a result once it succeeded", "job_id", reason=job.state
        )
    if job.kind is jobs.JobKind.QUERY:
        record = queries.get_query(ctx.engine, job.result["query_id"])
        return JobResultOut(job_id=job.id, kind=job.kind, query=result_out(runner.stored_result(ctx, record)))
    return JobResultOut(job_id=job.id, kind=job.kind, run=IndicatorsRunOut.model_validate(job.result))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=error_responses(404, 409, 422))
def cancel_job(job_id: str, ctx: ContextDep, who: CurrentPrincipal) -> JobOut:
    """Cancel: a queued job at once; a running one at its next step before data arrives (what no data
    reached is refunded, the rest stays charged). Its analyst or an operator may cancel."""
    return job_out(jobs.request_cancel(ctx, job_id, who))


def _sse(job: jobs.JobRecord) -> bytes:
    data = job_out(job).model_dump_json()
    return f"event: job\nid: {job.updated_at.isoformat()}\ndata: {data}\n\n".encode()


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the job on every change"},
        **error_responses(404, 422),
    },
)
async def job_events(
    job_id: str, request: Request, ctx: ContextDep, who: CurrentPrincipal
) -> StreamingResponse:
    """Server-sent events: `event: job` with the job (as `GET /v1/jobs/{id}`) at once and on every change,
    closing after the final state."""
    first = await run_in_threadpool(jobs.visible_job, ctx.engine, job_id, who)

    async def stream() -> Any:
        job = first
        yield _sse(job)
        seen = job.snapshot()
        quiet = 0.0
        while job.state not in jobs.FINAL:
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_SECONDS)
            job = await run_in_threadpool(jobs.get_job, ctx.engine, job_id)
            if job.snapshot() != seen:
                seen = job.snapshot()
                quiet = 0.0
                yield _sse(job)
            else:
                quiet += POLL_SECONDS
                if quiet >= KEEPALIVE_SECONDS:
                    quiet = 0.0
                    yield b": keep-alive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


__all__ = ["JobIn", "JobOut", "job_out", "router"]
