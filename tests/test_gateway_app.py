"""The gateway application in process: deny by default, one error shape, OpenAPI, fail-closed audit,
start-up recovery of interrupted runs, and production refusals at start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from gateway import db
from gateway.api.deps import _api_routes, routes_without_auth
from gateway.app import build_context, create_app
from gateway.auth import Role, create_principal
from gateway.context import GatewayContext
from gateway.settings import GatewaySettings, SettingsError


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[GatewayContext]:
    settings = GatewaySettings(state_dir=tmp_path / "state")
    context = build_context(settings)
    yield context
    context.engine.dispose()


def test_every_route_but_healthz_needs_a_key(ctx: GatewayContext) -> None:
    from gateway.app import AuditMiddleware
    from gateway.flood import FloodGate

    app = create_app(ctx)
    assert routes_without_auth(app) == ["GET /healthz"]
    for m in app.user_middleware:
        if m.cls is AuditMiddleware:
            m.kwargs["flood"] = FloodGate(burst=1_000)  # every route once, without a key, is no flood
    client = TestClient(app)
    tried = 0
    for path, methods, _ in _api_routes(app):
        if not path.startswith("/v1") and path != "/metrics":
            continue
        for method in methods - {"HEAD", "OPTIONS"}:
            url = path.replace("{query_id}", "q-x").replace("{name}", "x").replace("{rule_id}", "x")
            url = url.replace("{analyst}", "x").replace("{dataset}", "x.y").replace("{seq}", "1")
            r = client.request(method, url)
            assert r.status_code == 401, (method, url)
            assert set(r.json()["error"]) == {"code", "message", "field", "request_id"}
            tried += 1
    assert tried >= 30  # every API route was reached (routers included)


def test_openapi_docs_and_health(ctx: GatewayContext) -> None:
    client = TestClient(create_app(ctx))
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/queries", "/v1/queries/{query_id}/run", "/v1/catalog", "/v1/budget", "/v1/rules"} <= set(
        paths
    )


def test_roles_get_403_with_the_one_error_shape(ctx: GatewayContext) -> None:
    _, analyst = create_principal(ctx.engine, role=Role.ANALYST, name="ana")
    _, auditor = create_principal(ctx.engine, role=Role.AUDITOR, name="aud")
    client = TestClient(create_app(ctx))
    r = client.post(
        "/v1/endpoints", json={"url": "http://127.0.0.1:1"}, headers={"authorization": f"Bearer {analyst}"}
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = client.get("/metrics", headers={"authorization": f"Bearer {auditor}"})
    assert r.status_code == 403
    r = client.post("/v1/queries", json={"purpose": "x"}, headers={"authorization": f"Bearer {auditor}"})
    assert r.status_code == 403


def test_the_gateway_fails_closed_when_the_audit_log_cannot_be_written(ctx: GatewayContext) -> None:
    _, operator = create_principal(ctx.engine, role=Role.OPERATOR, name="op")
    client = TestClient(create_app(ctx))
    headers = {"authorization": f"Bearer {operator}"}
    assert client.get("/v1/endpoints", headers=headers).status_code == 200
    with ctx.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_entries"))
    r = client.post("/v1/endpoints", json={"url": "http://127.0.0.1:9"}, headers=headers)
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
    r = client.get("/v1/endpoints", headers=headers)
    assert r.status_code == 503


def test_a_run_interrupted_before_any_data_is_refunded_at_start(ctx: GatewayContext, tmp_path: Path) -> None:
    from decimal import Decimal

    now = db.utcnow()
    with ctx.engine.begin() as conn:
        conn.execute(
            db.queries.insert().values(
                id="q-interrupted-0001",
                digest="f" * 64,
                spec_json="{}",
                analyst="ana",
                state="running",
                created_at=now,
                updated_at=now,
            )
        )
    ctx.ledger.reserve("q-interrupted-0001", analyst="ana", datasets=["tax.wages"], epsilon=Decimal("0.5"))
    assert ctx.ledger.spent() == Decimal("0.5")
    again = build_context(ctx.settings, engine=ctx.engine)
    with again.engine.connect() as conn:
        state = conn.execute(
            sa.select(db.queries.c.state).where(db.queries.c.id == "q-interrupted-0001")
        ).scalar()
    assert state == "approved" and again.ledger.spent() == 0


def test_production_mode_refuses_to_start_without_tls_and_with_demo_keys(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "DEMO-KEYS-DO-NOT-USE-IN-PRODUCTION").write_text("")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from connectors.protocol import private_key_pem

    key = tmp_path / "keys" / "gateway.key"
    key.write_bytes(private_key_pem(Ed25519PrivateKey.generate()))
    settings = GatewaySettings(mode="production", state_dir=tmp_path / "state", signing_key_file=key)
    with pytest.raises(SettingsError) as err:
        build_context(settings)
    text = str(err.value)
    assert "TLS" in text or "tls" in text
    assert "demo" in text.lower()


def test_unauthenticated_floods_are_rate_limited_and_counted(ctx: GatewayContext) -> None:
    from gateway.app import AuditMiddleware
    from gateway.flood import FloodGate

    clock = [0.0]
    gate = FloodGate(burst=5, window_seconds=60, clock=lambda: clock[0])
    app = create_app(ctx)
    for m in app.user_middleware:
        if m.cls is AuditMiddleware:
            m.kwargs["flood"] = gate
    client = TestClient(app)
    statuses = [client.get("/v1/catalog").status_code for _ in range(40)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    assert client.get("/healthz").status_code == 200  # liveness is never limited
    _, analyst = create_principal(ctx.engine, role=Role.ANALYST, name="ana2")
    assert client.get("/v1/catalog", headers={"authorization": f"Bearer {analyst}"}).status_code == 200
    clock[0] = 61.0
    assert client.get("/v1/catalog").status_code == 401
    events = [e.event for e in ctx.audit.log.entries()]
    assert sum(1 for e in events if e["action"] == "http.request" and e["status"] == 401) == 6
    summaries = [e for e in events if e["action"] == "http.unauthenticated_flood"]
    assert len(summaries) == 1 and summaries[0]["suppressed"] == 35


def test_users_created_and_revoked_on_the_command_line_are_audited(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from audit.store import AuditLog
    from gateway.cli.users import users_app

    url = f"sqlite:///{tmp_path / 'gw.sqlite3'}"
    runner = CliRunner()
    made = runner.invoke(users_app, ["create", "--role", "analyst", "--name", "ana", "--database-url", url])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    gone = runner.invoke(users_app, ["revoke", "ana", "--database-url", url])
    assert gone.exit_code == 0, gone.output
    engine = db.make_engine(url)
    events = [e.event for e in AuditLog(engine).entries()]
    engine.dispose()
    assert [(e["action"], e["principal"]) for e in events] == [
        ("user.created", "ana"),
        ("user.revoked", "ana"),
    ]
    assert all(key not in str(e) for e in events)
