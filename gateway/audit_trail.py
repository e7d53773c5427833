"""The gateway's audit trail: typed events (`gateway.events`) become durable entries of the audit log.

Entries go to the tamper-evident log of `audit.store` (hash-chained, Merkle-checkpointed, signed) in the
gateway's own database, so a change to the gateway's tables and its entry commit in one transaction:

    with trail.change() as change:       # one database transaction
        change.conn.execute(...)         # the change
        change.record(SomeEvent(...))    # its entry, numbered and chained just before the commit

If the entry cannot be written the change is rolled back and `AuditUnavailable` (503) says nothing was
done. `record(event)` appends an entry on its own (through the log's group commit) for what is not a
change to these tables: each HTTP request, connector calls, and entries written *before* a change made
elsewhere (the budget ledger), so that change happens only once its entry is durable. An event that may
not be logged (a valid ID number in a purpose) is refused as `Invalid` naming the request's field,
before anything is stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import sqlalchemy as sa
import structlog

from audit import errors as audit_errors
from audit.entries import contains_identifier
from audit.store import AuditLog, AuditTransaction
from gateway.errors import AuditUnavailable, Invalid
from gateway.events import AuditEvent

log = structlog.get_logger("fedgate.audit")

NOTHING_DONE = "the audit log cannot be written; nothing was done"


def check_free_text(**texts: str) -> None:
    """Refuse free text that the audit log may not hold (a valid ID number anywhere in it), naming the
    field, before anything is stored."""
    for field, text in texts.items():
        if contains_identifier(text):
            raise Invalid(f"{field} holds an identity number or credit code; write it without one", field)


def _unsafe(event: AuditEvent, exc: audit_errors.UnsafeEntry) -> Invalid:
    field = event.request_field(exc.field)
    return Invalid(f"this text may not be written to the audit log: {exc}", field)


class Change:
    """One transaction's connection and the events recorded with it."""

    def __init__(self, tx: AuditTransaction) -> None:
        self._tx = tx
        self.conn: sa.Connection = tx.conn

    def record(self, event: AuditEvent) -> None:
        """Queue `event` to commit with this change; `Invalid` at once if it may not be logged."""
        try:
            self._tx.append(event.to_event())
        except audit_errors.UnsafeEntry as exc:
            raise _unsafe(event, exc) from None


class AuditTrail:
    """Records typed events in the audit log; any failure to write is `AuditUnavailable` (fail closed)."""

    def __init__(self, audit_log: AuditLog) -> None:
        self.log = audit_log

    def record(self, event: AuditEvent, *, unavailable: str = NOTHING_DONE) -> int:
        """Append `event` on its own; returns its sequence number once it is durable."""
        try:
            return self.log.append(event.to_event()).seq
        except audit_errors.UnsafeEntry as exc:
            raise _unsafe(event, exc) from None
        except audit_errors.AuditUnavailable as exc:
            log.error("audit.unavailable", action=event.action, error=type(exc).__name__)
            raise AuditUnavailable(unavailable) from None

    @contextlib.contextmanager
    def change(self) -> Iterator[Change]:
        """A transaction whose change and recorded events are committed together, or not at all."""
        try:
            with self.log.transaction() as tx:
                yield Change(tx)
        except audit_errors.AuditUnavailable as exc:
            log.error("audit.unavailable", error=type(exc).__name__)
            raise AuditUnavailable(NOTHING_DONE) from None
