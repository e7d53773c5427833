"""Monthly schedules: an operator's "this pack, for this period rule, at these cron fields, as this analyst".

    create / pause / resume / remove    the `schedules` row and its entry, in one transaction; the
                                        scheduler's trigger follows the row (`Scheduler.sync`)
    fire(ctx, id)                       submit the pack as a job (`gateway.jobs`) under the schedule's
                                        principal, with `schedule.fired` in the job's own transaction
    Scheduler                           APScheduler 3 (BackgroundScheduler) with its SQLAlchemyJobStore in
                                        the gateway's database (table `scheduler_jobs`, made by revision
                                        0007), so a trigger's next run time survives a restart

A run the gateway was down for is run at start if it is no later than `FEDGATE_SCHEDULE_GRACE_SECONDS`
(several missed runs of one schedule run once: APScheduler's coalescing); later than that it is reported:
`schedule.missed` is audited and the schedule shows `last_missed_at`. A scheduled run is an ordinary job
of its principal: the same approvals, budget, audit entries and archive of its figures (`gateway.archive`).

Without the in-process scheduler (`FEDGATE_SCHEDULES_ENABLED=false`), a systemd timer or a Kubernetes
CronJob runs `fedgate schedules run <id>`, which fires the schedule once through the API
(docs/deployment.md).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import structlog
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from aggregation.indicators import PACKS
from aggregation.indicators.periods import previous_months
from gateway import db, jobs
from gateway.auth import Principal, Role, principal_named
from gateway.errors import Conflict, GatewayError, Invalid, NotFound
from gateway.events import ScheduleChanged, ScheduleCreated, ScheduleFired, ScheduleMissed

if TYPE_CHECKING:
    from gateway.audit_trail import Change
    from gateway.context import GatewayContext

__all__ = [
    "CRON_FIELDS",
    "PERIOD_RULES",
    "ScheduleRecord",
    "ScheduleState",
    "Scheduler",
    "create",
    "fire",
    "get_schedule",
    "list_schedules",
    "period_for",
    "set_state",
]

log = structlog.get_logger("fedgate.schedules")

CRON_FIELDS = ("second", "minute", "hour", "day", "month", "day_of_week")
PERIOD_RULES = ("previous_month",)
SCHEDULER_TABLE = "scheduler_jobs"


class ScheduleState:
    ACTIVE = "active"
    PAUSED = "paused"
    REMOVED = "removed"


@dataclass(frozen=True)
class ScheduleRecord:
    id: str
    name: str
    pack: str
    period_rule: str
    cron: dict[str, str]
    run_as: str
    epsilon: str | None
    groups: list[str] | None
    state: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    last_run_at: datetime | None
    last_job_id: str | None
    last_missed_at: datetime | None
    next_run_at: datetime | None


def period_for(rule: str, now: datetime) -> str:
    """The reference month a rule names at `now` (in the schedules' time zone): `previous_month` on
    2026-01-05 is 2025-12."""
    if rule != "previous_month":
        raise Invalid(f"unknown period rule {rule!r}; known: {', '.join(PERIOD_RULES)}", "period_rule")
    return previous_months(f"{now.year:04d}-{now.month:02d}", 1)[0]


def trigger_for(cron: dict[str, str], timezone: str) -> CronTrigger:
    """The cron trigger of `cron` (fields as in crontab: "0", "*/5", "mon-fri"); Invalid naming the field."""
    for name in cron:
        if name not in CRON_FIELDS:
            raise Invalid(f"unknown cron field {name!r}; known: {', '.join(CRON_FIELDS)}", f"cron.{name}")
    try:
        return CronTrigger(timezone=ZoneInfo(timezone), **cron)
    except ValueError as exc:
        raise Invalid(f"the cron fields do not make a schedule: {exc}", "cron") from None


def _next_runs(conn: sa.Connection) -> dict[str, datetime | None]:
    t = db.scheduler_jobs
    out: dict[str, datetime | None] = {}
    for job_id, next_run in conn.execute(sa.select(t.c.id, t.c.next_run_time)):
        out[job_id] = None if next_run is None else datetime.fromtimestamp(next_run, UTC)
    return out


def _record(row: sa.RowMapping, next_run: datetime | None) -> ScheduleRecord:
    return ScheduleRecord(
        id=row["id"],
        name=row["name"],
        pack=row["pack"],
        period_rule=row["period_rule"],
        cron=json.loads(row["cron_json"]),
        run_as=row["run_as"],
        epsilon=row["epsilon"],
        groups=json.loads(row["groups_json"]) if row["groups_json"] else None,
        state=row["state"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_run_at=row["last_run_at"],
        last_job_id=row["last_job_id"],
        last_missed_at=row["last_missed_at"],
        next_run_at=next_run if row["state"] == ScheduleState.ACTIVE else None,
    )


def list_schedules(engine: sa.Engine, *, include_removed: bool = False) -> list[ScheduleRecord]:
    query = sa.select(db.schedules).order_by(db.schedules.c.created_at, db.schedules.c.id)
    if not include_removed:
        query = query.where(db.schedules.c.state != ScheduleState.REMOVED)
    with engine.connect() as conn:
        nexts = _next_runs(conn)
        return [_record(r, nexts.get(r["id"])) for r in conn.execute(query).mappings()]


def get_schedule(engine: sa.Engine, schedule_id: str) -> ScheduleRecord:
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.schedules).where(db.schedules.c.id == schedule_id)).mappings().first()
        nexts = _next_runs(conn)
    if row is None:
        raise NotFound("no schedule with that id", "schedule_id")
    return _record(row, nexts.get(schedule_id))


def _analyst(engine: sa.Engine, name: str) -> Principal:
    try:
        principal = principal_named(engine, name)
    except GatewayError:
        raise Invalid(
            f"run_as must name an active analyst; {name!r} is not one (`fedgate users create` makes one)",
            "run_as",
        ) from None
    if principal.role is not Role.ANALYST:
        raise Invalid(f"run_as must name an analyst; {name!r} is a {principal.role}", "run_as")
    return principal


def create(
    ctx: GatewayContext,
    operator: Principal,
    *,
    name: str,
    pack: str,
    period_rule: str,
    cron: dict[str, str],
    run_as: str,
    epsilon: Decimal | None = None,
    groups: list[str] | None = None,
) -> ScheduleRecord:
    """A new active schedule with its `schedule.created` entry; every part checked before it is stored."""
    if pack not in PACKS:
        raise NotFound(f"no pack named {pack!r}; known: {', '.join(sorted(PACKS))}", "pack")
    period_for(period_rule, datetime.now(UTC))
    trigger_for(cron, ctx.settings.schedule_timezone)
    _analyst(ctx.engine, run_as)
    schedule_id = uuid.uuid4().hex
    now = db.utcnow()
    with ctx.audit.change() as change:
        change.conn.execute(
            db.schedules.insert().values(
                id=schedule_id,
                name=name,
                pack=pack,
                period_rule=period_rule,
                cron_json=json.dumps(cron, sort_keys=True),
                run_as=run_as,
                epsilon=None if epsilon is None else str(epsilon),
                groups_json=None if groups is None else json.dumps(groups),
                state=ScheduleState.ACTIVE,
                created_by=operator.name,
                created_at=now,
                updated_at=now,
            )
        )
        change.record(
            ScheduleCreated(
                actor=operator.name,
                schedule_id=schedule_id,
                name=name,
                pack=pack,
                period_rule=period_rule,
                cron=dict(cron),
                run_as=run_as,
            )
        )
    _sync(ctx, schedule_id)
    return get_schedule(ctx.engine, schedule_id)


# The states an operator may move a schedule to, from each state.
_MOVES = {
    ScheduleState.PAUSED: (ScheduleState.ACTIVE,),
    ScheduleState.ACTIVE: (ScheduleState.PAUSED,),
    ScheduleState.REMOVED: (ScheduleState.ACTIVE, ScheduleState.PAUSED),
}


def set_state(ctx: GatewayContext, schedule_id: str, operator: Principal, state: str) -> ScheduleRecord:
    """Pause, resume or remove a schedule with its `schedule.changed` entry; the trigger follows."""
    current = get_schedule(ctx.engine, schedule_id)
    with ctx.audit.change() as change:
        done = change.conn.execute(
            db.schedules.update()
            .where(db.schedules.c.id == schedule_id, db.schedules.c.state.in_(_MOVES[state]))
            .values(state=state, updated_at=db.utcnow())
        )
        if done.rowcount != 1:
            raise Conflict(
                f"the schedule is {current.state}; it cannot become {state}",
                "schedule_id",
                reason=current.state,
            )
        change.record(ScheduleChanged(actor=operator.name, schedule_id=schedule_id, state=state))
    _sync(ctx, schedule_id)
    return get_schedule(ctx.engine, schedule_id)


Clock = Callable[[], datetime]


def fire(
    ctx: GatewayContext, schedule_id: str, *, actor: str, trigger: str, clock: Clock | None = None
) -> jobs.JobRecord:
    """Submit the schedule's pack as a job under its principal for the period its rule names now; the
    firing is audited in the job's own transaction. A run that cannot be submitted is reported
    (`schedule.missed` with the error's code) and raised."""
    schedule = get_schedule(ctx.engine, schedule_id)
    if schedule.state == ScheduleState.REMOVED:
        raise Conflict("the schedule was removed", "schedule_id", reason=schedule.state)
    zone = ZoneInfo(ctx.settings.schedule_timezone)
    period = period_for(schedule.period_rule, (clock or (lambda: datetime.now(UTC)))().astimezone(zone))
    params: dict[str, Any] = {"period": period}
    if schedule.epsilon is not None:
        params["epsilon"] = schedule.epsilon
    if schedule.groups is not None:
        params["groups"] = schedule.groups

    def fired(change: Change, job_id: str) -> None:
        change.conn.execute(
            db.schedules.update()
            .where(db.schedules.c.id == schedule_id)
            .values(last_run_at=db.utcnow(), last_job_id=job_id)
        )
        change.record(
            ScheduleFired(actor=actor, schedule_id=schedule_id, job_id=job_id, period=period, trigger=trigger)
        )

    try:
        principal = principal_named(ctx.engine, schedule.run_as)
        return jobs.submit(
            ctx,
            jobs.JobKind.PACK,
            schedule.pack,
            params,
            principal=principal,
            submitted_by=actor,
            schedule_id=schedule_id,
            also=fired,
        )
    except GatewayError as exc:
        _report_missed(ctx, schedule_id, None, exc.code.value)
        raise


def _report_missed(
    ctx: GatewayContext, schedule_id: str, scheduled_for: datetime | None, reason: str
) -> None:
    with ctx.audit.change() as change:
        change.conn.execute(
            db.schedules.update().where(db.schedules.c.id == schedule_id).values(last_missed_at=db.utcnow())
        )
        change.record(
            ScheduleMissed(
                actor="gateway",
                schedule_id=schedule_id,
                scheduled_for=None if scheduled_for is None else scheduled_for.astimezone(UTC).isoformat(),
                reason=reason,
            )
        )


# The scheduler's stored jobs name the process's context by a digest of the database they live in: the
# context itself cannot be stored, and a restarted gateway on the same database finds its schedules.
_ACTIVE: dict[str, Scheduler] = {}


def _key(ctx: GatewayContext) -> str:
    return hashlib.sha256(ctx.settings.database_url_resolved().encode()).hexdigest()[:16]


def fire_scheduled(key: str, schedule_id: str) -> None:
    """What the scheduler calls (by this module's path, as its job store keeps it)."""
    scheduler = _ACTIVE.get(key)
    if scheduler is None:
        log.error("schedule.no_gateway", schedule_id=schedule_id)
        return
    try:
        fire(scheduler.ctx, schedule_id, actor="scheduler", trigger="schedule", clock=scheduler.clock)
    except GatewayError as exc:
        log.warning("schedule.not_submitted", schedule_id=schedule_id, code=exc.code.value)


def _sync(ctx: GatewayContext, schedule_id: str) -> None:
    scheduler = ctx.scheduler
    if isinstance(scheduler, Scheduler):
        scheduler.sync(schedule_id)


class Scheduler:
    """APScheduler in the gateway process; its triggers follow the `schedules` table."""

    def __init__(self, ctx: GatewayContext, *, clock: Clock | None = None) -> None:
        """`clock`: what "now" is when a run's period is worked out (tests fix it; the trigger itself
        keeps real time)."""
        self.ctx = ctx
        self.clock = clock
        self.key = _key(ctx)
        self.timezone = ctx.settings.schedule_timezone
        self._aps = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=ctx.engine, tablename=SCHEDULER_TABLE)},
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": ctx.settings.schedule_grace_seconds,
            },
            timezone=ZoneInfo(self.timezone),
        )

    def start(self) -> None:
        """Start, bring every trigger in line with its schedule, then let due runs fire: a run missed
        while the gateway was down fires now within the grace period, or is reported as missed."""
        _ACTIVE[self.key] = self
        self.ctx.scheduler = self
        self._aps.add_listener(self._missed, EVENT_JOB_MISSED)
        self._aps.start(paused=True)
        with self.ctx.engine.connect() as conn:
            ids = list(conn.execute(sa.select(db.schedules.c.id)).scalars())
        for schedule_id in ids:
            self.sync(schedule_id)
        self._aps.resume()

    def stop(self) -> None:
        self._aps.shutdown(wait=False)
        if _ACTIVE.get(self.key) is self:
            del _ACTIVE[self.key]
        if self.ctx.scheduler is self:
            self.ctx.scheduler = None

    def sync(self, schedule_id: str) -> None:
        """The trigger of one schedule as its row says. An existing active trigger is left as stored, so
        its next run time (perhaps one missed while the gateway was down) is kept."""
        schedule = get_schedule(self.ctx.engine, schedule_id)
        job = self._aps.get_job(schedule_id)
        if schedule.state == ScheduleState.REMOVED:
            if job is not None:
                self._aps.remove_job(schedule_id)
            return
        if job is None:
            self._aps.add_job(
                fire_scheduled,
                trigger=trigger_for(schedule.cron, self.timezone),
                args=[self.key, schedule_id],
                id=schedule_id,
                name=f"{schedule.name} ({schedule.pack})",
                replace_existing=True,
            )
            job = self._aps.get_job(schedule_id)
        if schedule.state == ScheduleState.PAUSED and job is not None and job.next_run_time is not None:
            self._aps.pause_job(schedule_id)
        elif schedule.state == ScheduleState.ACTIVE and job is not None and job.next_run_time is None:
            self._aps.resume_job(schedule_id)

    def _missed(self, event: JobExecutionEvent) -> None:
        try:
            _report_missed(self.ctx, event.job_id, event.scheduled_run_time, "gateway_down")
        except GatewayError:
            log.error("schedule.missed_unrecorded", schedule_id=event.job_id)
