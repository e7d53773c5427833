"""Queries and their approval by the departments whose data they touch.

    submitted ──(every involved department approved, or a signed rule covers it)──> approved
        └──(any involved department rejects)──> rejected
    approved ──run──> running ──> released | failed          (failed before any data: back to approved)

Approvals and rules are signed by each department's own key; the gateway verifies them against the
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
    parse_public_key,
    verify_approval,
    verify_rule,
)
from gateway import db
from gateway.auth import Principal, Role
from gateway.errors import ApiError, ErrorCode
from gateway.registry import catalog

Cover = SignedApproval | SignedRule


@dataclass(frozen=True)
class QueryRecord:
    id: str
    digest: str
    spec: QuerySpec
    analyst: str
    state: str
    error_code: str | None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "digest": self.digest,
            "state": self.state,
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
        state=row.state,
        error_code=row.error_code,
    )


def plan_or_422(engine: sa.Engine, spec: QuerySpec) -> Plan:
    try:
        return plan_query(spec, catalog(engine))
    except PlanError as exc:
        raise ApiError(422, ErrorCode.INVALID_REQUEST, exc.message, exc.field) from None


def required_scopes(plan: Plan) -> dict[str, list[ApprovedDataset]]:
    """Per department, the datasets and fields its approval must cover."""
    scopes: dict[str, list[ApprovedDataset]] = {}
    for e in plan.extracts:
        scopes.setdefault(e.department, []).append(
            ApprovedDataset(dataset=e.dataset, measures=e.measures, dimensions=e.dimensions)
        )
    return scopes


def get_query(engine: sa.Engine, query_id: str) -> QueryRecord:
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.queries).where(db.queries.c.id == query_id)).first()
    if row is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no query with that id", "query_id")
    return _record(row)


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


def submit(engine: sa.Engine, spec: QuerySpec, analyst: Principal) -> tuple[QueryRecord, bool]:
    """Store a query (or find the identical one); returns the record and whether it is new."""
    plan = plan_or_422(engine, spec)
    now = db.utcnow()
    with engine.begin() as conn:
        row = conn.execute(sa.select(db.queries).where(db.queries.c.digest == spec.digest)).first()
        if row is not None:
            record = _record(row)
            if record.analyst != analyst.name:
                # Another analyst's identical query: same spec, kept apart by the purpose they wrote.
                raise ApiError(
                    409, ErrorCode.CONFLICT, "an identical query exists; reword its purpose", "purpose"
                )
            return record, False
        conn.execute(
            db.queries.insert().values(
                id=spec.query_id,
                digest=spec.digest,
                spec_json=spec.model_dump_json(),
                analyst=analyst.name,
                state="submitted",
                created_at=now,
                updated_at=now,
            )
        )
    refresh_state(engine, spec.query_id, plan)
    return get_query(engine, spec.query_id), True


# --- approvals and rules ------------------------------------------------------------------------------


def _approval_key(engine: sa.Engine, department: str) -> Any:
    with engine.connect() as conn:
        keys = set(
            conn.execute(
                sa.select(db.connectors.c.approval_key).where(
                    db.connectors.c.department == department, db.connectors.c.enabled.is_(True)
                )
            ).scalars()
        )
    if len(keys) != 1:
        raise ApiError(
            409, ErrorCode.CONFLICT, "the department has no single registered approval key", "department"
        )
    return parse_public_key(keys.pop())


def record_approval(engine: sa.Engine, query_id: str, signed: SignedApproval, by: Principal) -> QueryRecord:
    record = get_query(engine, query_id)
    plan = plan_or_422(engine, record.spec)
    department = by.department or ""
    if signed.approval.department != department:
        raise ApiError(
            403, ErrorCode.FORBIDDEN, "an admin approves for their own department only", "approval"
        )
    if department not in plan.departments:
        raise ApiError(
            403, ErrorCode.FORBIDDEN, "this query does not touch your department's data", "query_id"
        )
    if record.state not in ("submitted", "approved"):
        raise ApiError(409, ErrorCode.CONFLICT, f"the query is {record.state}", "query_id")
    try:
        verify_approval(_approval_key(engine, department), signed)
    except SignatureError:
        raise ApiError(
            422, ErrorCode.NOT_APPROVED, "the approval is not signed by the department's key", "approval"
        ) from None
    try:
        check_cover(signed.approval, asked_of(record.spec, record.analyst, plan, department))
    except NotCovered as exc:
        raise ApiError(
            422, ErrorCode.NOT_APPROVED, f"the approval does not cover this query: {exc.reason}", "approval"
        ) from None
    _store_decision(engine, query_id, department, "approved", signed.model_dump_json(), by)
    refresh_state(engine, query_id, plan)
    return get_query(engine, query_id)


def record_rejection(engine: sa.Engine, query_id: str, reason: str, by: Principal) -> QueryRecord:
    record = get_query(engine, query_id)
    plan = plan_or_422(engine, record.spec)
    if by.department not in plan.departments:
        raise ApiError(
            403, ErrorCode.FORBIDDEN, "this query does not touch your department's data", "query_id"
        )
    if record.state not in ("submitted", "approved"):
        raise ApiError(409, ErrorCode.CONFLICT, f"the query is {record.state}", "query_id")
    _store_decision(engine, query_id, by.department or "", "rejected", json.dumps({"reason": reason}), by)
    refresh_state(engine, query_id, plan)
    return get_query(engine, query_id)


def _store_decision(
    engine: sa.Engine, query_id: str, department: str, decision: str, doc: str, by: Principal
) -> None:
    with engine.begin() as conn:
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


def record_rule(engine: sa.Engine, signed: SignedRule, by: Principal) -> ApprovalRule:
    if signed.rule.department != by.department:
        raise ApiError(
            403, ErrorCode.FORBIDDEN, "an admin registers rules for their own department only", "rule"
        )
    try:
        rule = verify_rule(_approval_key(engine, by.department), signed)
    except SignatureError:
        raise ApiError(
            422, ErrorCode.NOT_APPROVED, "the rule is not signed by the department's key", "rule"
        ) from None
    with engine.begin() as conn:
        conn.execute(
            db.rules.update()
            .where(db.rules.c.id == rule.rule_id, db.rules.c.revoked_at.is_(None))
            .values(revoked_at=db.utcnow())
        )
        conn.execute(db.rules.delete().where(db.rules.c.id == rule.rule_id))
        conn.execute(
            db.rules.insert().values(
                id=rule.rule_id,
                department=rule.department,
                signed_json=signed.model_dump_json(),
                created_by=by.name,
                created_at=db.utcnow(),
            )
        )
    return rule


def revoke_rule(engine: sa.Engine, rule_id: str, by: Principal) -> None:
    with engine.begin() as conn:
        done = conn.execute(
            db.rules.update()
            .where(
                db.rules.c.id == rule_id,
                db.rules.c.department == by.department,
                db.rules.c.revoked_at.is_(None),
            )
            .values(revoked_at=db.utcnow())
        )
    if done.rowcount == 0:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no active rule of your department with that id", "rule_id")


def list_rules(engine: sa.Engine, department: str | None = None) -> list[SignedRule]:
    stmt = sa.select(db.rules.c.signed_json).where(db.rules.c.revoked_at.is_(None))
    if department is not None:
        stmt = stmt.where(db.rules.c.department == department)
    with engine.connect() as conn:
        return [SignedRule.model_validate_json(t) for t in conn.execute(stmt).scalars()]


def asked_of(spec: QuerySpec, analyst: str, plan: Plan, department: str) -> Asked:
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
        analyst=analyst,
        datasets=tuple(required_scopes(plan).get(department, ())),
    )


def _covered(cover: Approval | ApprovalRule, asked: Asked) -> bool:
    try:
        check_cover(cover, asked)
    except NotCovered:
        return False
    return True


def covers(engine: sa.Engine, record: QueryRecord, plan: Plan) -> tuple[dict[str, Cover], list[str]]:
    """Per department, the stored approval or a rule that covers the query; and who rejected it."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.approvals).where(db.approvals.c.query_id == record.id)).all()
    decided = {r.department: r for r in rows}
    found: dict[str, Cover] = {}
    rejected = [d for d, r in decided.items() if r.decision == "rejected" and d in plan.departments]
    for dept in plan.departments:
        row = decided.get(dept)
        if row is not None and row.decision == "approved":
            signed = SignedApproval.model_validate_json(row.signed_json)
            if _covered(signed.approval, asked_of(record.spec, record.analyst, plan, dept)):
                found[dept] = signed
                continue
        if row is not None and row.decision == "rejected":
            continue
        for rule in list_rules(engine, dept):
            if _covered(rule.rule, asked_of(record.spec, record.analyst, plan, dept)):
                found[dept] = rule
                break
    return found, rejected


def refresh_state(engine: sa.Engine, query_id: str, plan: Plan) -> None:
    """Move a submitted/approved query to the state its departments' decisions give it."""
    record = get_query(engine, query_id)
    if record.state not in ("submitted", "approved"):
        return
    found, rejected = covers(engine, record, plan)
    state = "rejected" if rejected else "approved" if len(found) == len(plan.departments) else "submitted"
    set_state(engine, query_id, state, expect=("submitted", "approved"))


def set_state(
    engine: sa.Engine, query_id: str, state: str, *, expect: tuple[str, ...], error_code: str | None = None
) -> bool:
    """Compare-and-set the state; False if the query was not in an expected state."""
    with engine.begin() as conn:
        done = conn.execute(
            db.queries.update()
            .where(db.queries.c.id == query_id, db.queries.c.state.in_(expect))
            .values(state=state, error_code=error_code, updated_at=db.utcnow())
        )
    return done.rowcount == 1
