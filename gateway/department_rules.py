"""A department's pre-approval rules as its admin sees them: every rule it registered, with its state.

    RuleState           active, expired (its signed `expires_at` has passed), revoked (the department
                        revoked it at the gateway)
    department_rules(engine, department, now)   newest first, revoked ones included

The state is decided here once. Revocation at the department's own connector (a revocation list the
connector holds) is not visible to the gateway; when the gateway learns of it, it becomes one more
`RuleState` decided in `rule_state`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa

from connectors.protocol import ApprovalRule, SignedRule
from gateway import db

__all__ = ["DepartmentRule", "RuleState", "department_rules", "rule_state"]


class RuleState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


def rule_state(rule: ApprovalRule, revoked_at: dt.datetime | None, now: dt.datetime) -> RuleState:
    if revoked_at is not None:
        return RuleState.REVOKED
    if rule.expires_at is not None and rule.expires_at <= now.timestamp():
        return RuleState.EXPIRED
    return RuleState.ACTIVE


@dataclass(frozen=True)
class DepartmentRule:
    signed: SignedRule
    state: RuleState
    created_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def rule(self) -> ApprovalRule:
        return self.signed.rule

    @property
    def expires_at(self) -> dt.datetime | None:
        at = self.rule.expires_at
        return None if at is None else dt.datetime.fromtimestamp(at, dt.UTC)


def department_rules(
    engine: sa.Engine, department: str, now: dt.datetime | None = None
) -> list[DepartmentRule]:
    moment = now or dt.datetime.now(dt.UTC)
    stmt = (
        sa.select(db.rules.c.signed_json, db.rules.c.created_by, db.rules.c.created_at, db.rules.c.revoked_at)
        .where(db.rules.c.department == department)
        .order_by(db.rules.c.created_at.desc())
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    out = []
    for row in rows:
        signed = SignedRule.model_validate_json(row.signed_json)
        out.append(
            DepartmentRule(
                signed=signed,
                state=rule_state(signed.rule, row.revoked_at, moment),
                created_by=row.created_by,
                created_at=row.created_at,
                revoked_at=row.revoked_at,
            )
        )
    return out
