"""Analysts' own keys: registered by the operator, checked on every submission, forwarded to connectors.

    register_key(trail, analyst, public_key, by)   the operator pins an analyst's Ed25519 public key
    revoke_key(trail, fingerprint, by)             it signs nothing more; the queries it signed stay
    check_signature(conn, analyst, spec, sig)      a submission's signature, by a key of that analyst
    query_signature(engine, query_id)              what an extract carries: the public key and signature

The private key is generated on the analyst's machine (`fedgate analysts keygen`) and never reaches the
gateway. The analyst's key fingerprint is part of the query (and so of its digest), which departments sign
in approvals and name in rules; a connector verifies the signature itself, so a gateway that registers a
new "analyst" of its own gets nothing from a rule that names others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from aggregation.query import QuerySpec
from connectors.protocol import (
    SignatureError,
    fingerprint,
    parse_public_key,
    public_key_text,
    verify_query_signature,
)
from gateway import db
from gateway.audit_trail import AuditTrail
from gateway.auth import Principal, Role
from gateway.errors import Conflict, Forbidden, Invalid, NotFound
from gateway.events import AnalystKeyRegistered, AnalystKeyRevoked

__all__ = ["QuerySignature", "check_signature", "list_keys", "query_signature", "register_key", "revoke_key"]


@dataclass(frozen=True)
class QuerySignature:
    """An analyst's signature of one query, with the public key that verifies it."""

    public_key: str
    signature: str


def register_key(trail: AuditTrail, analyst: str, public_key: str, by: Principal) -> dict[str, Any]:
    """Pin `public_key` as one of `analyst`'s keys, with its audit entry; the same key again is a no-op."""
    try:
        key = parse_public_key(public_key)
    except SignatureError as exc:
        raise Invalid(f"{exc}: give the public key `fedgate analysts keygen` printed", "public_key") from None
    text, fp = public_key_text(key), fingerprint(key)
    engine = trail.log.engine
    with engine.connect() as conn:
        role = conn.execute(
            sa.select(db.principals.c.role).where(db.principals.c.name == analyst)
        ).scalar_one_or_none()
        held = conn.execute(sa.select(db.analyst_keys).where(db.analyst_keys.c.fingerprint == fp)).first()
    if role != Role.ANALYST.value:
        raise NotFound("no analyst with that name", "analyst")
    if held is not None:
        if held.analyst != analyst:
            raise Conflict("that key is registered to another analyst", "public_key", reason="key_in_use")
        if held.revoked_at is not None:
            raise Conflict("that key was revoked: generate a new one", "public_key", reason="revoked")
        return _view(held)
    with trail.change() as change:
        change.conn.execute(
            db.analyst_keys.insert().values(
                fingerprint=fp,
                analyst=analyst,
                public_key=text,
                registered_by=by.name,
                registered_at=db.utcnow(),
            )
        )
        change.record(
            AnalystKeyRegistered(actor=by.name, analyst=analyst, key_fingerprint=fp, public_key=text)
        )
    return next(k for k in list_keys(engine, analyst) if k["fingerprint"] == fp)


def revoke_key(trail: AuditTrail, key_fingerprint: str, by: Principal) -> None:
    with trail.change() as change:
        row = change.conn.execute(
            sa.select(db.analyst_keys).where(
                db.analyst_keys.c.fingerprint == key_fingerprint, db.analyst_keys.c.revoked_at.is_(None)
            )
        ).first()
        if row is None:
            raise NotFound("no active analyst key with that fingerprint", "fingerprint")
        change.conn.execute(
            db.analyst_keys.update()
            .where(db.analyst_keys.c.fingerprint == key_fingerprint)
            .values(revoked_at=db.utcnow(), revoked_by=by.name)
        )
        change.record(AnalystKeyRevoked(actor=by.name, analyst=row.analyst, key_fingerprint=key_fingerprint))


def _view(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "fingerprint": row.fingerprint,
        "analyst": row.analyst,
        "public_key": row.public_key,
        "registered_by": row.registered_by,
        "registered_at": row.registered_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def list_keys(engine: sa.Engine, analyst: str | None = None) -> list[dict[str, Any]]:
    stmt = sa.select(db.analyst_keys).order_by(db.analyst_keys.c.registered_at)
    if analyst is not None:
        stmt = stmt.where(db.analyst_keys.c.analyst == analyst)
    with engine.connect() as conn:
        return [_view(r) for r in conn.execute(stmt).all()]


def check_signature(conn: sa.Connection, analyst: Principal, spec: QuerySpec, signature: str | None) -> None:
    """A query naming an analyst key must be signed by that key, which must be the submitter's own and
    not revoked; an unsigned query must not name a key."""
    if spec.analyst_key is None:
        if signature is not None:
            raise Invalid("a signed query names the signing key's fingerprint in analyst_key", "analyst_key")
        return
    if signature is None:
        raise Invalid("a query naming analyst_key must carry that key's signature", "signature")
    row = conn.execute(
        sa.select(db.analyst_keys).where(db.analyst_keys.c.fingerprint == spec.analyst_key)
    ).first()
    if row is None or row.analyst != analyst.name or row.revoked_at is not None:
        raise Forbidden("analyst_key is not an active key registered to you", "analyst_key")
    try:
        verify_query_signature(parse_public_key(row.public_key), signature, spec.query_id, spec.digest)
    except SignatureError:
        raise Forbidden("the query's signature does not verify under analyst_key", "signature") from None


def query_signature(engine: sa.Engine, query_id: str) -> QuerySignature | None:
    """The analyst's stored signature of a query and its public key (None for an unsigned query)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(db.analyst_keys.c.public_key, db.query_signatures.c.signature)
            .join(db.analyst_keys, db.analyst_keys.c.fingerprint == db.query_signatures.c.key_fingerprint)
            .where(db.query_signatures.c.query_id == query_id)
        ).first()
    return None if row is None else QuerySignature(public_key=row.public_key, signature=row.signature)
