"""Runs as jobs: a query, an indicator or a pack queued in the gateway's database, worked in the background.

    queued ──worker──> running ──> succeeded      (the result is stored on the row)
      │                   ├──────> failed         (the public error body is stored)
      │                   └─cancel at a step──> cancelled  (refund rule: `gateway.lifecycle`)
      └──cancel──> cancelled                      (nothing had been reserved)
    running, found at start (the process died) ──> interrupted   (its queries settled by
                                                  `lifecycle.recover_interrupted_runs`)
    queued, found at start ──> worked again (nothing had started)

A job does what the synchronous route does, through the same services (`gateway.runner`,
`gateway.indicators`), as the same principal, with the same approvals, budget and audit entries; only the
waiting moves off the request. Its steps come through the progress seam (`gateway.progress`), each one
stored on the row (`steps_done` of `steps_total`, `current_step`: a public label). Every state change is
a compare-and-set on the row made inside the audit transaction of the event that explains it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import structlog

from gateway import archive, db, indicators, runner
from gateway.auth import Principal, Role, principal_named
from gateway.errors import (
    Cancelled,
    Conflict,
    ErrorCode,
    Forbidden,
    GatewayError,
    NotFound,
    RateLimited,
)
from gateway.events import JobCancelled, JobFinished, JobInterrupted, JobSubmitted

if TYPE_CHECKING:
    from gateway.audit_trail import Change
    from gateway.context import GatewayContext

__all__ = [
    "FINAL",
    "INTERRUPTED_MESSAGE",
    "JobKind",
    "JobProgress",
    "JobRecord",
    "JobState",
    "get_job",
    "list_jobs",
    "recover_interrupted_jobs",
    "request_cancel",
    "resume_queued",
    "submit",
    "visible_job",
    "work",
]

log = structlog.get_logger("fedgate.jobs")


class JobState(StrEnum):
    """Where a job is: queued, running, or one of the final states."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


FINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED})


class JobKind(StrEnum):
    """What a job runs: an approved query, an indicator of the library or a pack of the calendar."""

    QUERY = "query"
    INDICATOR = "indicator"
    PACK = "pack"


INTERNAL_MESSAGE = "internal error; quote the job id"
INTERRUPTED_MESSAGE = (
    "the gateway stopped while this job ran; its queries that had received no data were refunded and the "
    "rest stay charged. Submit the job again: what was released is served again without a new charge"
)


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: JobKind
    target: str
    params: dict[str, Any]
    principal: str
    submitted_by: str
    schedule_id: str | None
    state: JobState
    steps_done: int
    steps_total: int
    current_step: str | None
    cancel_requested: bool
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    def snapshot(self) -> tuple[Any, ...]:
        """What a watcher sees change (the events stream sends an event when it does)."""
        return (self.state, self.steps_done, self.steps_total, self.current_step, self.cancel_requested)


def _record(row: sa.RowMapping) -> JobRecord:
    return JobRecord(
        id=row["id"],
        kind=JobKind(row["kind"]),
        target=row["target"],
        params=json.loads(row["params_json"]),
        principal=row["principal"],
        submitted_by=row["submitted_by"],
        schedule_id=row["schedule_id"],
        state=JobState(row["state"]),
        steps_done=row["steps_done"],
        steps_total=row["steps_total"],
        current_step=row["current_step"],
        cancel_requested=bool(row["cancel_requested"]),
        error=json.loads(row["error_json"]) if row["error_json"] else None,
        result=json.loads(row["result_json"]) if row["result_json"] else None,
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
    )


def get_job(engine: sa.Engine, job_id: str) -> JobRecord:
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.jobs).where(db.jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise NotFound("no job with that id", "job_id")
    return _record(row)


def visible_job(engine: sa.Engine, job_id: str, who: Principal) -> JobRecord:
    """The job if `who` may see it (its principal, who submitted it, or an operator); else NotFound, so
    nobody learns that another analyst's job exists."""
    job = get_job(engine, job_id)
    if who.role is Role.OPERATOR or who.name in (job.principal, job.submitted_by):
        return job
    raise NotFound("no job with that id", "job_id")


def list_jobs(
    engine: sa.Engine, who: Principal, *, state: JobState | None = None, limit: int = 100
) -> list[JobRecord]:
    """The newest jobs `who` may see: their own, or every job for an operator."""
    query = sa.select(db.jobs).order_by(db.jobs.c.created_at.desc(), db.jobs.c.id).limit(limit)
    if who.role is not Role.OPERATOR:
        query = query.where(sa.or_(db.jobs.c.principal == who.name, db.jobs.c.submitted_by == who.name))
    if state is not None:
        query = query.where(db.jobs.c.state == state.value)
    with engine.connect() as conn:
        return [_record(r) for r in conn.execute(query).mappings()]


def _active_jobs(conn: sa.Connection, principal: str) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(db.jobs)
            .where(
                db.jobs.c.principal == principal,
                db.jobs.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
            )
        ).scalar_one()
    )


def submit(
    ctx: GatewayContext,
    kind: JobKind,
    target: str,
    params: dict[str, Any],
    *,
    principal: Principal,
    submitted_by: str,
    schedule_id: str | None = None,
    also: Callable[[Change, str], None] | None = None,
) -> JobRecord:
    """Queue a job that runs as `principal`, with its `job.submitted` entry; `also` adds to the same
    transaction (a schedule records its firing). Past `FEDGATE_MAX_QUEUED_JOBS_PER_ANALYST` queued and
    running jobs the principal is refused (`RateLimited`) before anything is stored."""
    if principal.role is not Role.ANALYST:
        raise Forbidden("jobs run as an analyst; this principal is not one", "principal")
    job_id = uuid.uuid4().hex
    now = db.utcnow()
    limit = ctx.settings.max_queued_jobs_per_analyst
    with ctx.audit.change() as change:
        active = _active_jobs(change.conn, principal.name)
        if active >= limit:
            raise RateLimited(
                f"analyst {principal.name} already has {active} jobs queued or running and the limit is "
                f"{limit} (FEDGATE_MAX_QUEUED_JOBS_PER_ANALYST); wait for one to finish or cancel one"
            )
        change.conn.execute(
            db.jobs.insert().values(
                id=job_id,
                kind=kind.value,
                target=target,
                params_json=json.dumps(params, sort_keys=True),
                principal=principal.name,
                submitted_by=submitted_by,
                schedule_id=schedule_id,
                state=JobState.QUEUED.value,
                steps_done=0,
                steps_total=0,
                current_step=None,
                cancel_requested=False,
                created_at=now,
                updated_at=now,
            )
        )
        change.record(
            JobSubmitted(
                actor=submitted_by,
                job_id=job_id,
                kind=kind.value,
                target=target,
                principal=principal.name,
                schedule_id=schedule_id,
            )
        )
        if also is not None:
            also(change, job_id)
    ctx.job_pool().enqueue(job_id)
    return get_job(ctx.engine, job_id)


def _set(conn: sa.Connection, job_id: str, expect: tuple[JobState, ...], **values: Any) -> bool:
    """Compare-and-set the row of `job_id` if it is in one of the `expect`ed states."""
    done = conn.execute(
        db.jobs.update()
        .where(db.jobs.c.id == job_id, db.jobs.c.state.in_([s.value for s in expect]))
        .values(updated_at=db.utcnow(), **values)
    )
    return done.rowcount == 1


def request_cancel(ctx: GatewayContext, job_id: str, who: Principal) -> JobRecord:
    """Cancel a job: a queued one at once; a running one stops at its next step that may still stop
    (before data arrives), and its reservations are settled by the refund rule. A final job: Conflict."""
    job = visible_job(ctx.engine, job_id, who)
    if who.role is not Role.OPERATOR and who.name != job.principal:
        raise Forbidden("only the job's analyst or an operator may cancel it", "job_id")
    with ctx.audit.change() as change:
        now = db.utcnow()
        if _set(
            change.conn,
            job_id,
            (JobState.QUEUED,),
            state=JobState.CANCELLED.value,
            cancel_requested=True,
            finished_at=now,
            error_json=json.dumps(_error_body(Cancelled())),
        ):
            change.record(JobCancelled(actor=who.name, job_id=job_id, state=JobState.QUEUED.value))
        elif _set(change.conn, job_id, (JobState.RUNNING,), cancel_requested=True):
            change.record(JobCancelled(actor=who.name, job_id=job_id, state=JobState.RUNNING.value))
        else:
            current = get_job(ctx.engine, job_id).state
            raise Conflict(
                f"the job is {current}; only a queued or running job can be cancelled",
                "job_id",
                reason=current.value,
            )
    return get_job(ctx.engine, job_id)


def _error_body(exc: BaseException) -> dict[str, Any]:
    """The public error body of a failed job, in the one error shape (no request id: no request)."""
    if isinstance(exc, GatewayError):
        return {"code": exc.code.value, "message": exc.message, "field": exc.field, "request_id": None}
    return {"code": ErrorCode.INTERNAL.value, "message": INTERNAL_MESSAGE, "field": None, "request_id": None}


class JobProgress:
    """A job's progress seam: each step is written on its row; a cancel asked for meanwhile stops the run
    at the next step that may still stop."""

    def __init__(self, ctx: GatewayContext, job_id: str) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.done = 0
        self.total = 0

    def begin(self, total: int) -> None:
        self.total = total
        with self.ctx.engine.begin() as conn:
            _set(conn, self.job_id, (JobState.RUNNING,), steps_total=total, steps_done=0)

    def step(self, label: str, *, stoppable: bool = True) -> None:
        with self.ctx.engine.begin() as conn:
            cancel = conn.execute(
                sa.select(db.jobs.c.cancel_requested).where(db.jobs.c.id == self.job_id)
            ).scalar_one()
            if cancel and stoppable:
                raise Cancelled()
            _set(
                conn,
                self.job_id,
                (JobState.RUNNING,),
                steps_done=min(self.done, self.total),
                current_step=label[:200],
            )
        self.done += 1


def _run(ctx: GatewayContext, job: JobRecord, analyst: Principal, progress: JobProgress) -> dict[str, Any]:
    """Run the job's kind through the service its synchronous route calls; the document to store."""
    p = job.params
    if job.kind is JobKind.QUERY:
        doc = runner.run_query(ctx, job.target, analyst, progress=progress)
        return {"query_id": doc["query_id"]}
    epsilon = Decimal(p["epsilon"]) if p.get("epsilon") is not None else None
    if job.kind is JobKind.INDICATOR:
        bands = {k: (int(v[0]), int(v[1])) for k, v in p["bands"].items()} if p.get("bands") else None
        return indicators.run_indicator(
            ctx,
            analyst,
            job.target,
            period=p["period"],
            epsilon=epsilon,
            bands=bands,
            groups=p.get("groups"),
            baseline=p.get("baseline"),
            drop_share=Decimal(p["drop_share"]) if p.get("drop_share") is not None else None,
            progress=progress,
        )
    return indicators.run_pack(
        ctx,
        analyst,
        job.target,
        period=p["period"],
        epsilon=epsilon,
        groups=p.get("groups"),
        progress=progress,
    )


def work(ctx: GatewayContext, job_id: str) -> bool:
    """Run one queued job to a final state. False if it could not start now: the analyst's run slots
    are all taken (`FEDGATE_MAX_CONCURRENT_RUNS_PER_ANALYST`), so the pool tries again shortly."""
    job = get_job(ctx.engine, job_id)
    if job.state is not JobState.QUEUED:
        return True
    try:
        ctx.run_slots.acquire(job.principal, ctx.settings.max_concurrent_runs_per_analyst)
    except RateLimited:
        return False
    try:
        with ctx.engine.begin() as conn:
            if not _set(
                conn, job_id, (JobState.QUEUED,), state=JobState.RUNNING.value, started_at=db.utcnow()
            ):
                return True  # cancelled meanwhile
        _execute(ctx, get_job(ctx.engine, job_id))
    finally:
        ctx.run_slots.release(job.principal)
    return True


def _execute(ctx: GatewayContext, job: JobRecord) -> None:
    progress = JobProgress(ctx, job.id)
    try:
        # The principal is checked again now: a key revoked since the submission stops its jobs.
        analyst = principal_named(ctx.engine, job.principal)
        if analyst.role is not Role.ANALYST:
            raise Forbidden("jobs run as an analyst; this principal is not one", "principal")
        doc = _run(ctx, job, analyst, progress)
    except Cancelled as exc:
        _finish(ctx, job, JobState.CANCELLED, error=_error_body(exc))
    except Exception as exc:
        if not isinstance(exc, GatewayError):
            log.error(
                "job.unhandled", job_id=job.id, error_type=f"{type(exc).__module__}.{type(exc).__qualname__}"
            )
        _finish(ctx, job, JobState.FAILED, error=_error_body(exc))
    else:
        _finish(ctx, job, JobState.SUCCEEDED, result=doc)


def _finish(
    ctx: GatewayContext,
    job: JobRecord,
    state: JobState,
    *,
    error: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """The job's final state with its `job.finished` entry; a scheduled pack's figures are archived in
    the same transaction (`gateway.archive`)."""
    values: dict[str, Any] = {"state": state.value, "finished_at": db.utcnow()}
    if error is not None:
        values["error_json"] = json.dumps(error)
    if result is not None:
        values["result_json"] = json.dumps(result)
    with ctx.engine.connect() as conn:
        total = conn.execute(sa.select(db.jobs.c.steps_total).where(db.jobs.c.id == job.id)).scalar_one()
    if state is JobState.SUCCEEDED:
        values.update(steps_done=total, steps_total=total, current_step="done")
    try:
        with ctx.audit.change() as change:
            if not _set(change.conn, job.id, (JobState.RUNNING,), **values):
                return
            change.record(
                JobFinished(
                    actor=job.principal,
                    job_id=job.id,
                    state=state.value,
                    error=None if error is None else error["code"],
                )
            )
            if state is JobState.SUCCEEDED and result is not None and job.schedule_id is not None:
                archive.store(change, job_id=job.id, schedule_id=job.schedule_id, doc=result)
    except GatewayError:
        # The audit log cannot be written: the job stays running and the next start marks it interrupted
        # (its queries are settled by the runner's own failure path and the start-up recovery).
        log.error("job.finish_unrecorded", job_id=job.id, state=state.value)


def recover_interrupted_jobs(ctx: GatewayContext) -> None:
    """Mark the jobs a dead process left running as interrupted, each with its entry. Call it after
    `lifecycle.recover_interrupted_runs`, which settled their queries by the refund rule."""
    with ctx.engine.connect() as conn:
        stuck = list(
            conn.execute(sa.select(db.jobs.c.id).where(db.jobs.c.state == JobState.RUNNING.value)).scalars()
        )
    body = {
        "code": ErrorCode.CONFLICT.value,
        "message": INTERRUPTED_MESSAGE,
        "field": None,
        "request_id": None,
    }
    for job_id in stuck:
        with ctx.audit.change() as change:
            if _set(
                change.conn,
                job_id,
                (JobState.RUNNING,),
                state=JobState.INTERRUPTED.value,
                finished_at=db.utcnow(),
                error_json=json.dumps(body),
            ):
                change.record(JobInterrupted(actor="gateway", job_id=job_id))


def resume_queued(ctx: GatewayContext) -> int:
    """Give the pool every job still queued (nothing of them had started); returns how many."""
    with ctx.engine.connect() as conn:
        queued = list(
            conn.execute(
                sa.select(db.jobs.c.id)
                .where(db.jobs.c.state == JobState.QUEUED.value)
                .order_by(db.jobs.c.created_at)
            ).scalars()
        )
    for job_id in queued:
        ctx.job_pool().enqueue(job_id)
    return len(queued)
