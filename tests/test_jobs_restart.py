"""A gateway process killed mid-job and started again, on a live loopback federation: the running job is
interrupted and its queries settled by the lifecycle's refund rule (the ledger charges exactly the queries
that received data), the queued job runs after the restart, and the interrupted job submitted again
re-serves what was released and charges only what was refunded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from gateway.client import GatewayClient
from gateway.dev.localfed import Federation, register_everything, start_federation
from gateway.dev.process import start_gateway
from gateway.jobs import INTERRUPTED_MESSAGE

ENV = {
    "FEDGATE_DATA_YEAR_EPSILON": "5",
    "FEDGATE_DEFAULT_ANALYST_QUOTA": "5",
    "FEDGATE_JOB_WORKERS": "1",
    "FEDGATE_SCHEDULES_ENABLED": "false",
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = start_federation(tmp_path_factory.mktemp("fed"), persons=150, seed=8, env=ENV)
    try:
        register_everything(federation, analysts=("*",))  # packs carry no analyst's signature
        yield federation
    finally:
        federation.stop()


def _job(client: GatewayClient, job_id: str) -> dict[str, Any]:
    return client._do("GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]


def _until(client: GatewayClient, job_id: str, done: Any, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(client, job_id)
        if done(job):
            return job
        time.sleep(0.03)
    raise AssertionError(f"job {job_id}: {job}")


def _spent(client: GatewayClient) -> Decimal:
    (year,) = client.budget(["2025"])["years"]
    return Decimal(year["spent"])


def test_a_gateway_killed_mid_job_interrupts_it_settles_its_queries_and_resumes_the_queued_one(
    fed: Federation,
) -> None:
    with fed.client("analyst") as analyst:
        running = analyst.submit_job("pack", "monthly", period="2025-12")
        queued = analyst.submit_job("pack", "monthly", period="2025-11")
        # Killed once the pack's first query is released and the second is under way.
        _until(analyst, running["id"], lambda j: (j["current_step"] or "").startswith("query 2/"))
        assert _job(analyst, queued["id"])["state"] == "queued"
    fed.gateway.kill()
    fed.gateway = start_gateway(
        fed.root / "gateway",
        signing_key_file=fed.county / "keys" / "gateway.key",
        audit_key_file=fed.county / "keys" / "audit.key",
        env={"FEDGATE_MONITORING_CONFIG_FILE": str(fed.county / "monitoring.yaml"), **ENV},
    )
    with fed.client("analyst") as analyst, fed.client("auditor") as auditor:
        job = _job(analyst, running["id"])
        assert job["state"] == "interrupted" and job["finished_at"] is not None
        assert job["error"]["code"] == "conflict" and job["error"]["message"] == INTERRUPTED_MESSAGE
        (entry,) = auditor.audit_entries(action="job.interrupted")["entries"]
        assert entry["event"]["job_id"] == running["id"]
        run = auditor.audit_entries(action="indicator.run")["entries"][0]  # the killed job's, first
        states = {qid: analyst.query(qid) for qid in run["event"]["query_ids"]}
        # The lifecycle's rule: released stays released; the query cut off is failed (spent) if data had
        # reached it, else approved and refunded; queries never started are refunded.
        assert {q["state"] for q in states.values()} <= {"released", "failed", "approved"}
        assert next(iter(states.values()))["state"] == "released"
        kept = [q for q in states.values() if q["state"] in ("released", "failed")]
        charged = sum((Decimal(q["spec"]["epsilon"]) for q in kept), Decimal(0))
        # The queued job ran after the restart: its own whole epsilon, nothing else.
        done = _until(analyst, queued["id"], lambda j: j["state"] not in ("queued", "running"))
        assert done["state"] == "succeeded", done
        assert _spent(analyst) == charged + Decimal("0.7")
        failed = [q for q in states.values() if q["state"] == "failed"]
        again = analyst.submit_job("pack", "monthly", period="2025-12")
        final = _until(analyst, again["id"], lambda j: j["state"] not in ("queued", "running"))
        if failed:
            # A query whose data arrived spent its budget and cannot run again: the pack says so.
            assert final["state"] == "failed" and final["error"]["code"] == "conflict", final
            assert _spent(analyst) == charged + Decimal("0.7")
        else:
            assert final["state"] == "succeeded", final
            assert _spent(analyst) == Decimal("1.4")
