"""Console sessions: an API key typed once becomes a server-side session behind an HttpOnly cookie.

    sign_in(ctx, key)              authenticate the key, store a session, audit `console.signed_in`;
                                   returns the cookie value (256 random bits) and the session
    resolve(ctx, cookie)           the live session of a cookie, or None: unknown, idle past
                                   `console_idle_minutes`, past `console_session_hours`, or whose key
                                   has since been revoked or expired (the row is then deleted, audited)
    sign_out(ctx, session)         delete the session, audit `console.signed_out`

Only the SHA-256 of the cookie is stored, so the session table is no more useful to a reader than the
principals table. Each session has its own CSRF token, compared in constant time on every form post and
state-changing fetch (`check_csrf`). The session and its audit entry commit together.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from gateway.auth import Principal, active_principal, authenticate
from gateway.context import GatewayContext
from gateway.db import console_sessions, utcnow
from gateway.errors import Forbidden, GatewayError
from gateway.events import ConsoleSignedIn, ConsoleSignedOut

__all__ = ["COOKIE", "CSRF_FIELD", "CSRF_HEADER", "Session", "check_csrf", "resolve", "sign_in", "sign_out"]

COOKIE = "fedgate_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# Refreshing last_seen_at on every request would write on every page view; a minute is precise enough.
TOUCH_AFTER = timedelta(seconds=60)


@dataclass(frozen=True)
class Session:
    id_hash: str
    principal: Principal
    csrf: str
    expires_at: datetime

    @property
    def reference(self) -> str:
        """What the audit log names the session by: not the cookie, not its stored hash."""
        return _reference(self.id_hash)


def _hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8")).hexdigest()


def _reference(id_hash: str) -> str:
    return hashlib.sha256(id_hash.encode("ascii")).hexdigest()[:16]


def sign_in(ctx: GatewayContext, key: str, *, now: datetime | None = None) -> tuple[str, Session]:
    """A new session for the holder of `key` (`Unauthenticated` otherwise), stored with its audit entry."""
    principal = authenticate(ctx.engine, key.strip(), now=now)
    now = now or utcnow()
    cookie = secrets.token_urlsafe(32)
    session = Session(
        id_hash=_hash(cookie),
        principal=principal,
        csrf=secrets.token_urlsafe(32),
        expires_at=min(now + timedelta(hours=ctx.settings.console_session_hours), principal.expires_at),
    )
    with ctx.audit.change() as change:
        change.conn.execute(
            console_sessions.insert().values(
                id_hash=session.id_hash,
                principal_id=principal.id,
                csrf=session.csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=session.expires_at,
            )
        )
        change.record(
            ConsoleSignedIn(
                actor=principal.name,
                principal=principal.name,
                role=principal.role.value,
                session=session.reference,
            )
        )
    return cookie, session


def _end(ctx: GatewayContext, id_hash: str, principal: str, reason: str) -> None:
    with ctx.audit.change() as change:
        gone = change.conn.execute(console_sessions.delete().where(console_sessions.c.id_hash == id_hash))
        if gone.rowcount:
            change.record(
                ConsoleSignedOut(
                    actor=principal, principal=principal, session=_reference(id_hash), reason=reason
                )
            )


def resolve(ctx: GatewayContext, cookie: str | None, *, now: datetime | None = None) -> Session | None:
    """The live session this cookie names, or None (and an ended session is deleted and audited)."""
    if not cookie or len(cookie) > 128:
        return None
    now = now or utcnow()
    id_hash = _hash(cookie)
    with ctx.engine.connect() as conn:
        row = (
            conn.execute(sa.select(console_sessions).where(console_sessions.c.id_hash == id_hash))
            .mappings()
            .first()
        )
    if row is None or not hmac.compare_digest(row["id_hash"], id_hash):
        return None
    try:
        principal = active_principal(ctx.engine, row["principal_id"], now=now)
    except GatewayError:
        _end(ctx, id_hash, "-", "key_inactive")
        return None
    idle = timedelta(minutes=ctx.settings.console_idle_minutes)
    if now >= row["expires_at"]:
        _end(ctx, id_hash, principal.name, "expired")
        return None
    if now - row["last_seen_at"] >= idle:
        _end(ctx, id_hash, principal.name, "idle")
        return None
    if now - row["last_seen_at"] >= TOUCH_AFTER:
        with ctx.engine.begin() as conn:
            conn.execute(
                console_sessions.update()
                .where(console_sessions.c.id_hash == id_hash)
                .values(last_seen_at=now)
            )
    return Session(id_hash=id_hash, principal=principal, csrf=row["csrf"], expires_at=row["expires_at"])


def sign_out(ctx: GatewayContext, session: Session) -> None:
    _end(ctx, session.id_hash, session.principal.name, "signed_out")


def check_csrf(expected: str, given: str | None) -> None:
    """`Forbidden` unless the form or header carries this session's CSRF token."""
    if not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise Forbidden(
            "the form is missing its CSRF token or it is stale; reload the page and try again", CSRF_FIELD
        )
