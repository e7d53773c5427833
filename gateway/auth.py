"""Principals, roles and API keys.

A key is `fgk_` followed by 256 random bits. Only its SHA-256 is stored, with a short public prefix so an
operator can tell keys apart; the key itself is shown once, when it is created. Keys expire and can be
revoked. Every refusal is a domain error (`gateway.errors`). Creating or revoking a principal through an
`AuditTrail` commits the change with its `user.created` / `user.revoked` entry.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import sqlalchemy as sa

from gateway.db import principals, utcnow
from gateway.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from gateway.events import UserCreated, UserRevoked

if TYPE_CHECKING:
    from gateway.audit_trail import AuditTrail

__all__ = [
    "KEY_PREFIX",
    "MAX_EXPIRES_DAYS",
    "Principal",
    "PrincipalRecord",
    "Role",
    "active_principal",
    "authenticate",
    "create_principal",
    "hash_key",
    "list_principals",
    "principal_named",
    "require_department",
    "revoke_principal",
]

KEY_PREFIX = "fgk_"
# What an operator sees of a key in listings: "fgk_" and 8 characters, 48 of its 256 random bits.
SHOWN_PREFIX_LENGTH = 12
MAX_EXPIRES_DAYS = 3650
# Longer than any key we issue; anything longer is refused before it is hashed.
MAX_KEY_LENGTH = 128

NAME = re.compile(r"^[a-z][a-z0-9_.@-]{0,63}$")
DEPARTMENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

INVALID_KEY = "missing or invalid API key; send 'Authorization: Bearer <key>'"


class Role(StrEnum):
    """What a principal may do; routes allow roles explicitly and deny every other."""

    OPERATOR = "operator"
    DEPARTMENT_ADMIN = "department_admin"
    ANALYST = "analyst"
    AUDITOR = "auditor"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `department` is set for, and only for, department admins."""

    id: str
    name: str
    role: Role
    department: str | None
    expires_at: datetime


@dataclass(frozen=True)
class PrincipalRecord:
    """A principal as the operator lists it: never the key, only its public prefix."""

    id: str
    name: str
    role: Role
    department: str | None
    key_prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime | None = None) -> str:
        """'revoked', 'expired' or 'active'."""
        now = now or utcnow()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is None or self.expires_at <= now:
            return "expired"
        return "active"


def hash_key(key: str) -> str:
    """SHA-256 hex of a key. A fast hash is enough: keys carry 256 random bits, not a guessable password."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, field)


def create_principal(
    engine: sa.Engine,
    *,
    role: Role | str,
    name: str,
    department: str | None = None,
    expires_days: int = 90,
    now: datetime | None = None,
    trail: AuditTrail | None = None,
    actor: str = "operator",
) -> tuple[Principal, str]:
    """Create a principal and return it with its new API key, the only time the key is available.

    With `trail`, the principal and its `user.created` entry (by `actor`) commit together."""
    try:
        role = Role(role)
    except ValueError:
        raise _invalid("role", f"role must be one of: {', '.join(r.value for r in Role)}") from None
    if not NAME.fullmatch(name):
        raise _invalid(
            "name", "name must be 1-64 characters: a lower-case letter, then lower-case letters, digits, _.@-"
        )
    if role is Role.DEPARTMENT_ADMIN:
        if department is None:
            raise _invalid("department", "a department admin needs --department (the department it acts for)")
        if not DEPARTMENT.fullmatch(department):
            raise _invalid("department", "department must be a lower-case name: letters, digits, _")
    elif department is not None:
        raise _invalid("department", f"only a department admin is bound to a department, not a(n) {role}")
    if not 1 <= expires_days <= MAX_EXPIRES_DAYS:
        raise _invalid("expires_days", f"expiry must be between 1 and {MAX_EXPIRES_DAYS} days")

    now = now or utcnow()
    key = _new_key()
    principal = Principal(
        id=uuid.uuid4().hex,
        name=name,
        role=role,
        department=department,
        expires_at=now + timedelta(days=expires_days),
    )
    row = {
        "id": principal.id,
        "name": name,
        "role": role.value,
        "department": department,
        "key_hash": hash_key(key),
        "key_prefix": key[:SHOWN_PREFIX_LENGTH],
        "created_at": now,
        "expires_at": principal.expires_at,
        "revoked_at": None,
    }
    event = UserCreated(
        actor=actor,
        principal=name,
        role=role.value,
        department=department,
        expires_at=principal.expires_at.isoformat(),
    )
    try:
        if trail is None:
            with engine.begin() as conn:
                conn.execute(principals.insert().values(**row))
        else:
            with trail.change() as change:
                change.conn.execute(principals.insert().values(**row))
                change.record(event)
    except sa.exc.IntegrityError:
        # Names are unique, and revoked names stay taken so the audit trail stays unambiguous.
        raise Conflict(f"a principal named {name!r} already exists", "name", reason="exists") from None
    return principal, key


def revoke_principal(
    engine: sa.Engine,
    name: str,
    *,
    now: datetime | None = None,
    trail: AuditTrail | None = None,
    actor: str = "operator",
) -> PrincipalRecord:
    """Revoke a principal's key at once; revoking twice keeps the first revocation time.

    With `trail`, the revocation and its `user.revoked` entry (by `actor`) commit together."""
    now = now or utcnow()

    def revoke(conn: sa.Connection) -> tuple[sa.RowMapping | None, int]:
        done = conn.execute(
            principals.update()
            .where(principals.c.name == name, principals.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        row = conn.execute(sa.select(principals).where(principals.c.name == name)).mappings().first()
        if row is None:
            raise NotFound(f"no principal named {name!r}", "name")
        return row, done.rowcount

    if trail is None:
        with engine.begin() as conn:
            row, _ = revoke(conn)
    else:
        with trail.change() as change:
            row, changed = revoke(change.conn)
            if changed:
                change.record(UserRevoked(actor=actor, principal=name))
    assert row is not None
    return _record(row)


def list_principals(engine: sa.Engine) -> list[PrincipalRecord]:
    """Every principal, revoked and expired ones included, by name."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(principals).order_by(principals.c.name)).mappings().all()
    return [_record(row) for row in rows]


def authenticate(engine: sa.Engine, key: str | None, *, now: datetime | None = None) -> Principal:
    """The principal holding `key`, or `Unauthenticated`.

    The lookup is by the key's hash, so the time it takes says nothing about how close a guess was; the
    stored hash is compared again in constant time. An expiry that is not recorded counts as expired.
    """
    if not key or len(key) > MAX_KEY_LENGTH or not key.startswith(KEY_PREFIX):
        raise Unauthenticated(INVALID_KEY)
    digest = hash_key(key)
    with engine.connect() as conn:
        row = conn.execute(sa.select(principals).where(principals.c.key_hash == digest)).mappings().first()
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        raise Unauthenticated(INVALID_KEY)
    return _active(row, now, "API key {status}; ask an operator for a new one")


def _active(row: sa.RowMapping, now: datetime | None, refusal: str) -> Principal:
    """The principal of a stored row if its key is active; else `Unauthenticated` with `refusal`, whose
    `{status}` names why (revoked, expired). An expiry that is not recorded counts as expired."""
    record = _record(row)
    status = record.status(now)
    if status != "active" or record.expires_at is None:
        raise Unauthenticated(refusal.format(status=status))
    return Principal(
        id=record.id,
        name=record.name,
        role=record.role,
        department=record.department,
        expires_at=record.expires_at,
    )


def active_principal(engine: sa.Engine, principal_id: str, *, now: datetime | None = None) -> Principal:
    """The principal with this id if its key is still active (not revoked, not expired), else
    `Unauthenticated`: a console session lasts no longer than the key it was opened with."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(principals).where(principals.c.id == principal_id)).mappings().first()
    if row is None:
        raise Unauthenticated(INVALID_KEY)
    return _active(row, now, "API key {status}; ask an operator for a new one")


def principal_named(engine: sa.Engine, name: str, *, now: datetime | None = None) -> Principal:
    """The active principal called `name` (a job or a schedule runs as one); `Unauthenticated` if it is
    unknown, expired or revoked, so a revoked key stops what runs in its name."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(principals).where(principals.c.name == name)).mappings().first()
    if row is None:
        raise Unauthenticated(f"no principal named {name!r}; create it with `fedgate users create`")
    return _active(row, now, f"the principal {name!r} is {{status}}; ask an operator for a new key")


def require_department(principal: Principal, department: str) -> None:
    """Refuse unless `principal` is the admin of `department`; a department acts only for itself."""
    if principal.role is not Role.DEPARTMENT_ADMIN or principal.department != department:
        raise Forbidden(f"only an admin of department {department!r} may do this", "department")


def _record(row: sa.RowMapping) -> PrincipalRecord:
    return PrincipalRecord(
        id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        department=row["department"],
        key_prefix=row["key_prefix"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )
