"""A department's approvals inbox: what each query takes from the department, and the approval to sign.

    inbox(engine, admin)                         the queries touching the admin's department, waiting first
    inbox_item(engine, department, query_id)     one of them (NotFound for a query that does not touch it)
    approve_signed(trail, query_id, by, ...)     store an approval signed elsewhere over the draft's bytes

The console's page shows an item's parts (dataset, measures, dimensions, the household mapping, periods,
epsilon) and hands the browser the draft's exact signing bytes; the browser signs them with the key file
the admin picked and posts only the signature. `approve_signed` rebuilds the same draft, refuses if it no
longer has the digest the page signed, and stores it through `queries.record_approval`, which verifies the
signature under the department's registered key like any approval from the API.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass

import sqlalchemy as sa
from pydantic import ValidationError

from aggregation.planner import Plan, PlanError, plan_query
from connectors.protocol import Approval, SignedApproval
from gateway import queries
from gateway.approval_draft import draft_approval, signing_digest
from gateway.audit_trail import AuditTrail
from gateway.auth import Principal
from gateway.errors import Conflict, Invalid, NotFound
from gateway.lifecycle import DECIDABLE
from gateway.registry import catalog

__all__ = ["InboxItem", "InboxPart", "approve_signed", "inbox", "inbox_item"]


@dataclass(frozen=True)
class InboxPart:
    """One dataset of the department that the query reads, with exactly the fields it reads."""

    connector: str
    dataset: str
    measures: tuple[str, ...]
    dimensions: tuple[str, ...]
    household: bool  # the register's person -> household mapping (as household tokens)
    baseline: bool  # the baseline period is read too


@dataclass(frozen=True)
class InboxItem:
    record: queries.QueryRecord
    department: str
    parts: tuple[InboxPart, ...]
    decision: str | None  # approved / rejected by this department, if it decided
    decided_by: str | None
    covered_by: str | None  # "approval" or "rule:<id>" when something already covers the department's part
    draft: Approval | None  # the approval to sign, while the query still waits for this department

    @property
    def waiting(self) -> bool:
        return self.draft is not None

    @property
    def digest(self) -> str | None:
        return None if self.draft is None else signing_digest(self.draft)

    @property
    def expires_text(self) -> str | None:
        """When the approval to sign stops covering the query, as the admin reads it (UTC)."""
        if self.draft is None:
            return None
        moment = datetime.datetime.fromtimestamp(self.draft.expires_at, tz=datetime.UTC)
        return moment.strftime("%Y-%m-%d %H:%M UTC")

    @property
    def signing_bytes_b64(self) -> str | None:
        return None if self.draft is None else base64.b64encode(self.draft.signing_bytes()).decode()


def _item(engine: sa.Engine, record: queries.QueryRecord, plan: Plan, department: str) -> InboxItem:
    parts = tuple(
        InboxPart(e.connector, e.dataset, e.measures, e.dimensions, e.household, e.baseline)
        for e in plan.extracts
        if e.department == department
    )
    found, _ = queries.covers(engine, record, plan)
    mine = next((d for d in queries.decisions(engine, record.id) if d.department == department), None)
    cover = found.get(department)
    covered_by = None
    if cover is not None:
        covered_by = "approval" if isinstance(cover, SignedApproval) else f"rule:{cover.rule.rule_id}"
    waiting = record.state in DECIDABLE and mine is None and cover is None
    scopes = queries.required_scopes(plan).get(department, [])
    return InboxItem(
        record=record,
        department=department,
        parts=parts,
        decision=None if mine is None else mine.decision,
        decided_by=None if mine is None else mine.decided_by,
        covered_by=covered_by,
        draft=draft_approval(record.spec, department, scopes) if waiting else None,
    )


def inbox(engine: sa.Engine, admin: Principal) -> list[InboxItem]:
    """Every query that reads the admin's department's data (the latest 500), those waiting for it first."""
    department = admin.department or ""
    cat = catalog(engine)
    items = []
    for record in queries.list_queries(engine, admin):
        try:
            plan = plan_query(record.spec, cat)
        except PlanError:
            continue  # the catalog changed since submission: nothing to approve against
        if department in plan.departments:
            items.append(_item(engine, record, plan, department))
    return sorted(items, key=lambda i: not i.waiting)


def inbox_item(engine: sa.Engine, department: str, query_id: str) -> InboxItem:
    record = queries.get_query(engine, query_id)
    try:
        plan = plan_query(record.spec, catalog(engine))
    except PlanError:
        plan = None
    if plan is None or department not in plan.departments:
        # Not 403: whether a query id exists is itself not for everyone to learn.
        raise NotFound("no query with that id", "query_id")
    return _item(engine, record, plan, department)


def approve_signed(
    trail: AuditTrail, query_id: str, by: Principal, *, digest: str, signature: str, key_fingerprint: str
) -> queries.QueryRecord:
    """Store the department's approval of the draft whose signing bytes have SHA-256 `digest`."""
    item = inbox_item(trail.log.engine, by.department or "", query_id)
    if item.draft is None:
        raise Conflict("the query no longer waits for your department's approval", "query_id")
    if item.digest != digest:
        raise Conflict(
            "what the query asks of your department changed since the page was opened: reload, sign again",
            "digest",
        )
    try:
        signed = SignedApproval(approval=item.draft, key_fingerprint=key_fingerprint, signature=signature)
    except ValidationError:
        raise Invalid("the key fingerprint is 64 hexadecimal digits", "key_fingerprint") from None
    return queries.record_approval(trail, query_id, signed, by)
