"""The approval-coverage rule, written once: does a department's approval, or its standing rule, cover
what a query asks of that department?

    Asked                    what is asked of one department: the query's identity, unit, periods,
                             epsilon, the analyst's verified key fingerprint and the datasets with their
                             fields
    check_cover(cover, asked)  None, or `NotCovered` with the public reason

The gateway asks before it sends (for every part of a query that department serves), the connector asks
again when a request arrives (for the one dataset in it), so the two can never disagree about what a
signature allows. Signatures are checked separately, by whoever holds the department's public key: this
is only about what a verified approval or rule says.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from connectors.protocol import Approval, ApprovalRule, ApprovedDataset, ExtractRequest, check_current
from connectors.vocabulary import Unit

__all__ = ["Asked", "NotCovered", "check_cover"]


class NotCovered(Exception):
    """The approval or rule does not cover what is asked; `reason` is public (no data in it)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Asked:
    """What a query asks of one department."""

    department: str
    query_id: str
    query_digest: str
    unit: Unit
    period_start: str | None
    period_end: str | None
    baseline_start: str | None
    baseline_end: str | None
    epsilon: Decimal
    analyst: str | None
    """the fingerprint of the analyst's key whose signature of the query verified; None if unsigned"""
    datasets: tuple[ApprovedDataset, ...]

    @classmethod
    def of_request(cls, request: ExtractRequest, department: str, analyst: str | None) -> Asked:
        """What one extract request asks of the connector's department; `analyst` is the fingerprint of
        the key whose query signature the connector verified (never a name the gateway asserts)."""
        return cls(
            department=department,
            query_id=request.query_id,
            query_digest=request.query_digest,
            unit=request.unit,
            period_start=request.period_start,
            period_end=request.period_end,
            baseline_start=request.baseline_start,
            baseline_end=request.baseline_end,
            epsilon=request.epsilon,
            analyst=analyst,
            datasets=(
                ApprovedDataset(
                    dataset=request.dataset,
                    measures=request.measures,
                    dimensions=request.dimensions,
                    household=request.household,
                ),
            ),
        )


def check_cover(cover: Approval | ApprovalRule, asked: Asked, *, now: float | None = None) -> None:
    """Raise `NotCovered` unless `cover` (already verified as the department's) covers `asked`."""
    moment = time.time() if now is None else now
    if isinstance(cover, Approval):
        _check_approval(cover, asked, moment)
    else:
        _check_rule(cover, asked, moment)
    _check_datasets(cover, asked.datasets)


def _check_approval(approval: Approval, asked: Asked, now: float) -> None:
    if approval.department != asked.department:
        raise NotCovered("the approval is another department's")
    if approval.query_id != asked.query_id or approval.query_digest != asked.query_digest:
        raise NotCovered("the approval is for another query")
    stale = check_current(approval.issued_at, approval.expires_at, "approval", now=now)
    if stale is not None:
        raise NotCovered(stale)
    if approval.unit is not asked.unit:
        raise NotCovered("the approval is for another unit")
    if (approval.period_start, approval.period_end) != (asked.period_start, asked.period_end):
        raise NotCovered("the approval is for another period range")
    # The department signs the baseline too: exactly the asked baseline (or none) is approved.
    if (approval.baseline_start, approval.baseline_end) != (asked.baseline_start, asked.baseline_end):
        raise NotCovered("the approval is for another baseline period (or none)")
    if approval.epsilon != asked.epsilon:
        raise NotCovered("the approval is for another epsilon")


def _check_rule(rule: ApprovalRule, asked: Asked, now: float) -> None:
    # A rule states no period, so it covers any period range and any baseline inside its other limits.
    if rule.department != asked.department:
        raise NotCovered("the rule is another department's")
    stale = check_current(rule.issued_at, rule.expires_at, "rule", now=now)
    if stale is not None:
        raise NotCovered(stale)
    if asked.unit not in rule.units:
        raise NotCovered(f"the rule does not cover {asked.unit.value} queries")
    if not rule.admits(asked.analyst):
        raise NotCovered("the rule does not cover this analyst")
    if asked.epsilon > rule.max_epsilon_per_query:
        raise NotCovered("epsilon is above the rule's maximum per query")


def _check_datasets(cover: Approval | ApprovalRule, datasets: Iterable[ApprovedDataset]) -> None:
    kind = "approval" if isinstance(cover, Approval) else "rule"
    for asked in datasets:
        scope = cover.covers(asked.dataset)
        if scope is None:
            raise NotCovered(f"the {kind} does not cover dataset {asked.dataset}")
        if not set(asked.measures) <= set(scope.measures) or not set(asked.dimensions) <= set(
            scope.dimensions
        ):
            raise NotCovered(f"the request asks for fields the {kind} does not cover")
        # The household mapping links persons into households: it is covered only when named.
        if asked.household and not scope.household:
            raise NotCovered(f"the {kind} does not cover the household mapping of dataset {asked.dataset}")
