"""Monthly schedules with a real APScheduler on the gateway's database, a few seconds ahead of now: a
scheduled pack runs by itself as its named analyst, is archived and audited like any run, and diffs
against the previous month; a run missed while the gateway was down runs at start within the grace
period and is reported (audited, in the schedule's status) past it; operators pause, resume and remove
schedules, each audited; refusals are 4xx with nothing stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from job_fixture import Fed, start

from connectors.synth import generate_county
from gateway import db, jobs
from gateway.schedules import Scheduler

ZONE = ZoneInfo("Asia/Shanghai")
# How far ahead of now a one-off run is set: room for the request that creates it on a loaded machine
# (a run set for a time already past would next fall due a year later).
LEAD_SECONDS = 10


def _stored_next_run(schedule: dict[str, Any], due: datetime) -> bool:
    """The trigger was stored for `due` (the schedule was created in time for it)."""
    stored = schedule["next_run_at"]
    return stored is not None and abs(datetime.fromisoformat(stored) - due) < timedelta(seconds=1)


def january_fifth() -> datetime:
    """The clock the periods are worked out by: the previous month is the county's December 2025."""
    return datetime(2026, 1, 5, 2, 0, tzinfo=ZONE)


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("county")
    generate_county(root, persons=150, seed=5)
    return root


def _scheduler(fed: Fed) -> Scheduler:
    scheduler = Scheduler(fed.ctx, clock=january_fifth)
    scheduler.start()
    fed.stops.append(scheduler.stop)
    return scheduler


@pytest.fixture
def fed(tmp_path: Path, county: Path) -> Iterator[Fed]:
    federation = start(county, tmp_path)
    yield federation
    federation.close()


def _cron_at(when: datetime) -> dict[str, str]:
    local = when.astimezone(ZONE)
    return {
        "second": str(local.second),
        "minute": str(local.minute),
        "hour": str(local.hour),
        "day": str(local.day),
        "month": str(local.month),
    }


def _create(fed: Fed, cron: dict[str, str], **changes: Any) -> dict[str, Any]:
    body = {"name": "monthly pack", "pack": "monthly", "cron": cron, "run_as": "analyst", **changes}
    r = fed.http.post("/v1/schedules", json=body, headers=fed.as_("operator"))
    assert r.status_code == 201, r.text
    return r.json()


def _wait(predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _schedule(fed: Fed, schedule_id: str) -> dict[str, Any]:
    return fed.http.get(f"/v1/schedules/{schedule_id}", headers=fed.as_("operator")).json()


def test_a_scheduled_pack_runs_by_itself_is_archived_and_audited_and_diffs_with_the_month_before(
    fed: Fed,
) -> None:
    _scheduler(fed)
    soon = datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS)
    schedule = _create(fed, _cron_at(soon))
    assert schedule["state"] == "active" and schedule["timezone"] == "Asia/Shanghai"
    assert abs(datetime.fromisoformat(schedule["next_run_at"]) - soon) < timedelta(seconds=1)
    (created,) = fed.events("schedule.created")
    assert created["actor"] == "operator" and created["run_as"] == "analyst"
    job = _wait(lambda: _schedule(fed, schedule["id"])["last_job"])
    assert job["principal"] == "analyst" and job["submitted_by"] == "scheduler"
    assert job["schedule_id"] == schedule["id"] and job["params"] == {"period": "2025-12"}
    done = fed.wait_for(job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done
    # Like any run: submitted, approved by the departments' rules, charged to the analyst, released.
    (fired,) = fed.events("schedule.fired")
    assert fired["job_id"] == job["id"] and fired["trigger"] == "schedule" and fired["period"] == "2025-12"
    (run,) = fed.events("indicator.run")
    assert run["actor"] == "analyst" and run["indicator"] == "pack:monthly"
    assert len(fed.events("query.released")) == len(run["query_ids"])
    (listed,) = fed.http.get("/v1/archive", headers=fed.as_("auditor")).json()["archived"]
    assert listed["period"] == "2025-12" and listed["job_id"] == job["id"]
    (archived_event,) = fed.events("result.archived")
    assert archived_event["archive_id"] == listed["id"]
    december = fed.http.get(f"/v1/archive/{listed['id']}", headers=fed.as_("analyst")).json()
    result = fed.http.get(done["result"], headers=fed.as_("analyst")).json()["run"]
    assert december["run"] == result
    # Nobody else's releases: another analyst and a department admin see no archive.
    assert fed.http.get("/v1/archive", headers=fed.as_("other-analyst")).json()["archived"] == []
    assert fed.http.get(f"/v1/archive/{listed['id']}", headers=fed.as_("tax")).status_code == 404
    nothing_before = fed.http.get(f"/v1/archive/{listed['id']}/diff", headers=fed.as_("operator")).json()
    assert nothing_before["previous"] is None
    assert all(f["previous"] is None and f["change"] is None for f in nothing_before["figures"])
    # November, run as the same schedule's job, is archived too; December now diffs against it.
    november_job = jobs.submit(
        fed.ctx,
        jobs.JobKind.PACK,
        "monthly",
        {"period": "2025-11"},
        principal=_principal(fed, "analyst"),
        submitted_by="scheduler",
        schedule_id=schedule["id"],
    )
    assert fed.wait_for(november_job.id, ("succeeded", "failed"))["state"] == "succeeded"
    november = next(
        a
        for a in fed.http.get("/v1/archive", headers=fed.as_("operator")).json()["archived"]
        if a["period"] == "2025-11"
    )
    november_doc = fed.http.get(f"/v1/archive/{november['id']}", headers=fed.as_("operator")).json()["run"]
    diff = fed.http.get(f"/v1/archive/{listed['id']}/diff", headers=fed.as_("operator")).json()
    assert diff["previous"]["id"] == november["id"]
    before = {
        (i["indicator"], f["figure"], f["label"], f["group"]): f["value"]
        for i in november_doc["indicators"]
        for f in i["figures"]
    }
    now = {
        (i["indicator"], f["figure"], f["label"], f["group"]): f["value"]
        for i in result["indicators"]
        for f in i["figures"]
    }
    compared = [f for f in diff["figures"] if f["change"] is not None]
    assert compared, "the two months share released figures"
    for f in diff["figures"]:
        key = (f["indicator"], f["figure"], f["label"], f["group"])
        assert f["value"] == now.get(key) and f["previous"] == before.get(key)
        if f["change"] is not None:
            assert f["change"] == pytest.approx(now[key] - before[key])


def _principal(fed: Fed, name: str) -> Any:
    from gateway.auth import principal_named

    return principal_named(fed.ctx.engine, name)


def test_a_run_missed_while_the_gateway_was_down_runs_at_start_within_the_grace_period(
    tmp_path: Path, county: Path
) -> None:
    first = start(county, tmp_path, schedule_grace_seconds=3600)
    try:
        _scheduler(first)
        due = datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS)
        schedule = _create(first, _cron_at(due))
        assert _stored_next_run(schedule, due)
    finally:
        first.close()  # the gateway is down when the run falls due
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 1.5)
    second = start(county, tmp_path, transport=first.transport, schedule_grace_seconds=3600)
    try:
        with second.ctx.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(db.jobs)).scalar_one() == 0
        _scheduler(second)
        job = _wait(lambda: _schedule(second, schedule["id"])["last_job"])
        assert job["submitted_by"] == "scheduler" and job["params"] == {"period": "2025-12"}
        assert second.events("schedule.missed") == []
        assert _schedule(second, schedule["id"])["last_missed_at"] is None
        second.http.post(f"/v1/jobs/{job['id']}/cancel", headers=second.as_("operator"))
        second.wait_for(job["id"], ("succeeded", "failed", "cancelled"))
    finally:
        second.close()


def test_a_run_missed_past_the_grace_period_is_reported_and_audited_not_run(
    tmp_path: Path, county: Path
) -> None:
    first = start(county, tmp_path, schedule_grace_seconds=1)
    try:
        _scheduler(first)
        due = datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS)
        schedule = _create(first, _cron_at(due))
        assert _stored_next_run(schedule, due)
    finally:
        first.close()
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 3)
    second = start(county, tmp_path, transport=first.transport, schedule_grace_seconds=1)
    try:
        _scheduler(second)
        missed = _wait(lambda: second.events("schedule.missed"))
        (entry,) = missed
        assert entry["schedule_id"] == schedule["id"] and entry["reason"] == "gateway_down"
        assert entry["outcome"] == "failed"
        assert abs(datetime.fromisoformat(entry["scheduled_for"]) - due) < timedelta(seconds=1)
        status = _schedule(second, schedule["id"])
        assert status["last_missed_at"] is not None and status["last_job"] is None
        with second.ctx.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(db.jobs)).scalar_one() == 0
        assert second.events("schedule.fired") == []
    finally:
        second.close()


def test_operators_pause_resume_and_remove_schedules_each_audited(fed: Fed) -> None:
    _scheduler(fed)
    schedule = _create(fed, {"day": "5", "hour": "2", "minute": "0"})
    assert schedule["next_run_at"] is not None
    assert datetime.fromisoformat(schedule["next_run_at"]).astimezone(ZONE).day == 5
    paused = fed.http.post(f"/v1/schedules/{schedule['id']}/pause", headers=fed.as_("operator")).json()
    assert paused["state"] == "paused" and paused["next_run_at"] is None
    assert fed.ctx.scheduler is not None
    again = fed.http.post(f"/v1/schedules/{schedule['id']}/pause", headers=fed.as_("operator"))
    assert again.status_code == 409
    resumed = fed.http.post(f"/v1/schedules/{schedule['id']}/resume", headers=fed.as_("operator")).json()
    assert resumed["state"] == "active" and resumed["next_run_at"] == schedule["next_run_at"]
    removed = fed.http.delete(f"/v1/schedules/{schedule['id']}", headers=fed.as_("operator")).json()
    assert removed["state"] == "removed" and removed["next_run_at"] is None
    with fed.ctx.engine.connect() as conn:
        assert conn.execute(sa.select(db.scheduler_jobs.c.id)).all() == []
    assert fed.http.get("/v1/schedules", headers=fed.as_("operator")).json()["schedules"] == []
    listed = fed.http.get("/v1/schedules?include_removed=true", headers=fed.as_("auditor")).json()[
        "schedules"
    ]
    assert [s["state"] for s in listed] == ["removed"]
    assert [e["state"] for e in fed.events("schedule.changed")] == ["paused", "active", "removed"]
    assert (
        fed.http.post(f"/v1/schedules/{schedule['id']}/run", headers=fed.as_("operator")).status_code == 409
    )


def test_an_operator_runs_a_schedule_now_as_a_systemd_timer_would(fed: Fed) -> None:
    """`POST /v1/schedules/{id}/run` (what `fedgate schedules run` calls) needs no in-process scheduler."""
    schedule = _create(fed, {"day": "5", "hour": "2"})
    r = fed.http.post(f"/v1/schedules/{schedule['id']}/run", headers=fed.as_("operator"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["principal"] == "analyst" and job["submitted_by"] == "operator"
    (fired,) = fed.events("schedule.fired")
    assert fired["trigger"] == "operator" and fired["actor"] == "operator"
    assert _schedule(fed, schedule["id"])["last_job"]["id"] == job["id"]
    fed.http.post(f"/v1/jobs/{job['id']}/cancel", headers=fed.as_("operator"))
    fed.wait_for(job["id"], ("succeeded", "failed", "cancelled"))


BAD_SCHEDULES = [
    ({"pack": "weekly"}, 404, "pack"),
    ({"run_as": "operator"}, 422, "run_as"),
    ({"run_as": "nobody"}, 422, "run_as"),
    ({"cron": {"hour": "25"}}, 422, "cron"),
    ({"cron": {"hour": "2; rm"}}, 422, "body.cron.hour"),
    ({"period_rule": "next_month"}, 422, "body.period_rule"),
    ({"epsilon": "0"}, 422, "body.epsilon"),
]


def test_a_bad_schedule_is_a_4xx_naming_the_field_and_stores_nothing(fed: Fed) -> None:
    for changes, status, field in BAD_SCHEDULES:
        body = {
            "name": "monthly pack",
            "pack": "monthly",
            "cron": {"day": "5"},
            "run_as": "analyst",
            **changes,
        }
        r = fed.http.post("/v1/schedules", json=body, headers=fed.as_("operator"))
        assert r.status_code == status, (changes, r.text)
        assert (r.json()["error"]["field"] or "").startswith(field), (changes, r.text)
    body = {"name": "monthly pack", "pack": "monthly", "cron": {"day": "5"}, "run_as": "analyst"}
    assert fed.http.post("/v1/schedules", json=body, headers=fed.as_("analyst")).status_code == 403
    with fed.ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.schedules)).scalar_one() == 0
    assert fed.events("schedule.created") == []
