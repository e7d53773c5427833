"""Queries and their approval by the departments whose data they touch.

    submitted ──(every involved department approved, or a signed rule covers it)──> approved
        └──(any involved department rejects)──> rejected
    (the whole life, and its transitions: `gateway.lifecycle`)

Each change (a submission, a decision, a rule) commits in one transaction with its audit entry
(`gateway.events`); free text the audit log may not hold is refused first, naming the field. Approvals
and rules are signed by each department's own key; the gateway verifies them against the
approval key the department's connector published, stores them, and forwards them with each extract.
It never holds a department's private key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from aggregation.planner import Plan, PlanError, plan_query
from aggregation.query import QuerySpec
from connectors.coverage import Asked, NotCovered, check_cover
from connectors.protocol import (
    Approval,
    ApprovalRule,
    ApprovedDataset,
    SignatureError,
    SignedApproval,
    SignedRule,
    check_current,
    parse_public_key,
    sha256_hex,
    verify_approval,
    verify_rule,
)
from gateway import db
from gateway.analyst_keys import check_signature
from gateway.audit_trail import AuditTrail, Change, check_free_text
from gateway.auth import Principal, Role
from gateway.errors import ApprovalInvalid, Conflict, Forbidden, Invalid, NotFound
from gateway.events import (
    QueryApproved,
    QueryRejected,
    QueryStateRefreshed,
    QuerySubmitted,
    RuleRegistered,
    RuleRevoked,
)
from gateway.lifecycle import DECIDABLE, QueryState, transition
from gateway.registry import catalog

Cover = SignedApproval | SignedRule


@dataclass(frozen=True)
class QueryRecord:
    id: str
    digest: str
    spec: QuerySpec
    analyst: str
    state: QueryState
    error_code: str | None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "digest": self.digest,
            "state": self.state.value,
            "analyst": self.analyst,
            "error_code": self.error_code,
            "spec": self.spec.model_dump(mode="json"),
        }


def _record(row: sa.Row[Any]) -> QueryRecord:
    return QueryRecord(
        id=row.id,
        digest=row.digest,
        spec=QuerySpec.model_validate_json(row.spec_json),
        analyst=row.analyst,
        state=QueryState(row.state),
        error_code=row.error_code,
    )


def plan_or_invalid(engine: sa.Engine, spec: QuerySpec) -> Plan:
    """The query planned against the current catalog; `Invalid` naming the field otherwise."""
    try:
        return plan_query(spec, catalog(engine))
    except PlanError as exc:
        raise Invalid(exc.message, exc.field) from None


def required_scopes(plan: Plan) -> dict[str, list[ApprovedDataset]]:
    """Per department, the datasets and fields its approval must cover."""
    scopes: dict[str, list[ApprovedDataset]] = {}
    for e in plan.extracts:
        scopes.setdefault(e.department, []).append(e.scope())
    return scopes


def _no_query() -> NotFound:
    return NotFound("no query with that id", "query_id")


def _get(conn: sa.Connection, query_id: str) -> QueryRecord:
    row = conn.execute(sa.select(db.queries).where(db.queries.c.id == query_id)).first()
    if row is None:
        raise _no_query()
    return _record(row)


def get_query(engine: sa.Engine, query_id: str) -> QueryRecord:
    with engine.connect() as conn:
        return _get(conn, query_id)


def visible_to(record: QueryRecord, principal: Principal, plan_departments: tuple[str, ...]) -> bool:
    if principal.role in (Role.OPERATOR, Role.AUDITOR):
        return True
    if principal.role is Role.ANALYST:
        return record.analyst == principal.name
    return principal.department in plan_departments


def list_queries(engine: sa.Engine, principal: Principal) -> list[QueryRecord]:
    stmt = sa.select(db.queries).order_by(db.queries.c.created_at.desc()).limit(500)
    if principal.role is Role.ANALYST:
        stmt = stmt.where(db.queries.c.analyst == principal.name)
    with engine.connect() as conn:
        records = [_record(r) for r in conn.execute(stmt).all()]
    if principal.role is Role.DEPARTMENT_ADMIN:
        cat = catalog(engine)
        keep = []
        for r in records:
            try:
                departments = plan_query(r.spec, cat).departments
            except PlanError:
                continue
            if principal.department in departments:
                keep.append(r)
        return keep
    return records


def submit(
    trail: AuditTrail,
    spec: QuerySpec,
    analyst: Principal,
    *,
    indicator: str | None = None,
    signature: str | None = None,
) -> tuple[QueryRecord, bool]:
    """Store a query (or find the identical one) with its `query.submitted` entry, in one transaction;
    returns the record and whether it is new. Its first state is what the departments' rules give it.
    A query that names the analyst's key carries that key's `signature` (checked here, and again by
    every connector)."""
    engine = trail.log.engine
    plan = plan_or_invalid(engine, spec)
    check_free_text(purpose=spec.purpose)
    draft = QueryRecord(spec.query_id, spec.digest, spec, analyst.name, QueryState.SUBMITTED, None)
    with engine.connect() as conn:
        check_signature(conn, analyst, spec, signature)
        state = _decided_state(conn, draft, plan)
    now = db.utcnow()
    with trail.change() as change:
        row = change.conn.execute(sa.select(db.queries).where(db.queries.c.digest == spec.digest)).first()
        if row is not None:
            record = _record(row)
            if record.analyst != analyst.name:
                # Another analyst's identical query: same spec, kept apart by the purpose they wrote.
                raise Conflict("an identical query exists; reword its purpose", "purpose", reason="duplicate")
            return record, False
        change.conn.execute(
            db.queries.insert().values(
                id=spec.query_id,
                digest=spec.digest,
                spec_json=spec.model_dump_json(),
                analyst=analyst.name,
                state=state.value,
                created_at=now,
                updated_at=now,
            )
        )
        change.record(
            QuerySubmitted(
                actor=analyst.name,
                query_id=spec.query_id,
                query_digest=spec.digest,
                spec=spec.model_dump(mode="json"),
                state=state.value,
                indicator=indicator,
                analyst_key=spec.analyst_key,
            )
        )
        if spec.analyst_key is not None and signature is not None:
            change.conn.execute(
                db.query_signatures.insert().values(
                    query_id=spec.query_id, key_fingerprint=spec.analyst_key, signature=signature
                )
            )
    return QueryRecord(spec.query_id, spec.digest, spec, analyst.name, state, None), True


# --- approvals and rules ------------------------------------------------------------------------------


def _approval_key(conn: sa.Connection, department: str) -> Any:
    keys = set(
        conn.execute(
            sa.select(db.connectors.c.approval_key).where(
                db.connectors.c.department == department, db.connectors.c.enabled.is_(True)
            )
        ).scalars()
    )
    if len(keys) != 1:
        raise Conflict(
            "the department has no single registered approval key", "department", reason="no_approval_key"
        )
    return parse_public_key(keys.pop())


def _check_decidable(record: QueryRecord) -> None:
    if record.state not in DECIDABLE:
        raise Conflict(f"the query is {record.state}", "query_id", reason=record.state.value)


def record_approval(trail: AuditTrail, query_id: str, signed: SignedApproval, by: Principal) -> QueryRecord:
    """Verify and store a department's signed approval with its entry; the query's state follows."""
    engine = trail.log.engine
    record = get_query(engine, query_id)
    plan = plan_or_invalid(engine, record.spec)
    department = by.department or ""
    if signed.approval.department != department:
        raise Forbidden("an admin approves for their own department only", "approval")
    if department not in plan.departments:
        raise Forbidden("this query does not touch your department's data", "query_id")
    _check_decidable(record)
    with engine.connect() as conn:
        key = _approval_key(conn, department)
    try:
        verify_approval(key, signed)
    except SignatureError:
        raise ApprovalInvalid("the approval is not signed by the department's key", "approval") from None
    try:
        check_cover(signed.approval, asked_of(record.spec, plan, department))
    except NotCovered as exc:
        raise ApprovalInvalid(f"the approval does not cover this query: {exc.reason}", "approval") from None
    with trail.change() as change:
        _check_decidable(_get(change.conn, query_id))
        _store_decision(change.conn, query_id, department, "approved", signed.model_dump_json(), by)
        state = _refresh(change.conn, record, plan)
        change.record(
            QueryApproved(
                actor=by.name,
                department=department,
                query_id=query_id,
                query_digest=record.digest,
                approval_signature=signed.signature,
                approval_key=signed.key_fingerprint,
                epsilon=str(signed.approval.epsilon),
                state=state.value,
            )
        )
    return get_query(engine, query_id)


def record_rejection(trail: AuditTrail, query_id: str, reason: str, by: Principal) -> QueryRecord:
    """Store a department's rejection with its entry; the query is rejected."""
    engine = trail.log.engine
    record = get_query(engine, query_id)
    plan = plan_or_invalid(engine, record.spec)
    if by.department not in plan.departments:
        raise Forbidden("this query does not touch your department's data", "query_id")
    _check_decidable(record)
    check_free_text(reason=reason)
    department = by.department or ""
    with trail.change() as change:
        _check_decidable(_get(change.conn, query_id))
        _store_decision(change.conn, query_id, department, "rejected", json.dumps({"reason": reason}), by)
        state = _refresh(change.conn, record, plan)
        change.record(
            QueryRejected(
                actor=by.name, department=department, query_id=query_id, reason=reason, state=state.value
            )
        )
    return get_query(engine, query_id)


def _store_decision(
    conn: sa.Connection, query_id: str, department: str, decision: str, doc: str, by: Principal
) -> None:
    conn.execute(
        db.approvals.delete().where(
            db.approvals.c.query_id == query_id, db.approvals.c.department == department
        )
    )
    conn.execute(
        db.approvals.insert().values(
            query_id=query_id,
            department=department,
            decision=decision,
            signed_json=doc,
            decided_by=by.name,
            created_at=db.utcnow(),
        )
    )


def record_rule(trail: AuditTrail, signed: SignedRule, by: Principal) -> ApprovalRule:
    """Verify and store a new version of a department's signed pre-approval rule.

    A rule is identified by (department, rule_id): another department's rule of the same id is a
    different rule, untouched. A new version must name (`replaces`) the SHA-256 of the version in force,
    which is then superseded, never deleted; a first version names nothing.
    """
    if signed.rule.department != by.department:
        raise Forbidden("an admin registers rules for their own department only", "rule")
    with trail.log.engine.connect() as conn:
        key = _approval_key(conn, by.department)
    try:
        rule = verify_rule(key, signed)
    except SignatureError:
        raise ApprovalInvalid("the rule is not signed by the department's key", "rule") from None
    stale = check_current(rule.issued_at, rule.expires_at, "rule")
    if stale is not None:
        raise ApprovalInvalid(stale, "rule")
    now = db.utcnow()
    doc = signed.model_dump_json()
    with trail.change() as change:
        versions = change.conn.execute(
            sa.select(db.rules).where(*_rule_key(rule.department, rule.rule_id)).order_by(db.rules.c.version)
        ).all()
        current = next((v for v in versions if v.revoked_at is None and v.superseded_at is None), None)
        replaces = None if current is None else _rule_of(current).digest()
        if rule.replaces != replaces:
            need = "name nothing in replaces" if replaces is None else f"name replaces={replaces}"
            raise Conflict(
                f"a new version of rule {rule.rule_id} must {need} (the version it supersedes)",
                "rule",
                reason="replaces",
            )
        if current is not None:
            change.conn.execute(
                db.rules.update()
                .where(*_rule_key(rule.department, rule.rule_id), db.rules.c.version == current.version)
                .values(superseded_at=now)
            )
        version = (versions[-1].version + 1) if versions else 1
        change.conn.execute(
            db.rules.insert().values(
                department=rule.department,
                rule_id=rule.rule_id,
                version=version,
                signed_json=doc,
                signed_digest=sha256_hex(doc.encode()),
                created_by=by.name,
                created_at=now,
            )
        )
        change.record(
            RuleRegistered(
                actor=by.name,
                department=rule.department,
                rule=rule.model_dump(mode="json"),
                signature=signed.signature,
                version=version,
                replaces=replaces,
            )
        )
    return rule


def _rule_key(department: str, rule_id: str) -> tuple[sa.ColumnElement[bool], ...]:
    return (db.rules.c.department == department, db.rules.c.rule_id == rule_id)


def _rule_of(row: sa.Row[Any]) -> ApprovalRule:
    return SignedRule.model_validate_json(row.signed_json).rule


def revoke_rule(trail: AuditTrail, rule_id: str, by: Principal) -> None:
    """Revoke the department's own rule of that id (its version in force); another department's rule of
    the same id is a different rule and stays. The connector holds its own revocation list too
    (`fedgate connector revoke`), which is what stops a gateway that keeps forwarding the rule."""
    department = by.department or ""
    with trail.change() as change:
        row = change.conn.execute(
            sa.select(db.rules.c.version).where(
                *_rule_key(department, rule_id),
                db.rules.c.revoked_at.is_(None),
                db.rules.c.superseded_at.is_(None),
            )
        ).first()
        if row is None:
            raise NotFound("no active rule of your department with that id", "rule_id")
        change.conn.execute(
            db.rules.update()
            .where(*_rule_key(department, rule_id), db.rules.c.version == row.version)
            .values(revoked_at=db.utcnow(), revoked_by=by.name)
        )
        change.record(RuleRevoked(actor=by.name, department=department, rule_id=rule_id, version=row.version))


def _rules(conn: sa.Connection, department: str | None = None) -> list[SignedRule]:
    """The latest version of each (department, rule id) that is neither revoked nor superseded (an
    expired one is listed, and `check_cover` refuses it)."""
    stmt = sa.select(db.rules.c.signed_json).where(
        db.rules.c.revoked_at.is_(None), db.rules.c.superseded_at.is_(None)
    )
    if department is not None:
        stmt = stmt.where(db.rules.c.department == department)
    return [SignedRule.model_validate_json(t) for t in conn.execute(stmt).scalars()]


def list_rules(engine: sa.Engine, department: str | None = None) -> list[SignedRule]:
    with engine.connect() as conn:
        return _rules(conn, department)


def asked_of(spec: QuerySpec, plan: Plan, department: str) -> Asked:
    """What the query asks of one department, in the terms its connector will check again."""
    baseline = spec.baseline
    return Asked(
        department=department,
        query_id=spec.query_id,
        query_digest=spec.digest,
        unit=spec.unit,
        period_start=spec.period_start,
        period_end=spec.period_end,
        baseline_start=baseline.period_start if baseline else None,
        baseline_end=baseline.period_end if baseline else None,
        epsilon=spec.epsilon,
        # The key the submission was verified under (`analyst_keys.check_signature`); the connector
        # verifies the forwarded signature again and sees the same fingerprint.
        analyst=spec.analyst_key,
        datasets=tuple(required_scopes(plan).get(department, ())),
    )


def _covered(cover: Approval | ApprovalRule, asked: Asked) -> bool:
    try:
        check_cover(cover, asked)
    except NotCovered:
        return False
    return True


def covers_on(conn: sa.Connection, record: QueryRecord, plan: Plan) -> tuple[dict[str, Cover], list[str]]:
    """Per department, the stored approval or a rule that covers the query; and who rejected it."""
    rows = conn.execute(sa.select(db.approvals).where(db.approvals.c.query_id == record.id)).all()
    decided = {r.department: r for r in rows}
    found: dict[str, Cover] = {}
    rejected = [d for d, r in decided.items() if r.decision == "rejected" and d in plan.departments]
    for dept in plan.departments:
        row = decided.get(dept)
        if row is not None and row.decision == "approved":
            signed = SignedApproval.model_validate_json(row.signed_json)
            if _covered(signed.approval, asked_of(record.spec, plan, dept)):
                found[dept] = signed
                continue
        if row is not None and row.decision == "rejected":
            continue
        for rule in _rules(conn, dept):
            if _covered(rule.rule, asked_of(record.spec, plan, dept)):
                found[dept] = rule
                break
    return found, rejected


@dataclass(frozen=True)
class Decision:
    department: str
    decision: str
    decided_by: str


def decisions(engine: sa.Engine, query_id: str) -> list[Decision]:
    """The departments' stored decisions on a query (approved or rejected, and by whom)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.approvals).where(db.approvals.c.query_id == query_id)).all()
    return [Decision(r.department, r.decision, r.decided_by) for r in rows]


def covers(engine: sa.Engine, record: QueryRecord, plan: Plan) -> tuple[dict[str, Cover], list[str]]:
    with engine.connect() as conn:
        return covers_on(conn, record, plan)


def waiting_for(record: QueryRecord, plan: Plan, found: dict[str, Cover], rejected: list[str]) -> str:
    """Who a query that is not approved waits for, or who rejected it (for `NotApproved`)."""
    if rejected:
        return f"rejected by {', '.join(rejected)}"
    missing = [d for d in plan.departments if d not in found]
    return f"waiting for {', '.join(missing)}" if missing else f"the query is {record.state}"


def _decided_state(conn: sa.Connection, record: QueryRecord, plan: Plan) -> QueryState:
    found, rejected = covers_on(conn, record, plan)
    if rejected:
        return QueryState.REJECTED
    return QueryState.APPROVED if len(found) == len(plan.departments) else QueryState.SUBMITTED


def _refresh(conn: sa.Connection, record: QueryRecord, plan: Plan) -> QueryState:
    """Set a submitted/approved query to the state its departments' decisions give it (on `conn`);
    a query already in that state is left untouched."""
    state = _decided_state(conn, record, plan)
    current = _get(conn, record.id).state
    if state is not current:
        transition(conn, record.id, state, expect=DECIDABLE)
    return state


def refresh_state(trail: AuditTrail, record: QueryRecord, plan: Plan) -> QueryRecord:
    """Bring a query's state up to date with its departments' decisions (a rule registered, revoked or
    expired since); a change is audited with the state it left."""
    if record.state not in DECIDABLE:
        return record
    with trail.change() as change:
        current = _get(change.conn, record.id)
        if current.state not in DECIDABLE:
            return current
        state = _refresh(change.conn, current, plan)
        if state is not current.state:
            _record_refresh(change, current, state)
    return get_query(trail.log.engine, record.id)


def _record_refresh(change: Change, record: QueryRecord, state: QueryState) -> None:
    change.record(
        QueryStateRefreshed(
            actor="gateway", query_id=record.id, previous=record.state.value, state=state.value
        )
    )
