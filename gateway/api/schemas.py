"""Input and output models of the gateway's HTTP API (inputs and outputs are separate classes)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aggregation.query import MemberGroup
from connectors.protocol import ApprovedDataset, ConnectorSchema

# Every number a route accepts is bounded here, so no input reaches a database column, the ledger's
# integer nano-epsilon or a proof computation that cannot hold it (a 422 naming the field, never a 500).
MAX_SEQUENCE = 2**63 - 1
"""largest audit sequence number or tree size: a signed 64-bit column in every supported database"""
EPSILON_DECIMALS = 9
"""the ledger counts nano-epsilon"""
MAX_EPSILON_SETTING = 1_000

EpsilonSetting = Annotated[
    Decimal,
    Field(
        ge=0,
        le=MAX_EPSILON_SETTING,
        decimal_places=EPSILON_DECIMALS,
        description=f"epsilon with at most {EPSILON_DECIMALS} decimal places",
    ),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthResponse(BaseModel):
    """The gateway is up."""

    status: Literal["ok"] = Field("ok", description="always ok")


class MeOut(BaseModel):
    """The caller's principal."""

    name: str = Field(description="the principal's name")
    role: str = Field(description="operator, department_admin, analyst or auditor")
    department: str | None = Field(description="the department of a department admin; null for other roles")
    expires_at: str = Field(description="when the API key expires (ISO 8601)")


class EndpointIn(_In):
    """A connector base URL for the operator's allow-list."""

    url: str = Field(
        description="https:// base URL of a connector (http:// only on loopback in development)",
        max_length=512,
    )


class EndpointsOut(BaseModel):
    """The operator's allow-list of connector endpoints."""

    endpoints: list[str] = Field(description="allowed connector base URLs")


class ConnectorIn(_In):
    """A connector to register: its name, its allow-listed endpoint and its signing key's fingerprint."""

    name: str = Field(
        description="the connector's name, as in its configuration", pattern=r"^[a-z][a-z0-9_]{0,62}$"
    )
    endpoint: str = Field(
        description="the connector's base URL; must be on the operator's allow-list", max_length=512
    )
    key_fingerprint: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the connector's public key"
    )


class ConnectorOut(BaseModel):
    """A registered connector."""

    name: str = Field(description="the connector's name")
    department: str = Field(description="the department that runs it")
    endpoint: str = Field(description="its base URL")
    key_fingerprint: str = Field(description="SHA-256 fingerprint of its signing key, as registered")
    version: int = Field(
        description="the registration's version: it goes up when the endpoint or key changes"
    )
    enabled: bool = Field(
        description="false while the operator has disabled it (its datasets leave the catalog)"
    )


class ConnectorsOut(BaseModel):
    """The registered connectors."""

    connectors: list[ConnectorOut] = Field(description="every registered connector")


class CatalogOut(BaseModel):
    """Public policy only: datasets, measures with bounds, dimensions with domains; never a count."""

    connectors: list[ConnectorSchema] = Field(
        description="every enabled connector's schema: datasets, measures with bounds, dimensions with "
        "domains and names"
    )
    household_attributes: list[str] = Field(
        description="attributes every household query can use beside the datasets' dimensions "
        "(household.size, household.has_<group>)"
    )
    notes: list[str] = Field(description="how to read the catalog")


class DecisionOut(BaseModel):
    """One department's decision on a query."""

    department: str = Field(description="the deciding department")
    decision: str = Field(description="approved or rejected")
    decided_by: str = Field(description="the department admin who decided")


class QueryOut(BaseModel):
    """A query and where it stands: its state, the approvals it needs and the decisions made."""

    id: str = Field(description="the query id (q- and 32 hex digits)")
    digest: str = Field(description="SHA-256 of the query's canonical JSON: what approvals sign")
    state: str = Field(description="submitted, approved, rejected, running, released, failed or expired")
    analyst: str = Field(description="the analyst who submitted it")
    error_code: str | None = Field(description="the error code of the last failed run; null otherwise")
    spec: dict[str, Any] = Field(description="the query as submitted (fedgate-query/1)")
    departments: list[str] = Field([], description="the departments whose data the query reads")
    required_approvals: dict[str, list[ApprovedDataset]] = Field(
        {}, description="department -> exactly what its approval must cover"
    )
    covered_by: dict[str, str] = Field({}, description="department -> 'approval' or 'rule:<id>'")
    decisions: list[DecisionOut] = Field([], description="the departments' decisions so far")


class QueriesOut(BaseModel):
    """Queries the caller may see."""

    queries: list[QueryOut] = Field(description="an analyst's own queries; every query for the other roles")


class RejectionIn(_In):
    """A department's rejection of a query."""

    reason: str = Field(min_length=3, max_length=1_000, description="why, for the analyst")


class RuleOut(BaseModel):
    """A registered pre-approval rule (one version of the department's rule of that id)."""

    rule_id: str = Field(description="the rule's name within its department")
    department: str = Field(description="the department that signed it")
    units: list[str] = Field(description="the units a covered query may count")
    max_epsilon_per_query: Decimal = Field(description="the largest epsilon of a covered query")
    analysts: list[str] = Field(description="the analysts it covers by key fingerprint, or * for all")
    datasets: list[ApprovedDataset] = Field(description="what a covered query may read")
    issued_at: int = Field(description="unix seconds when the department signed it")
    expires_at: int = Field(description="unix seconds after which the rule covers nothing")
    digest: str = Field(description="SHA-256 of the signed rule: what a replacement or revocation names")
    replaces: str | None = Field(None, description="the digest of the version this one replaced, if any")


class AnalystKeyIn(BaseModel):
    """An analyst's own public key, generated on the analyst's machine."""

    public_key: str = Field(max_length=128, description="ed25519:BASE64, from `fedgate analysts keygen`")


class AnalystKeyOut(BaseModel):
    """A registered analyst key."""

    fingerprint: str = Field(description="SHA-256 fingerprint of the key: how rules name the analyst")
    analyst: str = Field(description="the analyst principal the key belongs to")
    public_key: str = Field(description="the public key, ed25519:BASE64")
    registered_by: str = Field(description="the operator who registered it")
    registered_at: str = Field(description="when it was registered (UTC, ISO 8601)")
    revoked_at: str | None = Field(description="when it was revoked, or null while active")


class AnalystKeysOut(BaseModel):
    """Every registered analyst key."""

    keys: list[AnalystKeyOut] = Field(description="the keys, active and revoked")


class RulesOut(BaseModel):
    """Registered pre-approval rules."""

    rules: list[RuleOut] = Field(description="every rule in force")


class ResultOut(BaseModel):
    """A released result: DP values with 95% intervals, and what produced them. No exact counts."""

    query_id: str = Field(description="the query released")
    digest: str = Field(description="SHA-256 of the query's canonical JSON")
    epsilon: str = Field(description="the epsilon the release spent")
    neighbouring: str = Field(
        description="the neighbour relation epsilon holds under: add_remove_household (add or remove one "
        "household, all its members' records in every department) or change_household (docs/privacy.md)"
    )
    released_at: str = Field(description="when it was released (ISO 8601)")
    result: dict[str, Any] = Field(
        description="the release: cells with DP values and 95% intervals, the guarantee, methods and notes"
    )


class EpsilonIn(_In):
    """An epsilon setting (a quota or a cap)."""

    epsilon: EpsilonSetting


class DataYearBudgetOut(BaseModel):
    """One data year's lifetime budget (public amounts: caps and the epsilon of queries, never data)."""

    year: str = Field(description="the data year, YYYY: every query reading a month of it is charged here")
    cap: str = Field(description="the federation's epsilon for this data year, for its lifetime")
    spent: str = Field(description="epsilon charged to this data year so far")
    remaining: str = Field(description="epsilon this data year has left")
    analyst_spent: str | None = Field(description="the asking analyst's share; null for other roles")
    analyst_remaining: str | None = Field(description="left of the analyst's quota; null without one")
    datasets: dict[str, str] = Field(
        {}, description="dataset -> epsilon this year has left under its department's cap"
    )


class BudgetOut(BaseModel):
    """Budgets per data year: the protected unit is a household over a data year."""

    protected_unit: str = Field(
        "household over a data year",
        description="what one unit of epsilon protects: a household over a data year",
    )
    year_cap: str = Field(description="federation epsilon per data year, for its lifetime")
    analyst: str | None = Field(description="the asking analyst; null for other roles")
    analyst_quota: str | None = Field(description="the analyst's epsilon per data year; null without one")
    dataset_caps: dict[str, str] = Field({}, description="dataset -> its department's cap per data year")
    years: list[DataYearBudgetOut] = Field(
        description="every data year charged so far (or the years asked for), oldest first"
    )


class KeyGroupIn(_In):
    """A named key group to register; its name is `definition.name` (household.has_<name> in queries)."""

    definition: MemberGroup = Field(
        description="who is in the group: a dimension's values or a measure's threshold"
    )
    title: str = Field(min_length=1, max_length=200, description="English title")
    title_zh: str = Field(min_length=1, max_length=200, description="Chinese title")
    description: str = Field("", max_length=2_000, description="what the group means, for analysts")


class KeyGroupOut(BaseModel):
    """One version of a named key group: a public definition, never a count of its members."""

    name: str = Field(description="the group's name; queries use it as household.has_<name>")
    version: int = Field(description="versions 1..version exist; older ones stay readable")
    household_attribute: str = Field(description="what household queries group or filter on")
    definition: MemberGroup = Field(description="who is in the group")
    definition_digest: str = Field(description="SHA-256 of the definition's canonical JSON")
    title: str = Field(description="the group's title in English")
    title_zh: str = Field(description="the group's title in Chinese")
    description: str = Field(description="what the group is for")
    created_by: str = Field(description="who registered this version")
    created_at: datetime = Field(description="when this version was registered")
    retired: bool = Field(description="true once retired: readable, but no new query can use it")
    retired_at: datetime | None = Field(description="when it was retired; null while in use")
    retired_by: str | None = Field(description="who retired it; null while in use")


class KeyGroupsOut(BaseModel):
    """Registered key groups."""

    groups: list[KeyGroupOut] = Field(description="the latest version of each group")
