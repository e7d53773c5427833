"""The gateway's audit trail: every request and every semantic event becomes a durable entry.

Entries go to the tamper-evident log of `audit.store` (hash-chained, Merkle-checkpointed, signed) in the
gateway's own database. An entry is committed before the response it records is sent; if it cannot be
written the request fails with 503 and nothing is released (fail closed). Entries never carry raw IDs,
tokens, API keys, secrets or exact data-dependent counts: callers pass only public facts, digests and DP
values, and `audit.entries.check_event` rejects the obvious mistakes loudly.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from audit.errors import AuditUnavailable
from audit.store import AuditLog
from gateway.errors import ApiError, ErrorCode

log = structlog.get_logger("fedgate.audit")


class AuditSink(Protocol):
    def append(self, event: dict[str, Any]) -> int:
        """Durably append one event; return its sequence number or raise `AuditUnavailable`."""
        ...


class AuditLogSink:
    """The tamper-evident log."""

    def __init__(self, audit_log: AuditLog) -> None:
        self.log = audit_log

    def append(self, event: dict[str, Any]) -> int:
        return self.log.append(event).seq


def _outcome(action: str, fields: dict[str, Any]) -> str:
    status = fields.get("status")
    if isinstance(status, int):
        return "ok" if status < 400 else "refused" if status < 500 else "error"
    if action.endswith((".failed", ".refused", ".rejected", ".interrupted")):
        return "refused" if action.endswith((".refused", ".rejected")) else "failed"
    return str(fields.get("outcome", "ok"))


class AuditTrail:
    """Records events through a sink; turns any failure to write into a 503 so the caller fails closed."""

    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink

    def record(self, action: str, **fields: Any) -> int:
        event = {"action": action, **fields}
        actor = fields.get("actor", fields.get("principal"))
        event["actor"] = actor if isinstance(actor, str) else "-"
        event["outcome"] = _outcome(action, fields)
        try:
            return self.sink.append(event)
        except AuditUnavailable as exc:
            log.error("audit.unavailable", action=action, error=type(exc).__name__)
            raise ApiError(
                503, ErrorCode.AUDIT_UNAVAILABLE, "the audit log cannot be written; nothing was done"
            ) from None


def record_offline(engine: Any, action: str, **fields: Any) -> int:
    """Append one event from a command run on the gateway host (users created or revoked) to the same log.

    Raises `AuditUnavailable` if it cannot be written; the caller undoes what it did.
    """
    trail = AuditTrail(AuditLogSink(AuditLog(engine)))
    try:
        return trail.record(action, **fields)
    except ApiError:
        raise AuditUnavailable("the audit log cannot be written") from None
