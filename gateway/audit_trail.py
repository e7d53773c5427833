"""The gateway's audit trail: every request and every semantic event becomes a durable entry.

The entry is committed before the response it records is sent; if it cannot be written the request
fails with 503 and nothing is released (fail closed). Entries never carry raw IDs, tokens, API keys,
secrets or exact data-dependent counts: callers pass only public facts, digests and DP values.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError

from gateway import db
from gateway.errors import ApiError, ErrorCode

log = structlog.get_logger("fedgate.audit")

FORBIDDEN_KEYS = frozenset({"api_key", "authorization", "token", "tokens", "secret", "password", "raw_id"})


class AuditSink(Protocol):
    def append(self, entry: dict[str, Any]) -> int:
        """Durably append one entry; return its sequence number or raise."""
        ...


class SqlAuditSink:
    """Append-only entries in the gateway's database (`audit_simple`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def append(self, entry: dict[str, Any]) -> int:
        with self._engine.begin() as conn:
            result = conn.execute(
                db.audit_simple.insert().values(at=db.utcnow(), entry_json=json.dumps(entry, sort_keys=True))
            )
            key = result.inserted_primary_key
        return int(key[0]) if key else 0

    def entries(self) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(db.audit_simple).order_by(db.audit_simple.c.seq)).all()
        return [{"seq": r.seq, **json.loads(r.entry_json)} for r in rows]


class AuditTrail:
    """Records entries through a sink; turns any failure into a 503 so the caller fails closed."""

    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink

    def record(self, action: str, **fields: Any) -> int:
        bad = FORBIDDEN_KEYS.intersection(fields)
        if bad:
            raise ValueError(f"audit entries never carry {', '.join(sorted(bad))}")
        entry = {"action": action, **fields}
        try:
            return self.sink.append(entry)
        except (SQLAlchemyError, OSError) as exc:
            log.error("audit.unavailable", action=action, error=type(exc).__name__)
            raise ApiError(
                503, ErrorCode.AUDIT_UNAVAILABLE, "the audit log cannot be written; nothing was done"
            ) from None
