"""Console sessions and their guards, in process: sign-in makes a server-side session (only its hash
stored, audited), the cookie's flags, the idle timeout and a revoked key end it, every state-changing
console route refuses a request without the session's CSRF token and changes nothing, and with the
audit log refusing writes a sign-in or a console change is 503 with nothing stored."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from starlette.routing import Mount

from gateway import db
from gateway.api.deps import _api_routes
from gateway.app import build_context, create_app
from gateway.auth import create_principal, revoke_principal
from gateway.console import sessions
from gateway.console.security import CONSOLE_CSP
from gateway.context import GatewayContext
from gateway.settings import GatewaySettings

REFUSE_AUDIT = (
    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'the audit store refuses writes'); END"
)
# Every state-changing console route, each calling the service its API route calls.
CONSOLE_POSTS = {
    "/signin",
    "/signout",
    "/analyst/queries/preview",
    "/analyst/queries",
    "/analyst/queries/{query_id}/job",
    "/analyst/runs",
    "/jobs/{job_id}/cancel",
    "/operator/endpoints",
    "/operator/endpoints/remove",
    "/operator/connectors/{name}/{action}",
    "/operator/principals",
    "/operator/principals/{name}/revoke",
    "/operator/quotas",
    "/operator/schedules",
    "/operator/schedules/{schedule_id}/{action}",
    "/admin/approvals/{query_id}/approve",
    "/admin/approvals/{query_id}/reject",
    "/audit/reconcile",
}


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[tuple[GatewayContext, TestClient, dict[str, str]]]:
    ctx = build_context(GatewaySettings(state_dir=tmp_path, console_idle_minutes=5))
    keys = {}
    for role, name in (("operator", "operator"), ("analyst", "analyst")):
        _, keys[name] = create_principal(ctx.engine, role=role, name=name, trail=ctx.audit)
    with TestClient(create_app(ctx), base_url="http://127.0.0.1") as client:
        yield ctx, client, keys


def _sign_in(client: TestClient, key: str) -> str:
    form = client.get("/console/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post(
        "/console/signin", data={"api_key": key, "csrf_token": token.group(1)}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return answer.headers["set-cookie"]


def _csrf(client: TestClient) -> str:
    page = client.get("/console/")
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def _rows(ctx: GatewayContext, table: sa.Table) -> list[dict[str, object]]:
    with ctx.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table)).mappings()]


def test_sign_in_stores_only_the_hash_and_audits_sign_in_and_out(gateway: tuple) -> None:
    ctx, client, keys = gateway
    header = _sign_in(client, keys["analyst"])
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/console" in header
    assert "Secure" not in header  # development on loopback; production sets it (`_secure`)
    cookie = client.cookies["fedgate_session"]
    (row,) = _rows(ctx, db.console_sessions)
    assert row["id_hash"] == hashlib.sha256(cookie.encode()).hexdigest()
    assert cookie not in str(row) and keys["analyst"] not in str(row)
    page = client.get("/console/")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CONSOLE_CSP
    assert (
        client.post(
            "/console/signout", data={"csrf_token": _csrf(client)}, follow_redirects=False
        ).status_code
        == 303
    )
    assert _rows(ctx, db.console_sessions) == []
    actions = [e.event["action"] for e in ctx.audit.log.filter(limit=500)]
    assert actions.count("console.signed_in") == 1 and actions.count("console.signed_out") == 1
    requests = [e.event for e in ctx.audit.log.filter(action="http.request", limit=500)]
    assert {"path": "/console/", "principal": "analyst"}.items() <= requests[-2].items() or any(
        r["path"] == "/console/" and r["principal"] == "analyst" for r in requests
    )
    # The old cookie opens nothing now.
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_a_wrong_key_or_a_stale_form_signs_nobody_in(gateway: tuple) -> None:
    ctx, client, keys = gateway
    client.get("/console/signin")
    stale = client.post("/console/signin", data={"api_key": keys["analyst"], "csrf_token": "x"})
    assert stale.status_code == 403
    form = client.get("/console/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    wrong = client.post("/console/signin", data={"api_key": "fgk_wrong", "csrf_token": token.group(1)})
    assert wrong.status_code == 401
    assert _rows(ctx, db.console_sessions) == []


def test_idle_and_revoked_sessions_end(gateway: tuple) -> None:
    ctx, client, keys = gateway
    _sign_in(client, keys["analyst"])
    cookie = client.cookies["fedgate_session"]
    session = sessions.resolve(ctx, cookie)
    assert session is not None
    later = db.utcnow() + timedelta(minutes=6)
    assert sessions.resolve(ctx, cookie, now=later) is None
    assert _rows(ctx, db.console_sessions) == []
    ended = ctx.audit.log.filter(action="console.signed_out", limit=10)
    assert [e.event["reason"] for e in ended] == ["idle"]

    _sign_in(client, keys["analyst"])
    revoke_principal(ctx.engine, "analyst", trail=ctx.audit)
    assert client.get("/console/", follow_redirects=False).status_code == 303
    assert _rows(ctx, db.console_sessions) == []


def _console_posts(client: TestClient) -> set[str]:
    mount = next(r for r in client.app.routes if isinstance(r, Mount) and r.path == "/console")  # type: ignore[attr-defined]
    return {
        path
        for path, methods, _ in _api_routes(mount.app)  # type: ignore[attr-defined]
        if methods & {"POST", "PUT", "PATCH", "DELETE"}
    }


def test_every_console_change_needs_the_csrf_token_and_changes_nothing_without(gateway: tuple) -> None:
    ctx, client, keys = gateway
    assert _console_posts(client) == CONSOLE_POSTS, "a state-changing console route is missing from this test"
    _sign_in(client, keys["operator"])
    before = (_rows(ctx, db.allowed_endpoints), _rows(ctx, db.principals))
    fill = {
        "{query_id}": "q",
        "{job_id}": "j",
        "{name}": "analyst",
        "{action}": "disable",
        "{schedule_id}": "s",
    }
    for path in sorted(CONSOLE_POSTS - {"/signin"}):
        for k, v in fill.items():
            path = path.replace(k, v)
        answer = client.post(
            f"/console{path}",
            data={"url": "http://127.0.0.1:9", "name": "x", "role": "analyst"},
            follow_redirects=False,
        )
        assert answer.status_code == 403, path
    assert (_rows(ctx, db.allowed_endpoints), _rows(ctx, db.principals)) == before
    assert len(_rows(ctx, db.console_sessions)) == 1


def test_with_the_audit_log_refusing_writes_console_changes_are_503_and_store_nothing(gateway: tuple) -> None:
    ctx, client, keys = gateway
    _sign_in(client, keys["operator"])
    token = _csrf(client)
    # A sign-in form fetched while the log still answers (a page load is itself audited, so afterwards
    # even the form is refused).
    form = client.get("/console/signin")
    found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert found is not None
    with ctx.engine.begin() as conn:
        conn.exec_driver_sql(REFUSE_AUDIT)
    allow = client.post(
        "/console/operator/endpoints", data={"url": "http://127.0.0.1:9", "csrf_token": token}
    )
    assert allow.status_code == 503
    create = client.post(
        "/console/operator/principals", data={"name": "newcomer", "role": "analyst", "csrf_token": token}
    )
    assert create.status_code == 503 and "fgk_" not in create.text
    assert _rows(ctx, db.allowed_endpoints) == []
    assert sorted(str(p["name"]) for p in _rows(ctx, db.principals)) == ["analyst", "operator"]
    refused = client.post("/console/signin", data={"api_key": keys["analyst"], "csrf_token": found.group(1)})
    assert refused.status_code == 503
    assert len(_rows(ctx, db.console_sessions)) == 1  # the operator's, from before
