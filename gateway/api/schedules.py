"""Routes: the operator's monthly schedules, and the archive of what scheduled runs released.

POST   /v1/schedules                  a new schedule (201)
GET    /v1/schedules                  every schedule with its status (next run, last run, last miss)
GET    /v1/schedules/{id}
POST   /v1/schedules/{id}/pause       /resume
POST   /v1/schedules/{id}/run         fire it now (a job, 202): what a systemd timer or CronJob calls
DELETE /v1/schedules/{id}             removed (kept, listed with ?include_removed=true)
GET    /v1/archive                    archived scheduled results, newest period first
GET    /v1/archive/{id}               one, with its figures
GET    /v1/archive/{id}/diff          each released figure against the same pack's previous month
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway import archive, jobs, schedules
from gateway.api import examples
from gateway.api.deps import ContextDep, CurrentPrincipal, Operator, Overseer
from gateway.api.errors import error_responses
from gateway.api.indicators import IndicatorsRunOut
from gateway.api.jobs import JobOut, job_out
from gateway.errors import NotFound

router = APIRouter(prefix="/v1", tags=["schedules"])

CronField = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9a-z*/,\-]+$")]


class CronIn(BaseModel):
    """Cron fields in the schedules' time zone (`FEDGATE_SCHEDULE_TIMEZONE`); omitted fields are `*`
    below the smallest one given and `0` for `second`."""

    model_config = ConfigDict(extra="forbid")
    second: CronField = Field("0", description="seconds, 0-59")
    minute: CronField = Field("0", description="minutes, 0-59")
    hour: CronField = Field("*", description="hours, 0-23")
    day: CronField = Field("*", description="day of the month, 1-31")
    month: CronField = Field("*", description="month, 1-12")
    day_of_week: CronField = Field("*", description="day of the week, mon-sun or 0-6 (0 is Monday)")


class ScheduleIn(BaseModel):
    """A new schedule: a pack run by itself as a named analyst, for the period its rule names."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "monthly pack",
                    "pack": "monthly",
                    "period_rule": "previous_month",
                    "cron": {"day": "5", "hour": "2", "minute": "0"},
                    "run_as": "analyst",
                }
            ]
        },
    )
    name: str = Field(min_length=1, max_length=100, description="what the operator calls it")
    pack: str = Field(min_length=1, max_length=32, description="a pack of the monitoring calendar")
    period_rule: Literal["previous_month"] = Field(
        "previous_month", description="the reference month each run is for, counted from the day it runs"
    )
    cron: CronIn = Field(description='e.g. {"day": "5", "hour": "2"}: the 5th of every month at 02:00')
    run_as: str = Field(min_length=1, max_length=100, description="the analyst the runs are made as")
    epsilon: Decimal | None = Field(None, gt=0, le=10, description="default: the pack's calendar epsilon")
    groups: list[str] | None = Field(None, max_length=12, description="key groups; default the standard five")


class ScheduleOut(BaseModel):
    """A schedule with its status: its next run, its last run and job, its last miss."""

    id: str = Field(description="the schedule's id")
    name: str = Field(description="what the operator calls it")
    pack: str = Field(description="the pack it runs")
    period_rule: str = Field(description="the reference month each run is for")
    cron: dict[str, str] = Field(description="its cron fields")
    timezone: str = Field(description="the time zone the cron fields are read in")
    run_as: str = Field(description="the analyst the runs are made as")
    epsilon: str | None = Field(description="its epsilon, or null for the pack's calendar epsilon")
    groups: list[str] | None = Field(description="its key groups, or null for the standard five")
    state: Literal["active", "paused", "removed"] = Field(description="active, paused or removed")
    created_by: str = Field(description="the operator who made it")
    created_at: datetime = Field(description="when it was made (UTC)")
    updated_at: datetime = Field(description="its last change (UTC)")
    next_run_at: datetime | None = Field(description="the next run, while the schedule is active")
    last_run_at: datetime | None = Field(description="when its last run was submitted")
    last_job: JobOut | None = Field(description="the job of its last run")
    last_missed_at: datetime | None = Field(
        description="when a run was last missed (the gateway was down past the grace period) or could "
        "not be submitted; the audit log's `schedule.missed` entries say which and why"
    )


class ScheduleListOut(BaseModel):
    """Schedules with their status."""

    schedules: list[ScheduleOut] = Field(description="every schedule (removed ones only when asked)")


class ArchivedOut(BaseModel):
    """An archived result of a scheduled run."""

    id: str = Field(description="the archived result's id")
    pack: str = Field(description="the pack that was run")
    period: str = Field(description="the reference month, YYYY-MM")
    job_id: str = Field(description="the job that ran it")
    schedule_id: str | None = Field(description="the schedule that submitted it, if one did")
    created_at: datetime = Field(description="when it was archived (UTC)")


class ArchivedRunOut(ArchivedOut):
    """An archived result of a scheduled run, with its released figures."""

    run: IndicatorsRunOut = Field(description="the released figures, as the pack's run returned them")


class ArchiveListOut(BaseModel):
    """Archived results, newest period first."""

    archived: list[ArchivedOut] = Field(description="the archived results the caller may see")


class FigureChangeOut(BaseModel):
    """One released figure against the same figure of the month before."""

    indicator: str = Field(description="the indicator")
    figure: str = Field(description="the figure of the indicator")
    label: str = Field(description="the figure's label")
    group: str = Field(description="the key group of the figure")
    unit: str = Field(description="the figure's unit")
    value: float | None = Field(description="this month's released figure")
    previous: float | None = Field(description="the previous month's released figure")
    change: float | None = Field(description="value - previous (post-processing of two releases)")


class ArchiveDiffOut(BaseModel):
    """An archived run's figures against the same pack's previous month."""

    archived: ArchivedOut = Field(description="this archived run")
    previous: ArchivedOut | None = Field(description="the same pack's archived run for the month before")
    figures: list[FigureChangeOut] = Field(description="each released figure with its change")


def _out(ctx: Any, s: schedules.ScheduleRecord) -> ScheduleOut:
    last = None
    if s.last_job_id is not None:
        try:
            last = job_out(jobs.get_job(ctx.engine, s.last_job_id))
        except NotFound:
            last = None
    return ScheduleOut(
        id=s.id,
        name=s.name,
        pack=s.pack,
        period_rule=s.period_rule,
        cron=s.cron,
        timezone=ctx.settings.schedule_timezone,
        run_as=s.run_as,
        epsilon=s.epsilon,
        groups=s.groups,
        state=s.state,
        created_by=s.created_by,
        created_at=s.created_at,
        updated_at=s.updated_at,
        next_run_at=s.next_run_at,
        last_run_at=s.last_run_at,
        last_job=last,
        last_missed_at=s.last_missed_at,
    )


@router.post(
    "/schedules",
    response_model=ScheduleOut,
    status_code=201,
    responses=error_responses(403, 404, 409, 413, 422),
)
def create_schedule(
    body: Annotated[ScheduleIn, Body(openapi_examples=examples.SCHEDULE)], ctx: ContextDep, operator: Operator
) -> ScheduleOut:
    """Schedule a pack, e.g. the monthly pack for the previous month on the 5th at 02:00, run as a named
    analyst through the same approvals, budget and audit as any run."""
    record = schedules.create(
        ctx,
        operator,
        name=body.name,
        pack=body.pack,
        period_rule=body.period_rule,
        cron=body.cron.model_dump(),
        run_as=body.run_as,
        epsilon=body.epsilon,
        groups=body.groups,
    )
    return _out(ctx, record)


@router.get("/schedules", response_model=ScheduleListOut, responses=error_responses(403, 422))
def list_schedules(
    ctx: ContextDep,
    who: Overseer,
    include_removed: Annotated[bool, Query(description="list removed schedules too")] = False,
) -> ScheduleListOut:
    """Every schedule with its status (operators, department admins and auditors may look)."""
    return ScheduleListOut(
        schedules=[
            _out(ctx, s) for s in schedules.list_schedules(ctx.engine, include_removed=include_removed)
        ]
    )


@router.get("/schedules/{schedule_id}", response_model=ScheduleOut, responses=error_responses(403, 404, 422))
def get_schedule(schedule_id: str, ctx: ContextDep, who: Overseer) -> ScheduleOut:
    """One schedule with its status."""
    return _out(ctx, schedules.get_schedule(ctx.engine, schedule_id))


@router.post(
    "/schedules/{schedule_id}/pause",
    response_model=ScheduleOut,
    responses=error_responses(403, 404, 409, 422),
)
def pause_schedule(schedule_id: str, ctx: ContextDep, operator: Operator) -> ScheduleOut:
    """No runs until resumed; runs that fall due while paused are skipped, not caught up."""
    return _out(ctx, schedules.set_state(ctx, schedule_id, operator, schedules.ScheduleState.PAUSED))


@router.post(
    "/schedules/{schedule_id}/resume",
    response_model=ScheduleOut,
    responses=error_responses(403, 404, 409, 422),
)
def resume_schedule(schedule_id: str, ctx: ContextDep, operator: Operator) -> ScheduleOut:
    """Runs again from its next due time; what fell due while paused is not caught up."""
    return _out(ctx, schedules.set_state(ctx, schedule_id, operator, schedules.ScheduleState.ACTIVE))


@router.delete(
    "/schedules/{schedule_id}", response_model=ScheduleOut, responses=error_responses(403, 404, 409, 422)
)
def remove_schedule(schedule_id: str, ctx: ContextDep, operator: Operator) -> ScheduleOut:
    """Removed for good; its row, its jobs and its archived results stay for the record."""
    return _out(ctx, schedules.set_state(ctx, schedule_id, operator, schedules.ScheduleState.REMOVED))


@router.post(
    "/schedules/{schedule_id}/run",
    response_model=JobOut,
    status_code=202,
    responses=error_responses(403, 404, 409, 422),
)
def run_schedule(schedule_id: str, ctx: ContextDep, operator: Operator) -> JobOut:
    """Fire the schedule now, for the period its rule names today: the job, at once. A systemd timer or
    Kubernetes CronJob calls this (`fedgate schedules run`) when the gateway's scheduler is off."""
    return job_out(schedules.fire(ctx, schedule_id, actor=operator.name, trigger="operator"))


def _archived_out(r: archive.ArchivedRecord) -> ArchivedOut:
    return ArchivedOut(
        id=r.id,
        pack=r.pack,
        period=r.period,
        job_id=r.job_id,
        schedule_id=r.schedule_id,
        created_at=r.created_at,
    )


@router.get("/archive", response_model=ArchiveListOut, tags=["archive"], responses=error_responses(422))
def list_archive(
    ctx: ContextDep,
    who: CurrentPrincipal,
    pack: Annotated[str | None, Query(max_length=32, description="only this pack")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ArchiveListOut:
    """The archived results of scheduled runs, newest period first: operators and auditors see all, an
    analyst those run as them, a department admin none."""
    found = archive.list_archived(ctx.engine, who, pack=pack, limit=limit)
    return ArchiveListOut(archived=[_archived_out(r) for r in found])


@router.get(
    "/archive/{archive_id}",
    response_model=ArchivedRunOut,
    tags=["archive"],
    responses=error_responses(404, 422),
)
def get_archived(archive_id: str, ctx: ContextDep, who: CurrentPrincipal) -> ArchivedRunOut:
    """One archived result with its released figures, if the caller may see it."""
    r = archive.archived(ctx.engine, archive_id, who)
    return ArchivedRunOut(**_archived_out(r).model_dump(), run=IndicatorsRunOut.model_validate(r.doc))


@router.get(
    "/archive/{archive_id}/diff",
    response_model=ArchiveDiffOut,
    tags=["archive"],
    responses=error_responses(404, 422),
)
def diff_archived(archive_id: str, ctx: ContextDep, who: CurrentPrincipal) -> ArchiveDiffOut:
    """Each released figure of this run against the same figure of the same pack's previous month."""
    record, previous, changes = archive.diff(ctx.engine, archive_id, who)
    return ArchiveDiffOut(
        archived=_archived_out(record),
        previous=None if previous is None else _archived_out(previous),
        figures=[FigureChangeOut(**vars(c)) for c in changes],
    )
