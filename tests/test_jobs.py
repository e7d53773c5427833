"""Runs as jobs, in process against a small synthetic county: a pack job returns at once and reports its
steps live (server-sent events), its result is the synchronous route's; a cancel stops a run before data
arrives and refunds exactly what no data reached; a queued job cancels at once; jobs are private to their
analyst; refusals are 4xx with nothing stored.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from county_fixture import headline_query
from job_fixture import Fed, start

from aggregation.query import QuerySpec
from connectors.synth import generate_county
from gateway import db, jobs
from privacy.ledger import CHARGED, REFUNDED, SPENT_FAILED

PACK = {"kind": "pack", "name": "monthly", "period": "2025-12"}


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("county")
    generate_county(root, persons=150, seed=5)
    return root


@pytest.fixture
def fed(tmp_path: Path, county: Path) -> Iterator[Fed]:
    federation = start(county, tmp_path)
    yield federation
    federation.transport.hold.clear()
    federation.close()


def _spent(fed: Fed) -> Decimal:
    (year,) = fed.client("analyst").budget(["2025"])["years"]
    return Decimal(year["spent"])


def _events(fed: Fed, job_id: str, who: str = "analyst") -> list[dict[str, Any]]:
    """Every `job` event of the job's stream, read until the server closes it."""
    out = []
    with fed.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=fed.as_(who)) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def _job_rows(fed: Fed) -> int:
    with fed.ctx.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(db.jobs)).scalar_one())


def _record_steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every step label a job writes on its row (the stream polls the row, so it may skip a short one)."""
    labels: list[str] = []
    step = jobs.JobProgress.step

    def recording(self: jobs.JobProgress, label: str, *, stoppable: bool = True) -> None:
        labels.append(label)
        step(self, label, stoppable=stoppable)

    monkeypatch.setattr(jobs.JobProgress, "step", recording)
    return labels


def test_a_pack_job_returns_at_once_reports_its_steps_and_serves_the_synchronous_result(
    fed: Fed, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = _record_steps(monkeypatch)
    before = _spent(fed)
    r = fed.http.post("/v1/jobs", json=PACK, headers=fed.as_("analyst"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and job["principal"] == "analyst"
    assert job["events"] == f"/v1/jobs/{job['id']}/events" and job["result"] is None
    seen = _events(fed, job["id"])
    states = [e["state"] for e in seen]
    assert states[-1] == "succeeded", seen[-1]
    assert "running" in states
    done = [e["steps_done"] for e in seen]
    assert done == sorted(done), "progress never goes back"
    running = [e for e in seen if e["state"] == "running" and e["steps_total"]]
    assert running, "the stream showed the run under way"
    total = running[0]["steps_total"]
    assert all(e["steps_total"] == total for e in running)
    # Labels are public: fixed step names and the queries' roles, never a number from the data. The
    # stream shows what the row holds when it polls; the job wrote every step.
    labels = {e["current_step"] for e in running}
    assert labels <= set(written) and any(label.startswith("query ") for label in labels if label)
    assert written[:3] == ["approvals", "preflight", "reserve"] and written[-1] == "figures"
    assert written[3].startswith("query 1/") and len(written) == total
    final = seen[-1]
    assert final["steps_done"] == final["steps_total"] == total
    assert final["result"] == f"/v1/jobs/{job['id']}/result"
    result = fed.http.get(final["result"], headers=fed.as_("analyst")).json()
    assert result["kind"] == "pack" and result["query"] is None
    charged = _spent(fed) - before
    assert charged == Decimal(result["run"]["epsilon"]) == Decimal("0.7")
    # The synchronous route serves the same released figures and charges nothing more.
    again = fed.client("analyst").run_pack("monthly", period="2025-12")
    assert again["indicators"] == result["run"]["indicators"]
    assert _spent(fed) - before == charged
    # One submission, one run, one finish in the audit log, as the analyst.
    (submitted,) = fed.events("job.submitted")
    assert submitted["job_id"] == job["id"] and submitted["actor"] == "analyst"
    (finished,) = fed.events("job.finished")
    assert finished["state"] == "succeeded" and finished["outcome"] == "ok"
    assert [e["indicator"] for e in fed.events("indicator.run")] == ["pack:monthly", "pack:monthly"]
    listed = fed.http.get("/v1/jobs", headers=fed.as_("analyst")).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_a_cancel_before_any_data_arrived_refunds_everything(fed: Fed) -> None:
    before = _spent(fed)
    fed.transport.hold_path = "/v1/preflight"
    fed.transport.hold.set()
    job = fed.http.post("/v1/jobs", json=PACK, headers=fed.as_("analyst")).json()
    assert fed.transport.held.wait(30), "the pack reached its preflight"
    r = fed.http.post(f"/v1/jobs/{job['id']}/cancel", headers=fed.as_("analyst"))
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    assert r.json()["state"] == "running"
    fed.transport.hold.clear()
    final = fed.wait_for(job["id"], ("cancelled", "failed", "succeeded"))
    assert final["state"] == "cancelled", final
    assert final["error"]["code"] == "conflict" and "cancelled" in final["error"]["message"]
    assert _spent(fed) == before
    assert fed.http.get(f"/v1/jobs/{job['id']}/result", headers=fed.as_("analyst")).status_code == 409
    (cancelled,) = fed.events("job.cancelled")
    assert cancelled["state"] == "running" and cancelled["actor"] == "analyst"
    assert fed.events("job.finished")[-1]["state"] == "cancelled"
    # Nothing was reserved: no extract was ever requested.
    assert [e for e in fed.events("connector.request") if e["path"] == "/v1/extract"] == []


def test_a_cancel_after_data_arrived_keeps_that_query_charged_and_refunds_the_rest(fed: Fed) -> None:
    before = _spent(fed)
    fed.transport.hold.set()
    job = fed.http.post("/v1/jobs", json=PACK, headers=fed.as_("analyst")).json()
    assert fed.transport.held.wait(30), "the pack's first query asked for its extracts"
    fed.http.post(f"/v1/jobs/{job['id']}/cancel", headers=fed.as_("analyst"))
    fed.transport.hold.clear()
    final = fed.wait_for(job["id"], ("cancelled", "failed", "succeeded"))
    assert final["state"] == "cancelled", final
    # The query whose data had arrived ran to its release (its budget was spent either way); every
    # query the cancel reached before its extracts is refunded.
    states: dict[str, str] = {}
    epsilons: dict[str, Decimal] = {}
    for qid in fed.events("indicator.run")[0]["query_ids"]:
        entry = fed.ctx.ledger.entry(qid)
        assert entry is not None
        states[qid], epsilons[qid] = entry.state, entry.epsilon
    kept = [q for q, s in states.items() if s in (CHARGED, SPENT_FAILED)]
    assert len(kept) == 1 and states[kept[0]] == CHARGED
    assert all(s == REFUNDED for q, s in states.items() if q not in kept)
    assert _spent(fed) - before == epsilons[kept[0]]
    (failed,) = fed.events("indicator.failed")
    assert sorted(failed["refunded"]) == sorted(q for q in states if q not in kept)


def test_a_queued_job_cancels_at_once_and_never_runs(fed: Fed, tmp_path: Path) -> None:
    fed.ctx.settings.job_workers = 1
    fed.ctx.stop_jobs()
    fed.transport.hold.set()
    first = fed.http.post("/v1/jobs", json=PACK, headers=fed.as_("analyst")).json()
    assert fed.transport.held.wait(30)
    second = fed.http.post("/v1/jobs", json={**PACK, "period": "2025-11"}, headers=fed.as_("analyst")).json()
    assert fed.http.get(f"/v1/jobs/{second['id']}", headers=fed.as_("analyst")).json()["state"] == "queued"
    r = fed.http.post(f"/v1/jobs/{second['id']}/cancel", headers=fed.as_("analyst"))
    assert r.json()["state"] == "cancelled" and r.json()["finished_at"] is not None
    fed.transport.hold.clear()
    assert fed.wait_for(first["id"], ("succeeded", "failed"))["state"] == "succeeded"
    time.sleep(0.5)
    after = fed.http.get(f"/v1/jobs/{second['id']}", headers=fed.as_("analyst")).json()
    assert after["state"] == "cancelled" and after["started_at"] is None
    assert [e["indicator"] for e in fed.events("indicator.run")] == ["pack:monthly"]
    again = fed.http.post(f"/v1/jobs/{second['id']}/cancel", headers=fed.as_("analyst"))
    assert again.status_code == 409 and again.json()["error"]["field"] == "job_id"


def test_a_query_job_runs_an_approved_query_and_a_waiting_one_fails_with_the_public_error(fed: Fed) -> None:
    analyst = fed.client("analyst")
    approved = analyst.submit(headline_query())
    assert approved["state"] == "approved"
    job = fed.http.post(
        "/v1/jobs", json={"kind": "query", "query_id": approved["id"]}, headers=fed.as_("analyst")
    ).json()
    done = fed.wait_for(job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done
    result = fed.http.get(done["result"], headers=fed.as_("analyst")).json()
    assert result["query"]["query_id"] == approved["id"] and result["run"] is None
    assert result["query"] == analyst.result(approved["id"])
    # Rules that name only "analyst": another analyst's query waits for every department.
    fed.sign_rules(("analyst",))
    spec = QuerySpec.model_validate({**headline_query().model_dump(), "purpose": "Bands by village, again"})
    other = fed.client("other-analyst").submit(spec)
    job = fed.http.post(
        "/v1/jobs", json={"kind": "query", "query_id": other["id"]}, headers=fed.as_("other-analyst")
    ).json()
    failed = fed.wait_for(job["id"], ("succeeded", "failed"))
    assert failed["state"] == "failed" and failed["error"]["code"] == "not_approved"
    assert fed.client("other-analyst").query(other["id"])["state"] == "submitted"
    assert fed.ctx.ledger.entry(other["id"]) is None


def test_jobs_are_private_to_their_analyst_and_operators(fed: Fed) -> None:
    job = fed.http.post("/v1/jobs", json=PACK, headers=fed.as_("analyst")).json()
    for path in ("", "/events", "/result"):
        r = fed.http.get(f"/v1/jobs/{job['id']}{path}", headers=fed.as_("other-analyst"))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
    r = fed.http.post(f"/v1/jobs/{job['id']}/cancel", headers=fed.as_("other-analyst"))
    assert r.status_code == 404
    assert fed.http.get("/v1/jobs", headers=fed.as_("other-analyst")).json()["jobs"] == []
    assert [j["id"] for j in fed.http.get("/v1/jobs", headers=fed.as_("operator")).json()["jobs"]] == [
        job["id"]
    ]
    assert fed.http.post("/v1/jobs", json=PACK, headers=fed.as_("operator")).status_code == 403
    # An operator may cancel any job.
    assert fed.http.post(f"/v1/jobs/{job['id']}/cancel", headers=fed.as_("operator")).status_code == 200
    fed.wait_for(job["id"], ("succeeded", "failed", "cancelled"))


BAD_SUBMISSIONS = [
    ({"kind": "pack", "name": "monthly", "period": "2025-13"}, 422, "body.pack.period"),
    ({"kind": "pack", "name": "weekly", "period": "2025-12"}, 404, "body.name"),
    ({"kind": "indicator", "name": "nothing", "period": "2025-12"}, 404, "body.name"),
    ({"kind": "query", "query_id": "q-unknown"}, 404, "query_id"),
    ({"kind": "report", "name": "monthly"}, 422, "body"),
    ({"kind": "pack", "name": "monthly", "period": "2025-12", "extra": 1}, 422, "body.pack.extra"),
]


def test_a_bad_submission_is_a_4xx_naming_the_field_and_stores_nothing(fed: Fed) -> None:
    for body, status, field in BAD_SUBMISSIONS:
        r = fed.http.post("/v1/jobs", json=body, headers=fed.as_("analyst"))
        assert r.status_code == status, (body, r.text)
        assert (r.json()["error"]["field"] or "").startswith(field), (body, r.text)
    assert _job_rows(fed) == 0
    assert fed.events("job.submitted") == []


def test_past_the_queued_jobs_limit_a_submission_is_429_and_stores_nothing(fed: Fed) -> None:
    fed.ctx.settings.max_queued_jobs_per_analyst = 1
    fed.transport.hold.set()
    first = fed.http.post("/v1/jobs", json=PACK, headers=fed.as_("analyst"))
    assert first.status_code == 202
    r = fed.http.post("/v1/jobs", json={**PACK, "period": "2025-11"}, headers=fed.as_("analyst"))
    assert r.status_code == 429 and "FEDGATE_MAX_QUEUED_JOBS_PER_ANALYST" in r.json()["error"]["message"]
    assert _job_rows(fed) == 1 and len(fed.events("job.submitted")) == 1
    fed.http.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=fed.as_("analyst"))
    fed.transport.hold.clear()
    fed.wait_for(first.json()["id"], ("succeeded", "failed", "cancelled"))


def test_a_job_waits_for_its_analysts_run_slot(fed: Fed) -> None:
    """The per-analyst run slots count jobs and synchronous runs alike."""
    fed.ctx.settings.max_concurrent_runs_per_analyst = 1
    fed.ctx.run_slots.acquire("analyst", 1)
    approved = fed.client("analyst").submit(headline_query())
    job = fed.http.post(
        "/v1/jobs", json={"kind": "query", "query_id": approved["id"]}, headers=fed.as_("analyst")
    ).json()
    time.sleep(1.5)
    assert fed.http.get(f"/v1/jobs/{job['id']}", headers=fed.as_("analyst")).json()["state"] == "queued"
    sync = fed.http.post("/v1/packs/monthly/run", json={"period": "2025-12"}, headers=fed.as_("analyst"))
    assert sync.status_code == 429
    threading.Timer(0.2, fed.ctx.run_slots.release, args=("analyst",)).start()
    assert fed.wait_for(job["id"], ("succeeded", "failed"))["state"] == "succeeded"
