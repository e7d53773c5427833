"""Typed audit events: one class per audited action, built in one place and recorded by the service.

An event is a frozen dataclass whose fields are the entry's fields. A service records it inside the
transaction of the change it describes (`AuditTrail.change()`), or before the change where the change
lives outside the gateway's tables (the budget ledger), never a route after the fact:

    with ctx.audit.change() as change:
        change.conn.execute(...)                          # the state change
        change.record(EndpointAllowed(actor=..., endpoint=url))

Every event carries `action`, `actor` and `outcome` (indexed for the auditor's filters). Only public facts,
digests and DP values go in; a release is referenced by the digest of the stored result, never inlined,
so no release is too large to be audited.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from audit.entries import (
    ACTION_CONNECTOR_CALL,
    ACTION_CONNECTOR_REQUEST,
    ACTION_COSIGNED,
    ACTION_EXTRACT_PLANNED,
    connector_call_event,
)

__all__ = [
    "AnalystKeyRegistered",
    "AnalystKeyRevoked",
    "AuditEvent",
    "BudgetRefused",
    "CheckpointCosigned",
    "ConnectorCall",
    "ConnectorDisabled",
    "ConnectorEnabled",
    "ConnectorRegistered",
    "ConnectorRequest",
    "ConsoleSignedIn",
    "ConsoleSignedOut",
    "DatasetCapChanged",
    "EndpointAllowed",
    "ExtractPlanned",
    "HttpRequest",
    "IndicatorFailed",
    "IndicatorRun",
    "JobCancelled",
    "JobFinished",
    "JobInterrupted",
    "JobSubmitted",
    "KeyGroupRegistered",
    "KeyGroupRetired",
    "MonitoringConfigChanged",
    "QueryApproved",
    "QueryFailed",
    "QueryInterrupted",
    "QueryRejected",
    "QueryReleased",
    "QueryRun",
    "QueryStateRefreshed",
    "QuerySubmitted",
    "QuotaChanged",
    "ReservationReleased",
    "ResultArchived",
    "RuleRegistered",
    "RuleRevoked",
    "ScheduleChanged",
    "ScheduleCreated",
    "ScheduleFired",
    "ScheduleMissed",
    "UnauthenticatedFlood",
    "UserCreated",
    "UserRevoked",
]

GATEWAY = "gateway"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One audited action; subclasses set `action` (and `outcome` when it is not "ok")."""

    action: ClassVar[str]
    outcome: ClassVar[str] = "ok"
    actor: str

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_event(self) -> dict[str, Any]:
        """The JSON object appended to the log."""
        return {"action": self.action, "outcome": self.outcome, **self.fields()}

    def request_field(self, path: str | None) -> str | None:
        """The request field that put the value at `path` of this event (for a 422 naming it)."""
        return path


# --- requests


@dataclasses.dataclass(frozen=True, kw_only=True)
class HttpRequest(AuditEvent):
    """Every HTTP request, allowed or refused, before its response starts (5xx included)."""

    action = "http.request"
    method: str
    path: str
    status: int
    principal: str | None
    role: str | None
    request_id: str | None
    client: str
    latency_ms: float
    error: str | None = None
    """the error code of a refused or failed request"""
    error_type: str | None = None
    """the exception's type, for an unexpected failure (never its message)"""

    def to_event(self) -> dict[str, Any]:
        event = super().to_event()
        event["outcome"] = "ok" if self.status < 400 else "refused" if self.status < 500 else "error"
        return event


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnauthenticatedFlood(AuditEvent):
    """Requests without a valid key past the burst: only a per-source count is kept."""

    action = "http.unauthenticated_flood"
    outcome = "refused"
    client: str
    suppressed: int
    window_seconds: float


# --- registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class EndpointAllowed(AuditEvent):
    action = "endpoint.allowed"
    endpoint: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class EndpointRemoved(AuditEvent):
    action = "endpoint.removed"
    endpoint: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectorRegistered(AuditEvent):
    action = "connector.registered"
    connector: str
    department: str
    endpoint: str
    key_fingerprint: str
    version: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectorEnabled(AuditEvent):
    action = "connector.enabled"
    connector: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectorDisabled(AuditEvent):
    action = "connector.disabled"
    connector: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyGroupRegistered(AuditEvent):
    action = "key_group.registered"
    key_group: str
    version: int
    definition: dict[str, Any]
    definition_digest: str
    title: str
    title_zh: str
    description: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyGroupRetired(AuditEvent):
    action = "key_group.retired"
    key_group: str
    version: int


# --- principals


@dataclasses.dataclass(frozen=True, kw_only=True)
class UserCreated(AuditEvent):
    action = "user.created"
    principal: str
    role: str
    department: str | None
    expires_at: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class UserRevoked(AuditEvent):
    action = "user.revoked"
    principal: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsoleSignedIn(AuditEvent):
    """A browser signed in to the console with a principal's API key; `session` is a public reference
    (the first 16 hex digits of the SHA-256 of the session's hash), never the cookie."""

    action = "console.signed_in"
    principal: str
    role: str
    session: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsoleSignedOut(AuditEvent):
    """A console session ended: `reason` is signed_out, idle or expired."""

    action = "console.signed_out"
    principal: str
    session: str
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnalystKeyRegistered(AuditEvent):
    """The operator registered an analyst's own public key (generated on the analyst's machine)."""

    action = "analyst_key.registered"
    analyst: str
    key_fingerprint: str
    public_key: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnalystKeyRevoked(AuditEvent):
    action = "analyst_key.revoked"
    analyst: str
    key_fingerprint: str


# --- queries, approvals, rules


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuerySubmitted(AuditEvent):
    action = "query.submitted"
    query_id: str
    query_digest: str
    spec: dict[str, Any]
    state: str
    indicator: str | None = None
    analyst_key: str | None = None
    """fingerprint of the analyst key whose signature of the query the gateway verified (None: unsigned)"""

    def request_field(self, path: str | None) -> str | None:
        # The spec is the request body: "spec.purpose" came from the body's "purpose".
        if path is not None and path.startswith("spec."):
            return path.removeprefix("spec.")
        return path


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueryStateRefreshed(AuditEvent):
    """The departments' decisions give a query another state (a rule registered, revoked or expired)."""

    action = "query.state_refreshed"
    query_id: str
    previous: str
    state: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueryApproved(AuditEvent):
    action = "query.approved"
    department: str
    query_id: str
    query_digest: str
    approval_signature: str
    approval_key: str
    epsilon: str
    state: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueryRejected(AuditEvent):
    action = "query.rejected"
    outcome = "refused"
    department: str
    query_id: str
    reason: str
    state: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuleRegistered(AuditEvent):
    action = "rule.registered"
    department: str
    rule: dict[str, Any]
    signature: str
    version: int = 1
    """the version of (department, rule_id) this registration is"""
    replaces: str | None = None
    """SHA-256 of the signed rule version it supersedes, as the new rule itself names it"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuleRevoked(AuditEvent):
    action = "rule.revoked"
    department: str
    rule_id: str
    version: int | None = None
    """the version in force that was revoked (older versions were already superseded)"""


# --- budget


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuotaChanged(AuditEvent):
    action = "quota.changed"
    analyst: str
    epsilon: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetCapChanged(AuditEvent):
    action = "dataset_cap.changed"
    dataset: str
    epsilon: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BudgetRefused(AuditEvent):
    action = "budget.refused"
    outcome = "refused"
    scope: str
    data_year: str | None = None
    requested: str
    remaining: str
    query_id: str | None = None
    indicator: str | None = None
    query_ids: list[str] | None = None


# --- runs


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueryRun(AuditEvent):
    """A run starts (approved -> running); written before anything is reserved."""

    action = "query.run"
    query_id: str
    query_digest: str
    neighbouring: str
    """the neighbour relation the run is charged under (privacy.neighbours)"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueryReleased(AuditEvent):
    """A release, by the digest of the result stored with its charge (re-served from the ledger)."""

    action = "query.released"
    query_id: str
    query_digest: str
    epsilon: str
    result_digest: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueryFailed(AuditEvent):
    action = "query.failed"
    outcome = "failed"
    query_id: str
    reason: str
    charged: bool
    connectors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueryInterrupted(AuditEvent):
    """A run found 'running' at start: its process died; settled by what the ledger shows."""

    action = "query.interrupted"
    outcome = "failed"
    query_id: str
    charged: bool
    state: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReservationReleased(AuditEvent):
    """A reservation that no run used (a pack's query never started) is refunded at start."""

    action = "query.reservation_released"
    query_id: str
    charged: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndicatorRun(AuditEvent):
    action = "indicator.run"
    indicator: str
    query_ids: list[str]
    epsilon: str
    monitoring_version: int
    monitoring_digest: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonitoringConfigChanged(AuditEvent):
    action = "monitoring_config.changed"
    version: int
    config_digest: str
    source: str
    config: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndicatorFailed(AuditEvent):
    action = "indicator.failed"
    outcome = "failed"
    indicator: str
    refunded: list[str]
    reason: str | None = None
    """`preflight`: a connector could not serve its part, found before anything was reserved"""


# --- jobs and schedules


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSubmitted(AuditEvent):
    """A run queued as a job (`principal`: who it runs as; a schedule's named principal for a scheduled
    run); its queries, charges and releases are audited by the runner as for a synchronous run."""

    action = "job.submitted"
    job_id: str
    kind: str
    target: str
    principal: str
    schedule_id: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobCancelled(AuditEvent):
    """A cancel: a queued job stops at once; a running one at its next step, refunded by the refund
    rule where no data had arrived."""

    action = "job.cancelled"
    job_id: str
    state: str
    """the job's state when the cancel was asked for"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobFinished(AuditEvent):
    """A job reached a final state (succeeded, failed or cancelled) with its public error code."""

    action = "job.finished"
    job_id: str
    state: str
    error: str | None = None

    def to_event(self) -> dict[str, Any]:
        event = super().to_event()
        event["outcome"] = "ok" if self.state == "succeeded" else "failed"
        return event


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobInterrupted(AuditEvent):
    """A job found running at start: its process died; its queries are settled by `lifecycle`."""

    action = "job.interrupted"
    outcome = "failed"
    job_id: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleCreated(AuditEvent):
    action = "schedule.created"
    schedule_id: str
    name: str
    pack: str
    period_rule: str
    cron: dict[str, str]
    run_as: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleChanged(AuditEvent):
    """An operator paused, resumed or removed a schedule (`state` is the new one)."""

    action = "schedule.changed"
    schedule_id: str
    state: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleFired(AuditEvent):
    """A schedule's run was submitted as a job (on time, late within the grace period, or by hand)."""

    action = "schedule.fired"
    schedule_id: str
    job_id: str
    period: str
    trigger: str
    """`schedule` (the scheduler, on time or late within the grace period) or `operator` (run by hand)"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleMissed(AuditEvent):
    """A run the gateway was down for past the grace period, or one that could not be submitted (its
    principal revoked, its analyst's jobs at their limit): reported, not run."""

    action = "schedule.missed"
    outcome = "failed"
    schedule_id: str
    scheduled_for: str | None
    reason: str
    """`gateway_down` (past the grace period), or the error code that kept the run from being submitted"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResultArchived(AuditEvent):
    """A scheduled pack's released figures kept in the archive (by the digest of what was stored)."""

    action = "result.archived"
    archive_id: str
    job_id: str
    pack: str
    period: str
    figures_digest: str


# --- connector calls


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractPlanned(AuditEvent):
    """Each planned extract, before the checkpoint it carries is signed: the connector serves only an
    extract whose digest it finds, by an inclusion proof, in that checkpoint."""

    action = ACTION_EXTRACT_PLANNED
    connector: str
    query_id: str
    dataset: str
    extract_digest: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointCosigned(AuditEvent):
    """A connector's cosignature of the checkpoint it witnessed, checked against its pinned key
    (`cosignature_outcome`: ok, invalid, missing); auditors check it again offline."""

    action = ACTION_COSIGNED
    connector: str
    department: str
    query_id: str
    size: int
    checkpoint: str
    cosignature: str | None
    cosignature_outcome: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectorRequest(AuditEvent):
    """Written before a request to a connector is sent, so a gateway dying mid-call still shows it."""

    action = ACTION_CONNECTOR_REQUEST
    connector: str
    path: str
    request_digest: str
    query_id: str
    dataset: str
    checkpoint: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectorCall(AuditEvent):
    """A connector's answer (or failure), in the shape `fedgate audit reconcile` matches."""

    action = ACTION_CONNECTOR_CALL
    connector: str
    path: str
    request_digest: str
    response_digest: str | None
    connector_signature: str | None
    checkpoint: str | None
    call_outcome: str
    query_id: str | None = None
    dataset: str | None = None
    status: int | None = None

    @classmethod
    def from_receipt(
        cls,
        receipt: Mapping[str, str],
        *,
        connector: str,
        path: str,
        query_id: str,
        dataset: str,
        outcome: str,
        status: int | None,
        checkpoint: str | None = None,
    ) -> ConnectorCall:
        """The gateway's entry for one call, from the receipt its connector link returned."""
        return cls(
            actor=GATEWAY,
            connector=connector,
            path=path,
            request_digest=receipt.get("request_digest", ""),
            response_digest=receipt.get("response_digest"),
            connector_signature=receipt.get("connector_signature"),
            checkpoint=checkpoint,
            call_outcome=outcome,
            query_id=query_id,
            dataset=dataset,
            status=status,
        )

    def to_event(self) -> dict[str, Any]:
        return connector_call_event(
            connector=self.connector,
            path=self.path,
            request_digest=self.request_digest,
            response_digest=self.response_digest,
            connector_signature=self.connector_signature,
            checkpoint=self.checkpoint,
            outcome=self.call_outcome,
            query_id=self.query_id,
            dataset=self.dataset,
            actor=self.actor,
            status=self.status,
        )
