"""The connector registry and the catalog analysts see.

The operator keeps an allow-list of connector endpoints (the gateway never fetches an arbitrary URL). A
department admin registers its own connector with the fingerprint of the connector's key, confirmed out
of band; the gateway fetches the signed schema, accepts it only under the pinned key, and records every
change as a new version. The catalog is public policy only: datasets, measures with bounds, dimensions
with domains and units, never a count.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connectors.protocol import ConnectorSchema
from gateway import db
from gateway.audit_trail import AuditTrail
from gateway.auth import Principal
from gateway.errors import ConnectorUnavailable, Forbidden, GatewayError, Invalid, NotFound
from gateway.events import (
    ConnectorDisabled,
    ConnectorEnabled,
    ConnectorRegistered,
    EndpointAllowed,
    EndpointRemoved,
)
from gateway.federation import AnswerUnverified, ConnectorCallError, fetch_pinned_schema

_ENDPOINT = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?$")


def normalise_endpoint(url: str, *, production: bool = False) -> str:
    """The endpoint in its one stored form; in production only `https` (the mutual-TLS link) is accepted."""
    url = url.strip().rstrip("/")
    if not _ENDPOINT.fullmatch(url):
        raise Invalid("an endpoint is an http(s) URL without query", "endpoint")
    if production and not url.startswith("https://"):
        raise Invalid(
            "in production a connector is reached over https (mutual TLS, through its TLS proxy): "
            "give its https:// address",
            "endpoint",
        )
    return url


def require_callable(engine: sa.Engine, endpoint: str, *, production: bool) -> None:
    """Refuse to call an endpoint that is off the allow-list now (checked on every call, not only at
    registration, so removing an endpoint stops calls at once) or, in production, not https."""
    normalise_endpoint(endpoint, production=production)
    if endpoint not in list_endpoints(engine):
        raise Forbidden("the endpoint is not on the operator's allow-list", "endpoint")


def is_callable(engine: sa.Engine, endpoint: str, *, production: bool) -> bool:
    """`require_callable` as a yes or no, for callers that skip an endpoint rather than refuse."""
    try:
        require_callable(engine, endpoint, production=production)
    except GatewayError:
        return False
    return True


def _refusal_text(exc: ConnectorCallError) -> str:
    """What a registration refusal says: the gateway's own words, never the target's text (an allow-listed
    URL may still answer with anything, and echoing it would make the gateway a relay)."""
    if exc.code in ("bad_signature", "bad_schema"):
        return f"the connector's schema was refused: {exc.message}"  # written by the gateway's client
    if exc.status is None:
        return "the connector cannot be reached"
    return f"the connector refused the schema request (HTTP {exc.status})"


@dataclass(frozen=True)
class ConnectorRecord:
    name: str
    department: str
    endpoint: str
    key_fingerprint: str
    signing_key: str
    approval_key: str
    version: int
    enabled: bool
    schema: ConnectorSchema

    def public_view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "department": self.department,
            "endpoint": self.endpoint,
            "key_fingerprint": self.key_fingerprint,
            "version": self.version,
            "enabled": self.enabled,
        }


def _record(row: sa.Row[Any]) -> ConnectorRecord:
    return ConnectorRecord(
        name=row.name,
        department=row.department,
        endpoint=row.endpoint,
        key_fingerprint=row.key_fingerprint,
        signing_key=row.signing_key,
        approval_key=row.approval_key,
        version=row.version,
        enabled=row.enabled,
        schema=ConnectorSchema.model_validate_json(row.schema_json),
    )


def allow_endpoint(trail: AuditTrail, url: str, by: Principal, *, production: bool = False) -> str:
    """Put an endpoint on the allow-list with its entry (allowing it again changes nothing)."""
    url = normalise_endpoint(url, production=production)
    with trail.change() as change:
        exists = change.conn.execute(
            sa.select(db.allowed_endpoints.c.url).where(db.allowed_endpoints.c.url == url)
        ).first()
        if exists is None:
            change.conn.execute(
                db.allowed_endpoints.insert().values(url=url, added_by=by.name, added_at=db.utcnow())
            )
            change.record(EndpointAllowed(actor=by.name, endpoint=url))
    return url


def remove_endpoint(trail: AuditTrail, url: str, by: Principal) -> str:
    """Take an endpoint off the allow-list with its entry (404 if it is not on it); a connector there
    keeps its record, but every call to it is refused from now on, and so is registering it again."""
    url = normalise_endpoint(url)
    with trail.change() as change:
        done = change.conn.execute(db.allowed_endpoints.delete().where(db.allowed_endpoints.c.url == url))
        if done.rowcount == 0:
            raise NotFound("that endpoint is not on the allow-list", "url")
        change.record(EndpointRemoved(actor=by.name, endpoint=url))
    return url


def list_endpoints(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(db.allowed_endpoints.c.url).order_by(db.allowed_endpoints.c.url)).scalars()
        )


def get_connector(engine: sa.Engine, name: str) -> ConnectorRecord | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.connectors).where(db.connectors.c.name == name)).first()
    return _record(row) if row is not None else None


def list_connectors(engine: sa.Engine) -> list[ConnectorRecord]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.connectors).order_by(db.connectors.c.name)).all()
    return [_record(r) for r in rows]


def catalog(engine: sa.Engine) -> dict[str, ConnectorSchema]:
    """The enabled connectors' schemas, keyed by connector name."""
    return {r.name: r.schema for r in list_connectors(engine) if r.enabled}


def register_connector(
    trail: AuditTrail,
    *,
    name: str,
    endpoint: str,
    fingerprint: str,
    by: Principal,
    gateway_key: Ed25519PrivateKey,
    transport: httpx.BaseTransport | None = None,
    verify: ssl.SSLContext | bool = True,
    production: bool = False,
) -> ConnectorRecord:
    """Register (or update) a department's connector under its pinned key, with its entry."""
    engine = trail.log.engine
    endpoint = normalise_endpoint(endpoint, production=production)
    require_callable(engine, endpoint, production=production)
    existing = get_connector(engine, name)
    if existing is not None and existing.department != by.department:
        raise Forbidden("this connector belongs to another department", "name")
    try:
        schema = fetch_pinned_schema(
            endpoint,
            connector=name,
            gateway_key=gateway_key,
            fingerprint=fingerprint,
            transport=transport,
            verify=verify,
        )
    except ConnectorCallError as exc:
        message = _refusal_text(exc)
        if isinstance(exc, AnswerUnverified):
            raise Invalid(message, "endpoint") from None
        raise ConnectorUnavailable(message, "endpoint") from None
    if schema.department != by.department:
        raise Forbidden("the connector serves another department", "name")
    now = db.utcnow()
    values = {
        "department": schema.department,
        "endpoint": endpoint,
        "key_fingerprint": fingerprint,
        "signing_key": schema.signing_key,
        "approval_key": schema.approval_key,
        "schema_json": schema.model_dump_json(),
        "enabled": True,
        "registered_by": by.name,
        "updated_at": now,
    }
    with trail.change() as change:
        conn = change.conn
        row = conn.execute(sa.select(db.connectors.c.version).where(db.connectors.c.name == name)).first()
        version = 1 if row is None else row.version + 1
        if row is None:
            conn.execute(db.connectors.insert().values(name=name, version=version, **values))
        else:
            conn.execute(
                db.connectors.update().where(db.connectors.c.name == name).values(version=version, **values)
            )
        conn.execute(
            db.connector_versions.insert().values(
                name=name,
                version=version,
                endpoint=endpoint,
                key_fingerprint=fingerprint,
                schema_json=values["schema_json"],
                changed_by=by.name,
                changed_at=now,
            )
        )
        change.record(
            ConnectorRegistered(
                actor=by.name,
                connector=name,
                department=schema.department,
                endpoint=endpoint,
                key_fingerprint=fingerprint,
                version=version,
            )
        )
    record = get_connector(engine, name)
    assert record is not None
    return record


def set_enabled(trail: AuditTrail, name: str, enabled: bool, by: Principal) -> ConnectorRecord:
    """Enable or disable a connector, with its entry."""
    with trail.change() as change:
        done = change.conn.execute(
            db.connectors.update()
            .where(db.connectors.c.name == name)
            .values(enabled=enabled, updated_at=db.utcnow())
        )
        if done.rowcount == 0:
            raise NotFound("no connector of that name", "name")
        event = ConnectorEnabled if enabled else ConnectorDisabled
        change.record(event(actor=by.name, connector=name))
    record = get_connector(trail.log.engine, name)
    assert record is not None
    return record
