"""Principals and API keys, role checks, the one error shape, metrics access and `fedgate users`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field, field_validator
from typer.testing import CliRunner

from gateway import db
from gateway.api.deps import CurrentPrincipal, require_roles, routes_without_auth
from gateway.api.errors import ApiError, install_error_handlers, install_request_id, status_of
from gateway.auth import (
    Principal,
    Role,
    authenticate,
    create_principal,
    hash_key,
    list_principals,
    require_department,
    revoke_principal,
)
from gateway.cli.users import ROLE_NAMES, users_app
from gateway.errors import ErrorCode, GatewayError
from gateway.observability import health_router, install_metrics, metrics_router

# --- principals and keys ---------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    db.migrate(engine)
    yield engine
    engine.dispose()


def refused(call: Any, status: int, code: ErrorCode, *args: Any, **kwargs: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        call(*args, **kwargs)
    assert (status_of(info.value), info.value.code) == (status, code), info.value
    return info.value


def test_roles_are_the_same_everywhere() -> None:
    assert [r.value for r in Role] == list(db.ROLES) == list(ROLE_NAMES)
    assert {r.value for r in Role} == {"operator", "department_admin", "analyst", "auditor"}


def test_create_and_authenticate(engine: sa.Engine) -> None:
    principal, key = create_principal(engine, role=Role.ANALYST, name="ana", expires_days=30)
    assert re.fullmatch(r"fgk_[A-Za-z0-9_-]{43}", key)
    assert principal.role is Role.ANALYST and principal.department is None
    assert timedelta(days=29, hours=23) < principal.expires_at - datetime.now(UTC) <= timedelta(days=30)
    assert authenticate(engine, key) == principal

    admin, admin_key = create_principal(engine, role="department_admin", name="tax-admin", department="tax")
    assert authenticate(engine, admin_key) == admin
    assert admin.department == "tax" and admin.role is Role.DEPARTMENT_ADMIN
    assert admin_key != key


def test_only_the_hash_of_a_key_is_stored(engine: sa.Engine, tmp_path: Path) -> None:
    _, key = create_principal(engine, role=Role.OPERATOR, name="op")
    secret_part = key.removeprefix("fgk_")
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.principals)).mappings().one()
        everything = [
            str(value)
            for table in db.gateway_metadata.sorted_tables
            for record in conn.execute(sa.select(table)).all()
            for value in record
        ]
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest() == hash_key(key)
    assert row["key_prefix"] == key[:12]
    assert not any(secret_part in value for value in everything)
    # Nor anywhere in the database files, WAL included (e.g. in a page that no row points to any more).
    engine.dispose()
    for path in tmp_path.glob("gateway.sqlite3*"):
        assert secret_part.encode() not in path.read_bytes(), path.name


@pytest.mark.parametrize(
    "key",
    [None, "", "Bearer x", "fgk_", "fgk_" + "A" * 43, "fgk_" + "x" * 500, "not-a-key"],
)
def test_unknown_keys_are_refused(engine: sa.Engine, key: str | None) -> None:
    create_principal(engine, role=Role.ANALYST, name="ana")
    error = refused(authenticate, 401, ErrorCode.UNAUTHENTICATED, engine, key)
    assert "Bearer" in error.message


def test_expired_keys_are_refused(engine: sa.Engine) -> None:
    issued = datetime.now(UTC) - timedelta(days=10)
    _, key = create_principal(engine, role=Role.AUDITOR, name="old", expires_days=9, now=issued)
    error = refused(authenticate, 401, ErrorCode.UNAUTHENTICATED, engine, key)
    assert "expired" in error.message
    principal, fresh = create_principal(engine, role=Role.AUDITOR, name="new", expires_days=1)
    assert authenticate(engine, fresh) == principal
    refused(authenticate, 401, ErrorCode.UNAUTHENTICATED, engine, fresh, now=principal.expires_at)
    # An expiry that is not recorded fails closed.
    with engine.begin() as conn:
        conn.execute(db.principals.update().where(db.principals.c.name == "new").values(expires_at=None))
    refused(authenticate, 401, ErrorCode.UNAUTHENTICATED, engine, fresh)


def test_revoked_keys_are_refused(engine: sa.Engine) -> None:
    _, key = create_principal(engine, role=Role.ANALYST, name="ana")
    first = revoke_principal(engine, "ana")
    assert first.revoked_at is not None and first.status() == "revoked"
    error = refused(authenticate, 401, ErrorCode.UNAUTHENTICATED, engine, key)
    assert "revoked" in error.message
    assert revoke_principal(engine, "ana").revoked_at == first.revoked_at  # idempotent
    refused(revoke_principal, 404, ErrorCode.NOT_FOUND, engine, "nobody")
    # A revoked name stays taken, so the audit trail never confuses two principals.
    refused(create_principal, 409, ErrorCode.CONFLICT, engine, role=Role.ANALYST, name="ana")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"role": "department_admin", "name": "x"}, "department"),
        ({"role": "analyst", "name": "x", "department": "tax"}, "department"),
        ({"role": "department_admin", "name": "x", "department": "Tax Office"}, "department"),
        ({"role": "superuser", "name": "x"}, "role"),
        ({"role": "analyst", "name": "Ana"}, "name"),
        ({"role": "analyst", "name": "a b"}, "name"),
        ({"role": "analyst", "name": ""}, "name"),
        ({"role": "analyst", "name": "x" * 65}, "name"),
        ({"role": "analyst", "name": "x", "expires_days": 0}, "expires_days"),
        ({"role": "analyst", "name": "x", "expires_days": 3651}, "expires_days"),
    ],
)
def test_invalid_principals_are_refused(engine: sa.Engine, fields: dict[str, Any], field: str) -> None:
    error = refused(create_principal, 422, ErrorCode.INVALID_REQUEST, engine, **fields)
    assert error.field == field
    assert list_principals(engine) == []


def test_list_principals_shows_status_not_keys(engine: sa.Engine) -> None:
    _, key_a = create_principal(engine, role=Role.ANALYST, name="b-analyst")
    create_principal(engine, role=Role.OPERATOR, name="a-operator")
    create_principal(
        engine, role=Role.AUDITOR, name="c-auditor", expires_days=1, now=datetime.now(UTC) - timedelta(days=2)
    )
    revoke_principal(engine, "a-operator")
    records = list_principals(engine)
    assert [(r.name, r.status()) for r in records] == [
        ("a-operator", "revoked"),
        ("b-analyst", "active"),
        ("c-auditor", "expired"),
    ]
    assert records[1].key_prefix == key_a[:12]
    assert not any(key_a in repr(r) for r in records)


def test_require_department() -> None:
    expires = datetime.now(UTC) + timedelta(days=1)
    admin = Principal("1", "tax-admin", Role.DEPARTMENT_ADMIN, "tax", expires)
    require_department(admin, "tax")
    with pytest.raises(GatewayError) as info:
        require_department(admin, "social")
    assert status_of(info.value) == 403
    operator = Principal("2", "op", Role.OPERATOR, None, expires)
    with pytest.raises(GatewayError):
        require_department(operator, "tax")


# --- HTTP: the one error shape, roles, request ids, metrics ----------------------------------------


class Term(BaseModel):
    dataset: str = Field(pattern=r"^[a-z]+$")
    coefficient: int = 1


class Measure(BaseModel):
    terms: list[Term]


class Spec(BaseModel):
    measure: Measure
    purpose: str

    @field_validator("purpose")
    @classmethod
    def _careless_validator(cls, value: str) -> str:
        # A validator that quotes its input: the gateway must not pass that quote on.
        if value.startswith("secret"):
            raise ValueError(f"purpose {value!r} is not allowed")
        return value


# At module level: with postponed annotations, FastAPI resolves the route's hints in this namespace.
Analyst = Annotated[Principal, Depends(require_roles(Role.ANALYST))]


def make_app(engine: sa.Engine) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_metrics(app)
    install_request_id(app)
    app.state.engine = engine
    app.include_router(health_router)
    app.include_router(metrics_router)

    @app.get("/v1/items/{item_id}")
    async def read_item(item_id: str, analyst: Analyst) -> dict[str, str]:
        return {"item": item_id, "by": analyst.name}

    @app.post("/v1/specs")
    async def submit(spec: Spec, analyst: Analyst) -> dict[str, int]:
        return {"terms": len(spec.measure.terms)}

    @app.get("/v1/whoami")
    async def whoami(principal: CurrentPrincipal) -> dict[str, Any]:
        return dict(structlog.contextvars.get_contextvars())

    @app.get("/v1/boom")
    async def boom(principal: CurrentPrincipal) -> None:
        raise RuntimeError("tok-7f3a9c secret detail")

    @app.get("/v1/teapot")
    async def teapot(principal: CurrentPrincipal) -> None:
        raise ApiError(409, ErrorCode.BUDGET_EXCEEDED, "requested 2, remaining 1, short by 1", "epsilon")

    included = APIRouter()

    @included.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"thing": thing_id}

    app.include_router(included, prefix="/v1/included", dependencies=[Depends(require_roles(Role.AUDITOR))])
    return app


@pytest.fixture
def keys(engine: sa.Engine) -> dict[str, str]:
    found = {}
    for role in Role:
        department = "tax" if role is Role.DEPARTMENT_ADMIN else None
        _, found[role.value] = create_principal(engine, role=role, name=role.value, department=department)
    return found


@pytest.fixture
def client(engine: sa.Engine) -> Iterator[TestClient]:
    with TestClient(make_app(engine), raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check the one error shape and return its inner object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"code", "message", "field", "request_id"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert re.fullmatch(r"[0-9a-f]{32}", error["request_id"])
    assert response.headers["x-request-id"] == error["request_id"]
    return dict(error)


def test_every_refusal_has_the_same_shape(client: TestClient, keys: dict[str, str]) -> None:
    unauthenticated = error_of(client.get("/v1/items/7"), 401, "unauthenticated")
    assert client.get("/v1/items/7").headers["www-authenticate"] == "Bearer"
    error_of(client.get("/v1/items/7", headers=bearer("fgk_wrong")), 401, "unauthenticated")
    error_of(
        client.get("/v1/items/7", headers={"Authorization": "Basic Zm9vOmJhcg=="}), 401, "unauthenticated"
    )
    forbidden = error_of(client.get("/v1/items/7", headers=bearer(keys["operator"])), 403, "forbidden")
    assert "analyst" in forbidden["message"]
    error_of(client.get("/v1/nowhere"), 404, "not_found")
    error_of(client.delete("/v1/items/7", headers=bearer(keys["analyst"])), 405, "invalid_request")
    conflict = error_of(client.get("/v1/teapot", headers=bearer(keys["auditor"])), 409, "budget_exceeded")
    assert conflict["field"] == "epsilon" and unauthenticated["field"] is None
    assert client.get("/v1/items/7", headers=bearer(keys["analyst"])).json() == {"item": "7", "by": "analyst"}


def test_validation_errors_name_the_field_without_echoing_the_value(
    client: TestClient, keys: dict[str, str]
) -> None:
    marker = "SENSITIVEVALUE"
    spec = {"measure": {"terms": [{"dataset": marker}]}, "purpose": "study"}
    response = client.post("/v1/specs", json=spec, headers=bearer(keys["analyst"]))
    error = error_of(response, 422, "invalid_request")
    assert error["field"] == "body.measure.terms.0.dataset"
    assert error["message"].startswith("body.measure.terms.0.dataset: ")
    assert marker not in response.text

    quoted = {"measure": {"terms": [{"dataset": "tax"}]}, "purpose": "secret-plan-xyz"}
    response = client.post("/v1/specs", json=quoted, headers=bearer(keys["analyst"]))
    assert error_of(response, 422, "invalid_request")["field"] == "body.purpose"
    assert "secret-plan-xyz" not in response.text

    several = {"measure": {"terms": [{"dataset": "A1"}, {"dataset": "B2"}]}}
    response = client.post("/v1/specs", json=several, headers=bearer(keys["analyst"]))
    assert "(and 2 more problems)" in error_of(response, 422, "invalid_request")["message"]

    response = client.post(
        "/v1/specs", content=b'{"purpose": "SENSITIVEVALUE', headers=bearer(keys["analyst"])
    )
    error_of(response, 422, "invalid_request")
    assert marker not in response.text

    ok = {"measure": {"terms": [{"dataset": "tax"}]}, "purpose": "study"}
    assert client.post("/v1/specs", json=ok, headers=bearer(keys["analyst"])).json() == {"terms": 1}


def test_unexpected_errors_are_500_without_detail(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/v1/boom", headers=bearer(keys["analyst"]))
    error = error_of(response, 500, "internal")
    assert error["field"] is None
    for leak in ("tok-7f3a9c", "secret detail", "RuntimeError", "Traceback", "boom"):
        assert leak not in response.text


def test_request_ids(client: TestClient, keys: dict[str, str]) -> None:
    mine = "trace-0123456789"
    assert client.get("/healthz", headers={"x-request-id": mine}).headers["x-request-id"] == mine
    for insane in (b"short", b"x" * 65, b"bad id with spaces", "evil\u00e9value123".encode("latin-1")):
        returned = client.get("/healthz", headers={"x-request-id": insane}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", returned)
    first, second = (client.get("/healthz").headers["x-request-id"] for _ in range(2))
    assert first != second


def test_principal_and_request_id_are_bound_for_logging(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/v1/whoami", headers=bearer(keys["department_admin"]))
    context = response.json()
    assert context == {
        "request_id": response.headers["x-request-id"],
        "principal": "department_admin",
        "role": "department_admin",
    }


def test_health_is_public(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_only_health_is_public(engine: sa.Engine, client: TestClient, keys: dict[str, str]) -> None:
    app = make_app(engine)
    assert routes_without_auth(app) == ["GET /healthz"]
    # The included router's routes are protected by the include-level dependency.
    error_of(client.get("/v1/included/things/1"), 401, "unauthenticated")
    error_of(client.get("/v1/included/things/1", headers=bearer(keys["analyst"])), 403, "forbidden")
    open_router = APIRouter()

    @open_router.get("/forgotten/{x}")
    async def forgotten(x: str) -> str:
        return x

    app.include_router(open_router, prefix="/v1")
    assert routes_without_auth(app) == ["GET /healthz", "GET /v1/forgotten/{x}"]


def test_require_roles_needs_a_role() -> None:
    with pytest.raises(ValueError, match="at least one role"):
        require_roles()


def test_metrics_for_the_operator_only(client: TestClient, keys: dict[str, str]) -> None:
    client.get("/v1/items/secret-query-id-42", headers=bearer(keys["analyst"]))
    client.get("/v1/not/a/route/private-path-99")
    assert client.get("/v1/included/things/t-55", headers=bearer(keys["auditor"])).json() == {"thing": "t-55"}
    error_of(client.get("/metrics"), 401, "unauthenticated")
    for role in ("analyst", "auditor", "department_admin"):
        error_of(client.get("/metrics", headers=bearer(keys[role])), 403, "forbidden")
    response = client.get("/metrics", headers=bearer(keys["operator"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'fedgate_http_requests_total{method="GET",route="/v1/items/{item_id}",status="200"} 1.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert 'route="/v1/included/things/{thing_id}",status="200"' in text
    assert 'fedgate_http_requests_total{method="GET",route="/metrics",status="401"} 1.0' in text
    assert "fedgate_http_request_duration_seconds_bucket" in text
    # Route templates only: no raw path, no process memory (it grows with the size of an extract).
    for raw in ("secret-query-id-42", "private-path-99", "t-55"):
        assert raw not in text
    assert "process_resident_memory" not in text and "python_gc" not in text


def test_metrics_of_two_apps_are_separate(engine: sa.Engine, keys: dict[str, str]) -> None:
    with TestClient(make_app(engine)) as first, TestClient(make_app(engine)) as second:
        first.get("/healthz")
        text = second.get("/metrics", headers=bearer(keys["operator"])).text
    assert 'route="/healthz"' not in text


# --- fedgate users ---------------------------------------------------------------------------------


def test_users_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGATE_DATABASE_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'cli' / 'gateway.sqlite3'}"
    runner = CliRunner()

    created = runner.invoke(
        users_app,
        [
            *("create", "--role", "department_admin", "--name", "tax-admin", "--department", "tax"),
            *("--expires", "7", "--database-url", url),
        ],
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert re.fullmatch(r"fgk_[A-Za-z0-9_-]{43}", key)  # stdout holds the key alone, for scripts
    assert "only its SHA-256 hash" in created.stderr and key not in created.stderr

    engine = db.make_engine(url)
    try:
        principal = authenticate(engine, key)
        assert (principal.name, principal.role, principal.department) == (
            "tax-admin",
            Role.DEPARTMENT_ADMIN,
            "tax",
        )
        assert timedelta(days=6) < principal.expires_at - datetime.now(UTC) <= timedelta(days=7)

        monkeypatch.setenv("FEDGATE_DATABASE_URL", url)  # the option's environment variable
        listed = runner.invoke(users_app, ["list"], env={"COLUMNS": "200"})
        assert listed.exit_code == 0, listed.output
        assert "tax-admin" in listed.stdout and key[:12] in listed.stdout and "active" in listed.stdout
        assert key.removeprefix("fgk_") not in listed.stdout

        as_json = runner.invoke(users_app, ["list", "--json"])
        rows = json.loads(as_json.stdout)
        assert [(r["name"], r["status"], r["key_prefix"]) for r in rows] == [
            ("tax-admin", "active", key[:12])
        ]

        missing = runner.invoke(users_app, ["create", "--role", "department_admin", "--name", "x"])
        assert missing.exit_code == 1 and "--department" in missing.stderr and missing.stdout == ""
        duplicate = runner.invoke(users_app, ["create", "--role", "analyst", "--name", "tax-admin"])
        assert duplicate.exit_code == 1 and "already exists" in duplicate.stderr

        revoked = runner.invoke(users_app, ["revoke", "tax-admin"])
        assert revoked.exit_code == 0, revoked.output
        with pytest.raises(GatewayError):
            authenticate(engine, key)
        assert "revoked" in runner.invoke(users_app, ["list"], env={"COLUMNS": "200"}).stdout
        unknown = runner.invoke(users_app, ["revoke", "nobody"])
        assert unknown.exit_code == 1 and "no principal named 'nobody'" in unknown.stderr
    finally:
        engine.dispose()


def test_users_cli_help_names_every_role() -> None:
    help_text = CliRunner().invoke(users_app, ["create", "--help"], env={"COLUMNS": "200"}).stdout
    for role in Role:
        assert role.value in help_text
