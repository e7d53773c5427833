"""The command line's jobs, schedules and archive, against the in-process county: `indicators run` submits
a job and follows its progress, `--no-wait` prints its id, `jobs` lists, shows and cancels, `schedules`
adds, pauses, resumes, runs and removes, `archive` lists, shows and diffs; labels in Chinese by default
and in English with FEDGATE_LANG=en."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from job_fixture import Fed, Through, start
from typer.testing import CliRunner

from connectors.synth import generate_county
from gateway.cli import indicators as indicators_cli
from gateway.cli import jobs as jobs_cli
from gateway.cli import main as main_cli
from gateway.cli.main import app
from gateway.client import GatewayClient


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("county")
    generate_county(root, persons=150, seed=5)
    return root


@pytest.fixture
def fed(tmp_path: Path, county: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fed]:
    federation = start(county, tmp_path)

    def client(url: str, key: str) -> GatewayClient:
        return GatewayClient(url, key, transport=Through(federation.http))

    for module, name in ((indicators_cli, "client_factory"), (jobs_cli, "_client"), (main_cli, "_client")):
        monkeypatch.setattr(module, name, client)
    yield federation
    federation.close()


def _run(fed: Fed, who: str, *args: str, lang: str | None = None) -> Any:
    env = {"FEDGATE_URL": "http://testserver", "FEDGATE_API_KEY": fed.keys[who]}
    if lang is not None:
        env["FEDGATE_LANG"] = lang
    return CliRunner().invoke(app, list(args), env=env)


def test_a_pack_runs_as_a_job_with_progress_and_the_jobs_commands_follow_it(fed: Fed) -> None:
    ran = _run(fed, "analyst", "indicators", "run", "--pack", "monthly", "--period", "2025-12")
    assert ran.exit_code == 0, ran.output
    assert "urban_rural_ratio" in ran.stdout or "城乡" in ran.stdout
    # The progress bar ends on its last step with every step counted.
    assert "done" in ran.output and "52/52" in ran.output
    (job,) = fed.http.get("/v1/jobs", headers=fed.as_("analyst")).json()["jobs"]
    listed = _run(fed, "analyst", "jobs", "list")
    assert listed.exit_code == 0 and job["id"] in listed.stdout and "已完成" in listed.stdout
    english = _run(fed, "analyst", "jobs", "list", lang="en")
    assert "succeeded" in english.stdout and "current step" in english.stdout
    shown = json.loads(_run(fed, "analyst", "jobs", "show", job["id"], "--json").stdout)
    assert shown["state"] == "succeeded"
    # --no-wait prints the id alone; a cancel of a finished job is refused with the gateway's words.
    queued = _run(
        fed, "analyst", "indicators", "run", "--pack", "monthly", "--period", "2025-11", "--no-wait"
    )
    assert queued.exit_code == 0
    job_id = queued.stdout.strip()
    assert fed.http.get(f"/v1/jobs/{job_id}", headers=fed.as_("analyst")).json()["target"] == "monthly"
    waited = _run(fed, "analyst", "jobs", "show", job_id, "--wait", lang="en")
    assert waited.exit_code == 0 and "succeeded" in waited.stdout
    refused = _run(fed, "analyst", "jobs", "cancel", job_id)
    assert refused.exit_code == 1 and "conflict" in refused.output
    # A failed run prints its public error and exits 1: under rules that name only "analyst", another
    # analyst's pack waits for every department.
    fed.sign_rules(("analyst",))
    failed = _run(fed, "other-analyst", "indicators", "run", "--pack", "monthly", "--period", "2025-12")
    assert failed.exit_code == 1 and "not_approved" in failed.output


def test_schedules_and_the_archive_from_the_command_line(fed: Fed) -> None:
    added = _run(
        fed, "operator", "schedules", "add", "--name", "monthly pack", "--run-as", "analyst", "--json"
    )
    assert added.exit_code == 0, added.output
    schedule = json.loads(added.stdout)
    assert schedule["cron"] == {
        "second": "0",
        "minute": "0",
        "hour": "2",
        "day": "5",
        "month": "*",
        "day_of_week": "*",
    }
    listed = _run(fed, "operator", "schedules", "list", lang="en")
    assert schedule["id"] in listed.stdout and "active" in listed.stdout
    paused = _run(fed, "operator", "schedules", "pause", schedule["id"])
    assert paused.exit_code == 0 and "已暂停" in paused.stdout
    assert _run(fed, "operator", "schedules", "resume", schedule["id"]).exit_code == 0
    refused = _run(fed, "analyst", "schedules", "add", "--name", "x", "--run-as", "analyst")
    assert refused.exit_code == 1 and "forbidden" in refused.output
    # Run once now (what a systemd timer calls), for the previous month of today.
    ran = _run(fed, "operator", "schedules", "run", schedule["id"], "--no-wait")
    assert ran.exit_code == 0
    job_id = ran.stdout.strip()
    assert (
        fed.http.get(f"/v1/jobs/{job_id}", headers=fed.as_("operator")).json()["schedule_id"]
        == schedule["id"]
    )
    fed.wait_for(job_id, ("succeeded", "failed", "cancelled"))
    removed = _run(fed, "operator", "schedules", "remove", schedule["id"], lang="en")
    assert removed.exit_code == 0 and "removed" in removed.stdout
    # Archive: two months of the schedule's runs, then list, show and diff.
    from gateway import jobs
    from gateway.auth import principal_named

    analyst = principal_named(fed.ctx.engine, "analyst")
    for period in ("2025-11", "2025-12"):
        job = jobs.submit(
            fed.ctx,
            jobs.JobKind.PACK,
            "monthly",
            {"period": period},
            principal=analyst,
            submitted_by="scheduler",
            schedule_id=schedule["id"],
        )
        assert fed.wait_for(job.id, ("succeeded", "failed"))["state"] == "succeeded"
    archived = json.loads(_run(fed, "auditor", "archive", "list", "--json").stdout)["archived"]
    periods = [a["period"] for a in archived]
    assert periods == sorted(periods, reverse=True) and {"2025-12", "2025-11"} <= set(periods)
    december = next(a for a in archived if a["period"] == "2025-12")
    shown = _run(fed, "auditor", "archive", "show", december["id"])
    assert shown.exit_code == 0, shown.output
    diff = _run(fed, "auditor", "archive", "diff", december["id"], lang="en")
    assert diff.exit_code == 0 and "monthly 2025-12 against 2025-11" in diff.stdout
    assert "previous month" in diff.stdout
