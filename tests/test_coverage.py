"""The approval-coverage rule, written once: each way an approval or rule can fail to cover a query is
refused with its reason, and the gateway asks exactly what the connector will check again."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from aggregation.planner import ExtractPlan, Plan
from aggregation.query import Baseline, Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.coverage import Asked, NotCovered, check_cover
from connectors.protocol import (
    DEFAULT_APPROVAL_SECONDS,
    DEFAULT_RULE_SECONDS,
    MAX_APPROVAL_SECONDS,
    MAX_RULE_SECONDS,
    Approval,
    ApprovalRule,
    ApprovedDataset,
    SignedApproval,
    WindowLimits,
)
from connectors.vocabulary import Unit
from gateway.federation import extract_request
from gateway.queries import asked_of

NOW = 1_800_000_000.0
ISSUED = int(NOW) - 3_600
ANA, BO = "a" * 64, "b" * 64  # analysts' key fingerprints


def _query() -> QuerySpec:
    return QuerySpec(
        purpose="household income against last year, for the coverage test",
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=(Term(dataset="tax.wages", measure="wage"),), lower=0, upper=10**6),
        baseline=Baseline(period_start="2024-01", period_end="2024-12", drop_share=Decimal("0.3")),
        group_by=("household.income_trend",),
        statistics=(Statistic(kind=StatisticKind.COUNT),),
        epsilon=Decimal("0.5"),
        analyst_key=ANA,
    )


PART = ExtractPlan(
    connector="tax", department="tax", dataset="wages", measures=("wage",), dimensions=(), baseline=True
)


def _asked(**changes: Any) -> Asked:
    q = _query()
    plan = Plan(
        query=q,
        extracts=(PART,),
        spine=None,
        groups=(),
        filters=(),
        departments=("tax",),
        unit_multiplicity=1,
    )
    asked = asked_of(q, plan, "tax")
    return Asked(**{**asked.__dict__, **changes})


def _approval(**changes: Any) -> Approval:
    q = _query()
    fields: dict[str, Any] = {
        "department": "tax",
        "query_id": q.query_id,
        "query_digest": q.digest,
        "unit": Unit.HOUSEHOLD,
        "period_start": "2025-01",
        "period_end": "2025-12",
        "baseline_start": "2024-01",
        "baseline_end": "2024-12",
        "datasets": (ApprovedDataset(dataset="wages", measures=("wage",)),),
        "epsilon": Decimal("0.5"),
        "issued_at": ISSUED,
    }
    return Approval(**{**fields, **changes})


def _rule(**changes: Any) -> ApprovalRule:
    fields: dict[str, Any] = {
        "department": "tax",
        "rule_id": "rule-0001",
        "datasets": (ApprovedDataset(dataset="wages", measures=("wage",)),),
        "units": (Unit.HOUSEHOLD,),
        "max_epsilon_per_query": Decimal(1),
        "analysts": (ANA,),
        "window": WindowLimits(max_queries=10, max_epsilon=Decimal(5)),
        "per_analyst": WindowLimits(max_queries=10, max_epsilon=Decimal(5)),
        "issued_at": ISSUED,
    }
    return ApprovalRule(**{**fields, **changes})


def test_a_matching_approval_and_rule_cover_the_query() -> None:
    check_cover(_approval(), _asked(), now=NOW)
    check_cover(_rule(), _asked(), now=NOW)
    check_cover(_rule(analysts=("*",), expires_at=int(NOW) + 1), _asked(analyst=None), now=NOW)
    # Unset, the expiry is the short default after issue, and it is always signed.
    assert _approval().expires_at == ISSUED + DEFAULT_APPROVAL_SECONDS
    assert _rule().expires_at == ISSUED + DEFAULT_RULE_SECONDS
    assert b'"expires_at"' in _approval().signing_bytes() and b'"expires_at"' in _rule().signing_bytes()


@pytest.mark.parametrize(
    ("build", "maximum"),
    [(_approval, MAX_APPROVAL_SECONDS), (_rule, MAX_RULE_SECONDS)],
)
def test_an_expiry_beyond_the_maximum_or_before_issue_is_refused(build: Any, maximum: int) -> None:
    build(expires_at=ISSUED + maximum)
    for expires_at in (ISSUED + maximum + 1, ISSUED, ISSUED - 1):
        with pytest.raises(ValueError, match=r"expires before it is issued|may last at most"):
            build(expires_at=expires_at)


@pytest.mark.parametrize(
    ("cover", "reason"),
    [
        (_approval(department="social"), "another department's"),
        (_approval(query_digest="0" * 64), "another query"),
        (_approval(expires_at=int(NOW) - 1, issued_at=int(NOW) - 10), "expired"),
        (_approval(issued_at=int(NOW) + 3_600), "issued in the future"),
        (_approval(unit=Unit.PERSON), "another unit"),
        (_approval(period_end="2025-11"), "another period range"),
        (_approval(baseline_start=None, baseline_end=None), "another baseline"),
        (_approval(epsilon=Decimal("0.25")), "another epsilon"),
        (_approval(datasets=(ApprovedDataset(dataset="pensions", measures=("wage",)),)), "dataset wages"),
        (_approval(datasets=(ApprovedDataset(dataset="wages"),)), "fields"),
        (_rule(department="social"), "another department's"),
        (_rule(expires_at=int(NOW) - 1, issued_at=int(NOW) - 10), "expired"),
        (_rule(issued_at=int(NOW) + 3_600), "issued in the future"),
        (_rule(units=(Unit.PERSON,)), "household queries"),
        (_rule(analysts=(BO,)), "analyst"),
        (_rule(max_epsilon_per_query=Decimal("0.4")), "maximum per query"),
        (_rule(datasets=(ApprovedDataset(dataset="wages", dimensions=("sex",)),)), "fields"),
    ],
)
def test_each_way_of_not_covering_is_refused_with_its_reason(
    cover: Approval | ApprovalRule, reason: str
) -> None:
    with pytest.raises(NotCovered) as err:
        check_cover(cover, _asked(), now=NOW)
    assert reason in err.value.reason


def test_the_gateway_asks_what_the_connector_checks_again() -> None:
    q = _query()
    signed = SignedApproval(approval=_approval(), key_fingerprint="0" * 64, signature="")
    request = extract_request(PART, q, signed, epoch=1)
    # The connector's analyst is the fingerprint whose signature it verified, never a gateway's word.
    assert Asked.of_request(request, "tax", ANA) == _asked()


def test_a_rule_names_analysts_by_key_fingerprint_only() -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        _rule(analysts=("analyst",))
    assert _rule(analysts=("*",)).admits(None) and not _rule().admits(None) and _rule().admits(ANA)
