"""What a department signs for one query: its own plan of the query, never the scope the gateway reports.

    own_schema(url, admin_key)                  the department's schema, from its own connector
    planned_approval(spec, department, schemas, reported, digest=...)
                                                the approval of exactly the locally planned scope, or
                                                `ScopeRefused` when the gateway reports a wider scope, a
                                                digest that is not the query's, or a query the department's
                                                own schemas cannot plan

`fedgate approve` (one query and `--pending`) and `GatewayClient.approve` use it. The plan is the same
rule every connector applies to the extracts it serves (`connectors.query_scope.plan_connector`), so the
department signs what its connectors will serve, and a gateway that asks for more than the query needs
gets no signature.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from connectors.protocol import Approval, ApprovedDataset, ConnectorSchema
from connectors.query import QuerySpec
from connectors.query_scope import ScopeError, plan_connector
from gateway.approval_draft import draft_approval

__all__ = ["PlannedApproval", "ScopeRefused", "own_schema", "planned_approval", "scope_rows"]


class ScopeRefused(Exception):
    """The department will not sign: `reason` says why (public: names of datasets and fields only)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class PlannedApproval:
    """The approval to sign and what it is for, to show the department admin before signing."""

    approval: Approval
    purpose: str

    @property
    def scopes(self) -> tuple[ApprovedDataset, ...]:
        return self.approval.datasets


def own_schema(url: str, admin_key: str, *, transport: httpx.BaseTransport | None = None) -> ConnectorSchema:
    """The department's schema from its own connector (`GET /v1/admin/schema`, the department admin key)."""
    with httpx.Client(base_url=url.rstrip("/"), timeout=30.0, transport=transport) as http:
        response = http.get("/v1/admin/schema", headers={"authorization": f"Bearer {admin_key}"})
    if response.status_code != 200:
        # Never echo the answer's text: name the status and the fix.
        raise ScopeRefused(
            f"the connector at {url} answered {response.status_code} to the department's schema request: "
            "check the connector's URL and the department admin key / 无法从本部门连接器读取数据目录"
        )
    return ConnectorSchema.model_validate(response.json())


def _as_set(scope: ApprovedDataset) -> set[tuple[str, str]]:
    fields = {("measure", m) for m in scope.measures} | {("dimension", d) for d in scope.dimensions}
    return fields | ({("household", "mapping")} if scope.household else set())


def planned_approval(
    spec: QuerySpec,
    department: str,
    schemas: Sequence[ConnectorSchema],
    reported: Sequence[ApprovedDataset],
    *,
    digest: str | None = None,
    expires_at: int | None = None,
) -> PlannedApproval:
    """The approval of exactly what `spec` needs of `department`'s own connectors (`schemas`).

    `reported` is the scope the gateway says the department must cover, and `digest` the query digest it
    reports: both are checked against the local plan and never signed as such.
    """
    if digest is not None and digest != spec.digest:
        raise ScopeRefused("the gateway reports a query digest that is not the digest of the query it shows")
    own = [s for s in schemas if s.department == department]
    if not own:
        raise ScopeRefused(
            f"no schema of department {department}'s own connectors was given: fetch it from your connector "
            "(--connector URL with the department admin key) / 需要本部门连接器的数据目录"
        )
    planned: dict[str, ApprovedDataset] = {}
    for schema in own:
        try:
            needs = plan_connector(spec, schema)
        except ScopeError as exc:
            raise ScopeRefused(f"your connector {schema.connector} cannot plan this query: {exc}") from None
        for need in needs:
            planned[need.dataset] = need.approved()
    if not planned:
        raise ScopeRefused(f"the query reads nothing of department {department}'s datasets")
    _check_reported(planned, reported)
    approval = draft_approval(spec, department, tuple(planned.values()), expires_at=expires_at)
    return PlannedApproval(approval=approval, purpose=spec.purpose)


def _check_reported(planned: Mapping[str, ApprovedDataset], reported: Sequence[ApprovedDataset]) -> None:
    """Refuse when the gateway reports anything beyond the local plan (a dataset, a field, the mapping)."""
    for scope in reported:
        mine = planned.get(scope.dataset)
        if mine is None:
            raise ScopeRefused(
                f"the gateway reports dataset {scope.dataset}, which this query does not need: not signed "
                "/ 网关要求的数据集超出查询所需，未签署"
            )
        wider = sorted(_as_set(scope) - _as_set(mine))
        if wider:
            names = ", ".join(f"{kind} {name}" for kind, name in wider)
            raise ScopeRefused(
                f"the gateway reports a scope of dataset {scope.dataset} wider than this query needs "
                f"({names}): not signed / 网关要求的字段超出查询所需，未签署"
            )


def scope_rows(planned: PlannedApproval) -> list[tuple[str, str]]:
    """(label, value) rows that show the department admin exactly what is signed."""
    a = planned.approval
    rows = [("purpose / 用途", planned.purpose), ("query / 查询", f"{a.query_id} ({a.unit.value})")]
    rows.append(("period / 期间", f"{a.period_start} – {a.period_end}"))
    if a.baseline_start is not None:
        rows.append(("baseline / 基期", f"{a.baseline_start} – {a.baseline_end}"))
    for s in a.datasets:
        fields = [*(f"measure {m}" for m in s.measures), *(f"dimension {d}" for d in s.dimensions)]
        if s.household:
            fields.append("household mapping / 户籍关联")
        rows.append((f"dataset {s.dataset} / 数据集", ", ".join(fields) or "(persons with a row only)"))
    rows.append(("epsilon / 隐私预算", str(a.epsilon)))
    expires = datetime.datetime.fromtimestamp(a.expires_at, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows.append(("expires / 失效", expires))
    return rows


def reported_scopes(view: Mapping[str, Any], department: str) -> list[ApprovedDataset]:
    """The scope a gateway's query view says the department must cover."""
    return [ApprovedDataset.model_validate(d) for d in view.get("required_approvals", {}).get(department, [])]
