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
    status: Literal["ok"] = "ok"


class MeOut(BaseModel):
    name: str
    role: str
    department: str | None
    expires_at: str


class EndpointIn(_In):
    url: str = Field(max_length=512)


class EndpointsOut(BaseModel):
    endpoints: list[str]


class ConnectorIn(_In):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    endpoint: str = Field(max_length=512)
    key_fingerprint: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the connector's public key"
    )


class ConnectorOut(BaseModel):
    name: str
    department: str
    endpoint: str
    key_fingerprint: str
    version: int
    enabled: bool


class ConnectorsOut(BaseModel):
    connectors: list[ConnectorOut]


class CatalogOut(BaseModel):
    """Public policy only: datasets, measures with bounds, dimensions with domains; never a count."""

    connectors: list[ConnectorSchema]
    household_attributes: list[str]
    notes: list[str]


class DecisionOut(BaseModel):
    department: str
    decision: str
    decided_by: str


class QueryOut(BaseModel):
    id: str
    digest: str
    state: str
    analyst: str
    error_code: str | None
    spec: dict[str, Any]
    departments: list[str] = []
    required_approvals: dict[str, list[ApprovedDataset]] = {}
    covered_by: dict[str, str] = Field({}, description="department -> 'approval' or 'rule:<id>'")
    decisions: list[DecisionOut] = []


class QueriesOut(BaseModel):
    queries: list[QueryOut]


class RejectionIn(_In):
    reason: str = Field(min_length=3, max_length=1_000)


class RuleOut(BaseModel):
    rule_id: str
    department: str
    units: list[str]
    max_epsilon_per_query: Decimal
    analysts: list[str]
    datasets: list[ApprovedDataset]
    issued_at: int
    expires_at: int
    digest: str = Field(description="SHA-256 of the signed rule: what a replacement or revocation names")
    replaces: str | None = None


class AnalystKeyIn(BaseModel):
    public_key: str = Field(max_length=128, description="ed25519:BASE64, from `fedgate analysts keygen`")


class AnalystKeyOut(BaseModel):
    fingerprint: str
    analyst: str
    public_key: str
    registered_by: str
    registered_at: str
    revoked_at: str | None


class AnalystKeysOut(BaseModel):
    keys: list[AnalystKeyOut]


class RulesOut(BaseModel):
    rules: list[RuleOut]


class ResultOut(BaseModel):
    """A released result: DP values with 95% intervals, and what produced them. No exact counts."""

    query_id: str
    digest: str
    epsilon: str
    neighbouring: str = Field(
        description="the neighbour relation epsilon holds under: add_remove_household (add or remove one "
        "household, all its members' records in every department) or change_household (docs/privacy.md)"
    )
    released_at: str
    result: dict[str, Any]


class EpsilonIn(_In):
    epsilon: EpsilonSetting


class DataYearBudgetOut(BaseModel):
    """One data year's lifetime budget (public amounts: caps and the epsilon of queries, never data)."""

    year: str = Field(description="the data year, YYYY: every query reading a month of it is charged here")
    cap: str
    spent: str
    remaining: str
    analyst_spent: str | None = Field(description="the asking analyst's share; null for other roles")
    analyst_remaining: str | None = Field(description="left of the analyst's quota; null without one")
    datasets: dict[str, str] = Field(
        {}, description="dataset -> epsilon this year has left under its department's cap"
    )


class BudgetOut(BaseModel):
    """Budgets per data year: the protected unit is a household over a data year."""

    protected_unit: str = "household over a data year"
    year_cap: str = Field(description="federation epsilon per data year, for its lifetime")
    analyst: str | None
    analyst_quota: str | None = Field(description="the analyst's epsilon per data year; null without one")
    dataset_caps: dict[str, str] = Field({}, description="dataset -> its department's cap per data year")
    years: list[DataYearBudgetOut] = Field(
        description="every data year charged so far (or the years asked for), oldest first"
    )


class KeyGroupIn(_In):
    """A named key group to register; its name is `definition.name` (household.has_<name> in queries)."""

    definition: MemberGroup
    title: str = Field(min_length=1, max_length=200, description="English title")
    title_zh: str = Field(min_length=1, max_length=200, description="Chinese title")
    description: str = Field("", max_length=2_000, description="what the group means, for analysts")


class KeyGroupOut(BaseModel):
    """One version of a named key group: a public definition, never a count of its members."""

    name: str
    version: int = Field(description="versions 1..version exist; older ones stay readable")
    household_attribute: str = Field(description="what household queries group or filter on")
    definition: MemberGroup
    definition_digest: str = Field(description="SHA-256 of the definition's canonical JSON")
    title: str
    title_zh: str
    description: str
    created_by: str
    created_at: datetime
    retired: bool
    retired_at: datetime | None
    retired_by: str | None


class KeyGroupsOut(BaseModel):
    groups: list[KeyGroupOut]
