"""Endpoints in production: https only at allow-listing and registration, the allow-list checked on every
call, and a target's error text never echoed back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import db, registry
from gateway.app import build_context
from gateway.auth import Principal, Role, create_principal
from gateway.context import GatewayContext
from gateway.errors import ConnectorUnavailable, Forbidden, Invalid
from gateway.federation import ConnectorCallError, ConnectorLink
from gateway.settings import GatewaySettings

SECRET_TEXT = "db password hunter2 at 10.0.0.7"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[GatewayContext]:
    context = build_context(GatewaySettings(state_dir=tmp_path / "state"))
    yield context
    context.engine.dispose()


def _principal(ctx: GatewayContext, name: str, role: Role, department: str | None = None) -> Principal:
    return create_principal(ctx.engine, role=role, name=name, department=department)[0]


def test_production_accepts_only_https_endpoints(ctx: GatewayContext) -> None:
    operator = _principal(ctx, "op", Role.OPERATOR)
    with pytest.raises(Invalid, match="https") as refused:
        registry.allow_endpoint(ctx.audit, "http://tax.example.internal:8710", operator, production=True)
    assert refused.value.field == "endpoint"
    assert registry.list_endpoints(ctx.engine) == []
    url = registry.allow_endpoint(ctx.audit, "https://tax.example.internal:8443/", operator, production=True)
    assert registry.list_endpoints(ctx.engine) == [url] == ["https://tax.example.internal:8443"]
    # Development on loopback may be plain.
    assert registry.allow_endpoint(ctx.audit, "http://127.0.0.1:8710", operator).startswith("http://")
    admin = _principal(ctx, "tax-admin", Role.DEPARTMENT_ADMIN, "tax")
    with pytest.raises(Invalid, match="https"):
        registry.register_connector(
            ctx.audit,
            name="tax",
            endpoint="http://127.0.0.1:8710",
            fingerprint="0" * 64,
            by=admin,
            gateway_key=Ed25519PrivateKey.generate(),
            production=True,
        )


def test_the_allow_list_is_required_at_each_call(ctx: GatewayContext) -> None:
    operator = _principal(ctx, "op", Role.OPERATOR)
    url = registry.allow_endpoint(ctx.audit, "https://tax.example.internal:8443", operator)
    assert registry.require_callable(ctx.engine, url, production=True) is None
    with ctx.engine.begin() as conn:
        conn.execute(sa.delete(db.allowed_endpoints))
    with pytest.raises(Forbidden, match="allow-list"):
        registry.require_callable(ctx.engine, url, production=True)
    with pytest.raises(Invalid):
        registry.require_callable(ctx.engine, "http://tax.example.internal:8710", production=True)


def _answering(status: int, body: dict[str, object]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json=body))


def test_a_registration_error_never_echoes_the_target(ctx: GatewayContext) -> None:
    operator = _principal(ctx, "op", Role.OPERATOR)
    admin = _principal(ctx, "tax-admin", Role.DEPARTMENT_ADMIN, "tax")
    url = registry.allow_endpoint(ctx.audit, "http://127.0.0.1:8710", operator)
    before = ctx.audit.log.head().size
    for status, body in (
        (500, {"error": "internal", "message": SECRET_TEXT}),
        (403, {"error": SECRET_TEXT, "message": SECRET_TEXT}),
        (200, {"connector": SECRET_TEXT}),
    ):
        with pytest.raises((ConnectorUnavailable, Invalid)) as refused:
            registry.register_connector(
                ctx.audit,
                name="tax",
                endpoint=url,
                fingerprint="0" * 64,
                by=admin,
                gateway_key=Ed25519PrivateKey.generate(),
                transport=_answering(status, body),
            )
        assert SECRET_TEXT not in str(refused.value) and "hunter2" not in refused.value.message
    # Nothing was registered, and no registration was audited.
    assert registry.get_connector(ctx.engine, "tax") is None
    actions = [e.event["action"] for e in ctx.audit.log.entries(before + 1)]
    assert "connector.registered" not in actions


def test_only_protocol_error_codes_pass_the_client() -> None:
    key = Ed25519PrivateKey.generate()
    client = ConnectorLink(
        "http://127.0.0.1:8710",
        connector="tax",
        gateway_key=key,
        connector_key=key.public_key(),
        transport=_answering(409, {"error": SECRET_TEXT, "message": SECRET_TEXT, "witnessed_size": 3}),
    )
    with pytest.raises(ConnectorCallError) as refused:
        client.schema()
    assert refused.value.code == "error" and SECRET_TEXT not in str(refused.value)
    client = ConnectorLink(
        "http://127.0.0.1:8710",
        connector="tax",
        gateway_key=key,
        connector_key=key.public_key(),
        transport=_answering(409, {"error": "checkpoint_stale", "message": "m", "witnessed_size": 3}),
    )
    with pytest.raises(ConnectorCallError) as stale:
        client.schema()
    assert stale.value.code == "checkpoint_stale" and stale.value.extra == {"witnessed_size": 3}
