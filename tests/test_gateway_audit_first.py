"""Audit before change: every change and its audit entry are one unit, whatever fails.

A small synthetic county runs in process: five connector apps behind an httpx transport and the gateway
app behind a test client. With the audit store refusing writes (a trigger on its table) every mutating
route answers 503 and the database is exactly as it was; free text that reads like a credential is prose
and is audited in full; an unexpected exception is a 500 that is in the log; a release over 1 MiB is
released and audited by the digest of the stored result; a run's failure is recorded once, with its
reason, and refunds only when no data arrived.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from county_fixture import headline_query
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dbservers import postgres_url  # noqa: F401 (fixture)
from fastapi.testclient import TestClient

from aggregation.query import QuerySpec
from connectors.config import load_config
from connectors.protocol import (
    Approval,
    ApprovalRule,
    ApprovedDataset,
    canonical_json,
    fingerprint,
    load_private_key,
    private_key_pem,
    public_key_text,
    sha256_hex,
    sign_approval,
    sign_rule,
)
from connectors.service import build_service
from connectors.service import create_app as create_connector_app
from connectors.synth import generate_county
from connectors.synth.monitoring import monitoring_config
from gateway import registry
from gateway.api.deps import _api_routes
from gateway.app import build_context, create_app
from gateway.auth import Role, create_principal
from gateway.client import GatewayClient
from gateway.context import GatewayContext
from gateway.dev.localfed import CONNECTORS, register_everything
from gateway.lifecycle import QueryState, release_unused, stays_charged
from gateway.settings import GatewaySettings
from privacy.ledger import CHARGED, REFUNDED, SPENT_FAILED

REFUSE_AUDIT = (
    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'the audit store refuses writes'); END"
)


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("county")
    generate_county(root, persons=150, seed=5)
    return root


class _Connectors(httpx.BaseTransport):
    """Calls to `http://<connector>.fed.test` reach that connector's app; `down` ones do not answer, and
    `failing` ones answer extracts with a 500."""

    def __init__(self, apps: dict[str, TestClient]) -> None:
        self.apps = apps
        self.down: set[str] = set()
        self.failing: set[str] = set()
        self.after_extract: Callable[[], None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host.split(".")[0]
        if name in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if name in self.failing and request.url.path == "/v1/extract":
            return httpx.Response(500, json={"error": "internal", "message": "boom", "request_id": "x"})
        r = self.apps[name].request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        if request.url.path == "/v1/extract" and self.after_extract is not None:
            self.after_extract()
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)


class _Through(httpx.BaseTransport):
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)


@dataclass
class Fed:
    """What `register_everything` needs of a federation, in process."""

    county: Path
    ctx: GatewayContext
    http: TestClient
    keys: dict[str, str]
    connectors: dict[str, SimpleNamespace]
    transport: _Connectors
    analyst_keys: dict[str, bytes]

    def client(self, who: str) -> GatewayClient:
        return GatewayClient(
            "http://testserver",
            self.keys[who],
            transport=_Through(self.http),
            analyst_key=self.analyst_keys.get(who),
        )

    def analyst_fingerprint(self, who: str) -> str:
        return fingerprint(load_private_key(self.analyst_keys[who]).public_key())

    def approval_key(self, department: str) -> bytes:
        return (self.county / "keys" / f"{department}-approval.key").read_bytes()

    def as_(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[who]}"}

    def events(self, action: str) -> list[dict[str, Any]]:
        return [e.event for e in self.ctx.audit.log.filter(action=action, limit=1000)]


@pytest.fixture
def fed(tmp_path: Path, county: Path) -> Iterator[Fed]:
    apps = {}
    for name in CONNECTORS:
        loaded = load_config(county / "connectors" / f"{name}.yaml")
        # Each test's connectors start with fresh state (nonces, served extracts, epsilon spent).
        config = loaded.config.model_copy(update={"state_dir": tmp_path / "connector-state" / name})
        loaded = loaded.model_copy(update={"config": config})
        apps[name] = TestClient(create_connector_app(build_service(loaded)))
    transport = _Connectors(apps)
    ctx = build_context(
        GatewaySettings(
            state_dir=tmp_path / "gateway",
            signing_key_file=county / "keys" / "gateway.key",
            audit_key_file=county / "keys" / "audit.key",
            data_year_epsilon=Decimal(20),
            default_analyst_quota=Decimal(10),
        )
    )
    ctx.transport = transport
    keys = {}
    for role, name, dept in [
        (Role.OPERATOR, "operator", None),
        (Role.ANALYST, "analyst", None),
        (Role.ANALYST, "other-analyst", None),
        (Role.AUDITOR, "auditor", None),
        *[(Role.DEPARTMENT_ADMIN, n, n) for n in CONNECTORS],
    ]:
        _, keys[name] = create_principal(ctx.engine, role=role, name=name, department=dept)
    http = TestClient(create_app(ctx), raise_server_exceptions=False)
    urls = {n: SimpleNamespace(url=f"http://{n}.fed.test") for n in CONNECTORS}
    analyst_keys = {n: private_key_pem(Ed25519PrivateKey.generate()) for n in ("analyst", "other-analyst")}
    federation = Fed(county, ctx, http, keys, urls, transport, analyst_keys)
    register_everything(federation, groups=False)  # type: ignore[arg-type]
    yield federation
    ctx.engine.dispose()


def _query(purpose: str, **changes: Any) -> QuerySpec:
    return QuerySpec.model_validate({**headline_query().model_dump(), "purpose": purpose, **changes})


def _snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    out = {}
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        ).scalars()
        for table in sorted(tables):
            rows = conn.execute(sa.text(f'SELECT * FROM "{table}"')).all()
            out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


def _signed_approval(fed: Fed, view: dict[str, Any], department: str) -> dict[str, Any]:
    spec = QuerySpec.model_validate(view["spec"])
    approval = Approval(
        department=department,
        query_id=spec.query_id,
        query_digest=spec.digest,
        unit=spec.unit,
        period_start=spec.period_start,
        period_end=spec.period_end,
        datasets=tuple(ApprovedDataset.model_validate(d) for d in view["required_approvals"][department]),
        epsilon=spec.epsilon,
    )
    return sign_approval(load_private_key(fed.approval_key(department)), approval).model_dump(mode="json")


def _signed_rule(fed: Fed, department: str, rule_id: str) -> dict[str, Any]:
    rule = ApprovalRule.model_validate(
        {
            "department": department,
            "rule_id": rule_id,
            "datasets": [{"dataset": "wages", "measures": ["wage_income"]}],
            "units": ["person"],
            "max_epsilon_per_query": "0.5",
            "analysts": [fed.analyst_fingerprint("analyst")],
            "window": {"max_queries": 10, "max_epsilon": "5"},
            "per_analyst": {"max_queries": 10, "max_epsilon": "5"},
        }
    )
    return sign_rule(load_private_key(fed.approval_key(department)), rule).model_dump(mode="json")


def test_with_the_audit_store_refusing_writes_every_mutating_route_is_503_and_changes_nothing(
    fed: Fed,
) -> None:
    http = fed.http
    # Queries in every state a mutating route acts on: one approved by the rules, two waiting for
    # departments (the rules cover only "analyst"), and the tax connector's registration to repeat.
    with fed.client("analyst") as analyst:  # signed with the analyst's own key, which the rules name
        approved = analyst.submit(_query("Bands by village, ready to run"))
    assert approved["state"] == "approved"
    waiting = http.post(
        "/v1/queries",
        json=_query("Bands by village, waiting for approval").model_dump(mode="json"),
        headers=fed.as_("other-analyst"),
    ).json()
    assert waiting["state"] == "submitted"
    tax = registry.get_connector(fed.ctx.engine, "tax")
    assert tax is not None
    group = {
        "definition": {"name": "dibao", "measure": "civil.assistance.assistance_income", "at_least": 1},
        "title": "Households receiving minimum-livelihood assistance",
        "title_zh": "低保户",
    }
    assert http.post("/v1/groups", json=group, headers=fed.as_("operator")).status_code == 201
    calls: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
        ("POST", "/v1/endpoints"): ("operator", {"url": "http://extra.fed.test"}),
        ("DELETE", "/v1/endpoints"): ("operator", None),
        ("POST", "/v1/connectors"): (
            "tax",
            {"name": "tax", "endpoint": tax.endpoint, "key_fingerprint": tax.key_fingerprint},
        ),
        ("POST", "/v1/connectors/{name}/disable"): ("operator", None),
        ("POST", "/v1/connectors/{name}/enable"): ("operator", None),
        ("POST", "/v1/queries"): ("analyst", _query("A new query that never lands").model_dump(mode="json")),
        ("POST", "/v1/queries/preview"): (
            "analyst",
            _query("A preview never answered").model_dump(mode="json"),
        ),
        ("POST", "/v1/queries/{query_id}/approvals"): ("tax", _signed_approval(fed, waiting, "tax")),
        ("POST", "/v1/queries/{query_id}/rejections"): ("civil", {"reason": "not for this purpose"}),
        ("POST", "/v1/analysts/{analyst}/keys"): (
            "operator",
            {"public_key": public_key_text(Ed25519PrivateKey.generate().public_key())},
        ),
        ("DELETE", "/v1/analysts/keys/{fingerprint}"): ("operator", None),
        ("POST", "/v1/rules"): ("tax", _signed_rule(fed, "tax", "tax-narrow")),
        ("DELETE", "/v1/rules/{rule_id}"): ("tax", None),
        ("PUT", "/v1/budget/quotas/{analyst}"): ("operator", {"epsilon": "3"}),
        ("PUT", "/v1/budget/datasets/{dataset}"): ("tax", {"epsilon": "4"}),
        ("POST", "/v1/groups"): ("operator", {**group, "title": "Minimum-livelihood households"}),
        ("POST", "/v1/groups/{name}/retire"): ("operator", None),
        ("POST", "/v1/queries/{query_id}/run"): ("analyst", None),
        ("POST", "/v1/indicators/{name}/run"): ("analyst", {"period": "2025-12"}),
        ("POST", "/v1/packs/{name}/run"): ("analyst", {"period": "2025-12"}),
        ("POST", "/v1/audit/checkpoint"): ("auditor", None),
        ("PUT", "/v1/monitoring"): ("operator", {**monitoring_config(), "description": "A new version"}),
        ("POST", "/v1/jobs"): ("analyst", {"kind": "pack", "name": "monthly", "period": "2025-12"}),
        ("POST", "/v1/jobs/{job_id}/cancel"): ("analyst", None),
        ("POST", "/v1/schedules"): (
            "operator",
            {"name": "monthly", "pack": "monthly", "cron": {"day": "5", "hour": "2"}, "run_as": "analyst"},
        ),
        ("POST", "/v1/schedules/{schedule_id}/pause"): ("operator", None),
        ("POST", "/v1/schedules/{schedule_id}/resume"): ("operator", None),
        ("POST", "/v1/schedules/{schedule_id}/run"): ("operator", None),
        ("DELETE", "/v1/schedules/{schedule_id}"): ("operator", None),
    }
    mutating = {
        (method, path)
        for path, methods, _ in _api_routes(http.app)  # type: ignore[arg-type]
        for method in methods
        if method in ("POST", "PUT", "PATCH", "DELETE")
    }
    assert mutating == set(calls), "a mutating route is missing from this test"
    queued = _queued_job(fed)
    schedule = http.post(
        "/v1/schedules",
        json={"name": "monthly", "pack": "monthly", "cron": {"day": "5", "hour": "2"}, "run_as": "analyst"},
        headers=fed.as_("operator"),
    ).json()
    paused = http.post(
        "/v1/schedules",
        json={"name": "paused", "pack": "monthly", "cron": {"day": "5", "hour": "2"}, "run_as": "analyst"},
        headers=fed.as_("operator"),
    ).json()
    assert http.post(f"/v1/schedules/{paused['id']}/pause", headers=fed.as_("operator")).status_code == 200
    fill = {
        "{job_id}": queued,
        "{schedule_id}": schedule["id"],
        "{name}": "tax",
        "{query_id}": waiting["id"],
        "{rule_id}": "tax-tests",
        "{analyst}": "analyst",
        "{dataset}": "tax.wages",
        "{fingerprint}": fed.analyst_fingerprint("analyst"),
    }
    # A checkpoint of the head as it will stay: signing one again stores nothing new.
    assert fed.ctx.checkpointer is not None
    fed.ctx.checkpointer.checkpoint()
    before = _snapshot(fed.ctx.engine)
    with fed.ctx.engine.begin() as conn:
        conn.execute(sa.text(REFUSE_AUDIT))
    for (method, path), (who, body) in sorted(calls.items()):
        url = path
        for hole, value in fill.items():
            url = url.replace(hole, value)
        if (method, path) == ("DELETE", "/v1/endpoints"):
            url = f"/v1/endpoints?url={tax.endpoint}"
        if path == "/v1/queries/{query_id}/run":
            url = f"/v1/queries/{approved['id']}/run"
        if path == "/v1/groups/{name}/retire":
            url = "/v1/groups/dibao/retire"
        if path == "/v1/indicators/{name}/run":
            url = "/v1/indicators/income_bands/run"
        if path == "/v1/packs/{name}/run":
            url = "/v1/packs/monthly/run"
        if path == "/v1/schedules/{schedule_id}/resume":
            url = f"/v1/schedules/{paused['id']}/resume"
        r = http.request(method, url, json=body, headers=fed.as_(who))
        assert r.status_code == 503, (method, url, r.text)
        assert r.json()["error"]["code"] == "audit_unavailable"
    with fed.ctx.engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_audit"))
    after = _snapshot(fed.ctx.engine)
    assert {t: rows for t, rows in after.items() if rows != before[t]} == {}
    # With the log writable again, the same calls change things, each with its entry.
    r = http.post("/v1/endpoints", json={"url": "http://extra.fed.test"}, headers=fed.as_("operator"))
    assert r.status_code == 201 and fed.events("endpoint.allowed")[-1]["endpoint"] == "http://extra.fed.test"


def _queued_job(fed: Fed) -> str:
    """A job that stays queued (written as `gateway.jobs.submit` writes one, without a worker to run it)."""
    from gateway import db, jobs

    job_id = "queued-for-the-audit-test"
    now = db.utcnow()
    with fed.ctx.engine.begin() as conn:
        conn.execute(
            db.jobs.insert().values(
                id=job_id,
                kind=jobs.JobKind.PACK.value,
                target="monthly",
                params_json="{}",
                principal="analyst",
                submitted_by="analyst",
                state=jobs.JobState.QUEUED.value,
                steps_done=0,
                steps_total=0,
                cancel_requested=False,
                created_at=now,
                updated_at=now,
            )
        )
    return job_id


def test_a_purpose_that_begins_like_a_credential_is_prose_and_fully_audited(fed: Fed) -> None:
    for purpose in ("Basic needs of fishing households by village", "Bearer bonds: households by village"):
        r = fed.http.post(
            "/v1/queries", json=_query(purpose).model_dump(mode="json"), headers=fed.as_("analyst")
        )
        assert r.status_code == 201, r.text
        submitted = [e for e in fed.events("query.submitted") if e["query_id"] == r.json()["id"]]
        assert len(submitted) == 1 and submitted[0]["spec"]["purpose"] == purpose
    rejected = fed.http.post(
        f"/v1/queries/{r.json()['id']}/rejections",
        json={"reason": "Basic rules of the department forbid it"},
        headers=fed.as_("tax"),
    )
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    assert fed.events("query.rejected")[-1]["reason"] == "Basic rules of the department forbid it"


def test_free_text_holding_an_id_number_is_refused_naming_the_field_before_anything_is_stored(
    fed: Fed,
) -> None:
    before = _snapshot(fed.ctx.engine)["queries"]
    spec = _query("Household of 11010519491231002X by village")
    r = fed.http.post("/v1/queries", json=spec.model_dump(mode="json"), headers=fed.as_("analyst"))
    assert r.status_code == 422 and r.json()["error"]["field"] == "purpose"
    assert _snapshot(fed.ctx.engine)["queries"] == before
    assert not [e for e in fed.events("query.submitted") if e["query_id"] == spec.query_id]
    refused = [e for e in fed.events("http.request") if e["status"] == 422]
    assert refused[-1]["error"] == "invalid_request"
    group = {
        "definition": {"name": "dibao", "measure": "civil.assistance.assistance_income", "at_least": 1},
        "title": "Households like that of 11010519491231002X",
        "title_zh": "低保户",
    }
    r = fed.http.post("/v1/groups", json=group, headers=fed.as_("operator"))
    assert r.status_code == 422 and r.json()["error"]["field"] == "title"
    assert _snapshot(fed.ctx.engine)["key_groups"] == []


def test_an_unexpected_exception_is_a_500_in_the_audit_log(fed: Fed, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(engine: sa.Engine) -> list[str]:
        raise RuntimeError("tok-7f3a9c secret detail")

    monkeypatch.setattr(registry, "list_endpoints", broken)
    r = fed.http.get("/v1/endpoints", headers=fed.as_("operator"))
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
    assert "tok-7f3a9c" not in r.text
    entry = fed.events("http.request")[-1]
    assert (entry["path"], entry["status"], entry["outcome"]) == ("/v1/endpoints", 500, "error")
    assert (
        entry["error_type"] == "builtins.RuntimeError"
        and entry["request_id"] == r.json()["error"]["request_id"]
    )
    assert "tok-7f3a9c" not in json.dumps(entry)


def test_a_release_over_one_mebibyte_is_released_and_audited_by_its_digest(fed: Fed) -> None:
    edges = tuple(range(-200_000, 5_000_000, 5_200))[:1000]
    spec = _query("Fine income distribution by village", statistics=[{"kind": "histogram", "edges": edges}])
    with fed.client("analyst") as analyst:
        view = analyst.submit(spec)
        result = analyst.run(view["id"])
    stored = fed.ctx.ledger.result(view["id"])
    assert stored is not None and len(canonical_json(stored)) > 1 << 20
    assert result["result"] == stored
    released = [e for e in fed.events("query.released") if e["query_id"] == view["id"]]
    assert len(released) == 1
    assert released[0]["result_digest"] == sha256_hex(canonical_json(stored)) and "release" not in released[0]
    entry = fed.ctx.ledger.entry(view["id"])
    assert entry is not None and entry.state == CHARGED


def test_a_connector_down_before_any_data_refunds_and_the_query_can_run_again(fed: Fed) -> None:
    with fed.client("analyst") as analyst:
        view = analyst.submit(_query("Bands by village while civil affairs is down"))
        fed.transport.down.add("civil")
        r = fed.http.post(f"/v1/queries/{view['id']}/run", headers=fed.as_("analyst"))
        assert r.status_code == 503 and r.json()["error"]["code"] == "connector_unavailable"
        assert analyst.query(view["id"])["state"] == QueryState.APPROVED
        assert fed.ctx.ledger.entry(view["id"]) is None  # the preflight failed: nothing was reserved
        failed = [e for e in fed.events("query.failed") if e["query_id"] == view["id"]]
        assert [(e["reason"], e["charged"], e["connectors"]) for e in failed] == [
            ("connector_unavailable", False, ["civil.assistance: unreachable"])
        ]
        runs = [e for e in fed.events("http.request") if e["path"] == "/v1/queries/{query_id}/run"]
        assert (runs[-1]["status"], runs[-1]["error"], runs[-1]["error_type"]) == (
            503,
            "connector_unavailable",
            "ConnectorUnavailable",
        )
        fed.transport.down.clear()
        assert analyst.run(view["id"])["query_id"] == view["id"]


def test_a_connector_failing_after_data_arrived_keeps_the_budget_spent_and_records_why(fed: Fed) -> None:
    with fed.client("analyst") as analyst:
        view = analyst.submit(_query("Bands by village while civil affairs fails"))
        fed.transport.failing.add("civil")
        r = fed.http.post(f"/v1/queries/{view['id']}/run", headers=fed.as_("analyst"))
        fed.transport.failing.clear()
        assert r.status_code == 502 and r.json()["error"]["code"] == "connector_error"
        assert analyst.query(view["id"])["state"] == QueryState.FAILED
    entry = fed.ctx.ledger.entry(view["id"])
    assert entry is not None and entry.state == SPENT_FAILED
    failed = [e for e in fed.events("query.failed") if e["query_id"] == view["id"]]
    assert [(e["reason"], e["charged"], e["connectors"]) for e in failed] == [
        ("connector_error", True, ["civil.assistance"])
    ]


def test_the_refund_rule_lives_in_one_place(fed: Fed) -> None:
    ledger = fed.ctx.ledger
    for qid in ("q-no-data-000001", "q-with-data-0001"):
        ledger.reserve(qid, analyst="a", datasets=["tax.wages"], epsilon=Decimal("0.1"), data_years=("2025",))
    ledger.mark_data_arrived("q-with-data-0001")
    assert not stays_charged(ledger.entry("q-no-data-000001"))
    assert stays_charged(ledger.entry("q-with-data-0001"))
    assert release_unused(ledger, "q-no-data-000001") is False
    assert release_unused(ledger, "q-with-data-0001") is True
    assert [ledger.entry(q).state for q in ("q-no-data-000001", "q-with-data-0001")] == [  # type: ignore[union-attr]
        REFUNDED,
        SPENT_FAILED,
    ]
    assert release_unused(ledger, "q-with-data-0001") is True  # settled once; again changes nothing


def test_the_query_states_are_the_ones_the_database_accepts() -> None:
    from gateway import db

    assert tuple(s.value for s in QueryState) == db.QUERY_STATES


def test_a_run_whose_audit_entries_stop_after_data_arrived_changes_nothing_unrecorded(fed: Fed) -> None:
    with fed.client("analyst") as analyst:
        view = analyst.submit(_query("Bands by village while the audit store fails mid-run"))

    def refuse_audit() -> None:
        fed.transport.after_extract = None
        with fed.ctx.engine.begin() as conn:
            conn.execute(sa.text(REFUSE_AUDIT))

    fed.transport.after_extract = refuse_audit
    r = fed.http.post(f"/v1/queries/{view['id']}/run", headers=fed.as_("analyst"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
    assert "restarts" in r.json()["error"]["message"]
    # Nothing was released, refunded or moved on without its entry: the query is still running and its
    # reservation, with data arrived, still counts.
    assert fed.ctx.ledger.result(view["id"]) is None
    entry = fed.ctx.ledger.entry(view["id"])
    assert entry is not None and entry.state == "reserved" and entry.data_arrived
    with fed.ctx.engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_audit"))
        state = conn.execute(sa.text("SELECT state FROM queries WHERE id = :q"), {"q": view["id"]}).scalar()
    assert state == QueryState.RUNNING
    assert not [e for e in fed.events("query.failed") if e["query_id"] == view["id"]]
    # The next start settles it, audited: data had arrived, so the budget stays spent.
    build_context(fed.ctx.settings, engine=fed.ctx.engine)
    with fed.ctx.engine.connect() as conn:
        state = conn.execute(sa.text("SELECT state FROM queries WHERE id = :q"), {"q": view["id"]}).scalar()
    assert state == QueryState.FAILED
    settled = fed.ctx.ledger.entry(view["id"])
    assert settled is not None and settled.state == SPENT_FAILED
    interrupted = [e for e in fed.events("query.interrupted") if e["query_id"] == view["id"]]
    assert [(e["charged"], e["state"]) for e in interrupted] == [(True, "failed")]


def test_a_principal_is_created_or_revoked_only_with_its_entry(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gateway import db
    from gateway.cli.users import users_app

    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    runner = CliRunner()
    assert (
        runner.invoke(
            users_app, ["create", "--role", "analyst", "--name", "ana", "--database-url", url]
        ).exit_code
        == 0
    )
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(REFUSE_AUDIT))
    before = _snapshot(engine)
    made = runner.invoke(users_app, ["create", "--role", "analyst", "--name", "bob", "--database-url", url])
    assert made.exit_code == 1 and "no principal was created" in made.stderr
    gone = runner.invoke(users_app, ["revoke", "ana", "--database-url", url])
    assert gone.exit_code == 1 and "not revoked" in gone.stderr
    assert _snapshot(engine) == before
    engine.dispose()


@pytest.mark.postgres
def test_on_postgresql_a_refused_entry_rolls_its_change_back(postgres_url: str) -> None:  # noqa: F811
    from audit.store import AuditLog
    from gateway import db
    from gateway.audit_trail import AuditTrail
    from gateway.auth import Principal
    from gateway.errors import AuditUnavailable

    engine = db.make_engine(postgres_url)
    db.migrate(engine)
    trail = AuditTrail(AuditLog(engine))
    operator, _ = create_principal(engine, role=Role.OPERATOR, name="op", trail=trail)
    assert isinstance(operator, Principal)
    registry.allow_endpoint(trail, "http://one.fed.test", operator)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ "
                "LANGUAGE plpgsql"
            )
        )
        conn.execute(
            sa.text("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries EXECUTE FUNCTION refuse()")
        )
    with pytest.raises(AuditUnavailable):
        registry.allow_endpoint(trail, "http://two.fed.test", operator)
    assert registry.list_endpoints(engine) == ["http://one.fed.test"]
    assert [e.event["action"] for e in trail.log.entries()] == ["user.created", "endpoint.allowed"]
    engine.dispose()
