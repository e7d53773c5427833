"""A query's life: its states, the compare-and-set transitions between them, the refund rule, recovery.

    submitted ──(every involved department approved, or a signed rule covers it)──> approved
        └──(an involved department rejects)──> rejected
    approved ──run──> running ──> released
                         ├──> failed      (data had arrived: the reservation stays spent)
                         └──> approved    (no data arrived: refunded, the query can run again)

Every transition is a compare-and-set on the query's row, made inside the audit transaction of the event
that explains it, so two runs cannot both start and no state changes unrecorded. The budget ledger lives
beside these tables: its change for a transition comes after the transition's entry is durable.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import sqlalchemy as sa

from gateway import db
from gateway.audit_trail import AuditTrail
from gateway.events import QueryInterrupted, ReservationReleased
from privacy.errors import InvalidTransition
from privacy.ledger import REFUNDED, RESERVED, Ledger, Reservation

__all__ = [
    "DECIDABLE",
    "QueryState",
    "recover_interrupted_runs",
    "release_unused",
    "stays_charged",
    "transition",
]


class QueryState(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    RUNNING = "running"
    RELEASED = "released"
    FAILED = "failed"


# States in which departments' decisions (approvals, rejections, rules) still change a query's state.
DECIDABLE = (QueryState.SUBMITTED, QueryState.APPROVED)


def transition(
    conn: sa.Connection,
    query_id: str,
    to: QueryState,
    *,
    expect: Iterable[QueryState],
    error_code: str | None = None,
) -> bool:
    """Compare-and-set the state on `conn` (inside the caller's audit transaction); False if the query
    was not in one of the `expect`ed states."""
    done = conn.execute(
        db.queries.update()
        .where(db.queries.c.id == query_id, db.queries.c.state.in_([s.value for s in expect]))
        .values(state=to.value, error_code=error_code, updated_at=db.utcnow())
    )
    return done.rowcount == 1


def stays_charged(entry: Reservation | None) -> bool:
    """The refund rule: a query's epsilon is given back only if no connector returned any data."""
    if entry is None or entry.state == REFUNDED:
        return False
    return not (entry.state == RESERVED and not entry.data_arrived)


def release_unused(ledger: Ledger, query_id: str) -> bool:
    """Apply the refund rule to a query that will not be released; returns whether its epsilon stays
    charged. A reservation without data is refunded; one with data is marked spent."""
    entry = ledger.entry(query_id)
    if entry is None or entry.state != RESERVED:
        return stays_charged(entry)
    if not entry.data_arrived:
        try:
            ledger.refund(query_id)
            return False
        except InvalidTransition:
            pass  # data arrived meanwhile: the budget stays spent
    ledger.fail(query_id)
    return True


def recover_interrupted_runs(engine: sa.Engine, ledger: Ledger, trail: AuditTrail) -> None:
    """Settle the queries a dead process left 'running', and the reservations no run used.

    A query whose result was committed is released; otherwise the refund rule decides: failed with its
    reservation spent if data had arrived, back to approved and refunded if none had. Each is audited
    before the ledger changes. A pack reserves all its queries before the first runs; those a dead process
    never started are reservations without data, refunded like any run that died before data arrived.
    """
    with engine.connect() as conn:
        stuck = list(
            conn.execute(
                sa.select(db.queries.c.id).where(db.queries.c.state == QueryState.RUNNING.value)
            ).scalars()
        )
    for qid in stuck:
        released = ledger.result(qid) is not None
        charged = released or stays_charged(ledger.entry(qid))
        state = QueryState.RELEASED if released else QueryState.FAILED if charged else QueryState.APPROVED
        with trail.change() as change:
            if not transition(
                change.conn,
                qid,
                state,
                expect=(QueryState.RUNNING,),
                error_code=None if released else "interrupted",
            ):
                continue
            change.record(QueryInterrupted(actor="gateway", query_id=qid, charged=charged, state=state))
        if not released:
            release_unused(ledger, qid)
    for qid in ledger.reserved_without_data():
        trail.record(ReservationReleased(actor="gateway", query_id=qid))
        ledger.refund(qid)
