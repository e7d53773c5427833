"""An extract is bound to one query (fedgate/2): each refusal at the connector, and what it counted.

Every request here is signed with the gateway's own key, as a compromised gateway would sign it, so the
refusals are the department's connector's own: a digest that is not the carried query's, a field or the
household mapping its plan of the query does not need or its scope does not cover, an epsilon below the
public floor or with too many places, a standing rule's window limits (queries, epsilon, per analyst), and
a request in the previous protocol version. After each refusal the connector's state shows nothing counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pandas as pd
import pytest
import yaml
from connector_fixture import Department, make_department, signed_call
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connectors.process import RunningConnector, start_connector
from connectors.protocol import (
    PROTOCOL_VERSION,
    ApprovalRule,
    ApprovedDataset,
    ExtractRequest,
    SignedRule,
    WindowLimits,
    canonical_json,
    fingerprint,
    sign_rule,
)
from connectors.service import budget_window
from connectors.state import ConnectorState

# Analysts' own keys: rules name them by fingerprint, and each signs the queries asked in its name.
ALICE, BOB, MALLORY = (Ed25519PrivateKey.generate() for _ in range(3))


@pytest.fixture(scope="module")
def tax(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Department, RunningConnector]]:
    # The window-limit tests use rules for every analyst ("*"), which this department accepts.
    dept = make_department(
        tmp_path_factory.mktemp("bound"), "sqlite", epsilon_window="100", accept_any_analyst_rules=True
    )
    conn = start_connector(dept.config_path)
    yield dept, conn
    conn.stop()


def _state(dept: Department) -> ConnectorState:
    return ConnectorState(dept.directory / "state", read_only=True)


def _counted(dept: Department) -> tuple[Decimal, int]:
    """(epsilon counted this window, extracts served) as the connector's own state holds them."""
    state = _state(dept)
    try:
        served = state._db.execute("SELECT COUNT(*) FROM served").fetchone()[0]
        return state.spent(budget_window()), int(served)
    finally:
        state.close()


def _send(dept: Department, conn: RunningConnector, req: ExtractRequest) -> httpx.Response:
    return _send_body(dept, conn, req.body(), req.query_id)


def _send_body(dept: Department, conn: RunningConnector, body: bytes, query_id: str) -> httpx.Response:
    return signed_call(
        conn.url, "/v1/extract", key=dept.gateway_key, connector=dept.name, body=body, query_id=query_id
    )


def _refused(r: httpx.Response, status: int, code: str, *words: str) -> None:
    assert (r.status_code, r.json()["error"]) == (status, code), r.text
    for word in words:
        assert word in r.json()["message"], (word, r.json()["message"])


def test_the_honest_request_is_served_and_counted_once(tax: tuple[Department, RunningConnector]) -> None:
    dept, conn = tax
    before = _counted(dept)
    r = _send(dept, conn, dept.request("bind-honest"))
    assert r.status_code == 200, r.text
    assert _counted(dept) == (before[0] + Decimal("0.5"), before[1] + 1)


def test_a_digest_or_id_that_is_not_the_carried_querys_is_refused(
    tax: tuple[Department, RunningConnector],
) -> None:
    dept, conn = tax
    before = _counted(dept)
    honest = dept.request("bind-digest")
    # An invented query id, with the approval re-targeted to it: the id is the query's digest, so no.
    invented = "q-" + "0" * 32
    _refused(
        _send(dept, conn, dept.request("bind-digest", query_id=invented)), 403, "query_mismatch", "digest"
    )
    other_digest = "f" * 64
    _refused(_send(dept, conn, dept.request("bind-digest", query_digest=other_digest)), 403, "query_mismatch")
    # The loose fields must say what the carried query says.
    for change in ({"period_start": "2025-02"}, {"unit": "household"}):
        body = json.loads(honest.body())
        body.update(change)
        _refused(_send_body(dept, conn, canonical_json(body), honest.query_id), 403, "query_mismatch")
    assert _counted(dept) == before


def test_a_field_the_plan_does_not_need_is_refused_even_when_the_approval_covers_it(
    tax: tuple[Department, RunningConnector],
) -> None:
    dept, conn = tax
    before = _counted(dept)
    # The query groups wages by district only; the gateway also asks for sex and birth year band, and
    # the department's approval (signed for that query) even covers them.
    query = dept.query("bind-extra", dimensions=("district",))
    approval = dept.approval("bind-extra", query=query)
    wider = dept.request("bind-extra", query=query, approval=approval)
    r = _send(dept, conn, wider)
    _refused(r, 403, "not_in_plan", "does not need field sex")
    # A measure of the dataset that the query's measure does not name, likewise.
    only_wage = dept.query("bind-extra-2", measures=("wage_income",), dimensions=())
    r = _send(
        dept,
        conn,
        dept.request(
            "bind-extra-2",
            query=only_wage,
            approval=dept.approval("bind-extra-2", query=only_wage),
            dimensions=(),
        ),
    )
    _refused(r, 403, "not_in_plan", "months_paid")
    # Asking less than the plan needs is no bargain either: exactly the plan is served.
    fewer = dept.request(
        "bind-extra", query=query, approval=approval, dimensions=(), measures=("wage_income",)
    )
    _refused(_send(dept, conn, fewer), 403, "not_in_plan", "exactly")
    assert _counted(dept) == before
    assert (
        _send(dept, conn, dept.request("bind-extra", query=query, dimensions=("district",))).status_code
        == 200
    )


def test_epsilon_below_the_floor_or_with_too_many_places_is_refused_before_anything_is_counted(
    tax: tuple[Department, RunningConnector],
) -> None:
    dept, conn = tax
    before = _counted(dept)
    honest = dept.request("bind-epsilon")
    for epsilon in ("1E-18", "0.0001", "0.5000000001", "0.5000000000"):
        body = json.loads(honest.body())
        body["epsilon"] = epsilon
        body["approval"]["approval"]["epsilon"] = epsilon
        body["query"]["epsilon"] = epsilon
        r = _send_body(dept, conn, canonical_json(body), honest.query_id)
        _refused(r, 422, "invalid_request", "epsilon")
    assert _counted(dept) == before


def test_a_fedgate_1_request_is_refused_with_the_version_to_upgrade_to(
    tax: tuple[Department, RunningConnector],
) -> None:
    dept, conn = tax
    before = _counted(dept)
    req = dept.request("bind-v1")
    r = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector=dept.name,
        body=req.body(),
        query_id=req.query_id,
        protocol="fedgate/1",
    )
    _refused(r, 403, "unsupported_protocol", "fedgate/1", f"upgrade the gateway to {PROTOCOL_VERSION}")
    # A fedgate/1 body under fedgate/2 headers is not taken as one either.
    body = json.loads(req.body())
    body["protocol"] = "fedgate/1"
    _refused(_send_body(dept, conn, canonical_json(body), req.query_id), 422, "invalid_request", "protocol")
    assert _counted(dept) == before


def _rule(dept: Department, rule_id: str, **limits: object) -> SignedRule:
    fields: dict[str, object] = {
        "department": dept.name,
        "rule_id": rule_id,
        "datasets": (
            ApprovedDataset(
                dataset="wages",
                measures=("wage_income", "months_paid"),
                dimensions=("district", "sex", "birth_year_band"),
            ),
        ),
        "units": ("person",),
        "max_epsilon_per_query": Decimal("0.5"),
        "analysts": ("*",),
        "window": WindowLimits(max_queries=100, max_epsilon=Decimal(50)),
        **limits,
    }
    return sign_rule(dept.approval_key, ApprovalRule.model_validate(fields))


def _under_rule(
    dept: Department, conn: RunningConnector, label: str, rule: SignedRule, **kw: object
) -> httpx.Response:
    return _send(dept, conn, dept.request(label, approval=None, rule=rule, **kw))


def _use(dept: Department, rule_id: str, analyst: str | None = None) -> tuple[int, Decimal]:
    state = _state(dept)
    try:
        return state.rule_use(budget_window(), rule_id, analyst)
    finally:
        state.close()


def test_a_rule_opens_at_most_its_queries_per_window(tax: tuple[Department, RunningConnector]) -> None:
    dept, conn = tax
    rule = _rule(dept, "two-queries", window=WindowLimits(max_queries=2, max_epsilon=Decimal(50)))
    assert _under_rule(dept, conn, "rule-q-1", rule).status_code == 200
    assert _under_rule(dept, conn, "rule-q-2", rule).status_code == 200
    # A retry of a served query is its stored answer, not a third query.
    assert _under_rule(dept, conn, "rule-q-1", rule).status_code == 200
    before = _counted(dept)
    r = _under_rule(dept, conn, "rule-q-3", rule)
    _refused(r, 403, "quota_exceeded", "rule two-queries allows 2 queries")
    assert _counted(dept) == before and _use(dept, "two-queries") == (2, Decimal(1))


def test_a_rule_opens_at_most_its_epsilon_per_window(tax: tuple[Department, RunningConnector]) -> None:
    dept, conn = tax
    rule = _rule(dept, "one-epsilon", window=WindowLimits(max_queries=100, max_epsilon=Decimal(1)))
    assert _under_rule(dept, conn, "rule-e-1", rule).status_code == 200
    assert _under_rule(dept, conn, "rule-e-2", rule, epsilon=Decimal("0.4")).status_code == 200
    before = _counted(dept)
    r = _under_rule(dept, conn, "rule-e-3", rule)
    _refused(r, 403, "quota_exceeded", "allows epsilon 1", "requested 0.5", "remaining 0.1")
    assert _counted(dept) == before and _use(dept, "one-epsilon") == (2, Decimal("0.9"))
    # What still fits is served.
    assert _under_rule(dept, conn, "rule-e-4", rule, epsilon=Decimal("0.1")).status_code == 200


def test_a_rule_naming_analysts_bounds_each_of_them(tax: tuple[Department, RunningConnector]) -> None:
    dept, conn = tax
    rule = _rule(
        dept,
        "per-analyst",
        analysts=(fingerprint(ALICE.public_key()), fingerprint(BOB.public_key())),
        per_analyst=WindowLimits(max_queries=1, max_epsilon=Decimal(5)),
    )
    alice = fingerprint(ALICE.public_key())
    assert _under_rule(dept, conn, "rule-a-1", rule, analyst=ALICE).status_code == 200
    before = _counted(dept)
    r = _under_rule(dept, conn, "rule-a-2", rule, analyst=ALICE)
    _refused(r, 403, "quota_exceeded", f"for analyst {alice} allows 1 queries")
    assert _counted(dept) == before and _use(dept, "per-analyst", alice) == (1, Decimal("0.5"))
    # Another named analyst has her own share; an analyst the rule does not name has none.
    assert _under_rule(dept, conn, "rule-a-3", rule, analyst=BOB).status_code == 200
    _refused(_under_rule(dept, conn, "rule-a-4", rule, analyst=MALLORY), 403, "not_approved", "analyst")
    assert _use(dept, "per-analyst") == (2, Decimal(1))


@pytest.fixture(scope="module")
def register(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Department, RunningConnector]]:
    """A department whose dataset maps persons to households (the register's mapping)."""
    dept = make_department(
        tmp_path_factory.mktemp("register"),
        "csv",
        name="register",
        epsilon_window="100",
        accept_any_analyst_rules=True,
    )
    csv = dept.directory / "files" / "wages.csv"
    frame = pd.read_csv(csv, dtype=str)
    frame["hh"] = ["H" + str(i % 3) for i in range(len(frame))]
    frame.to_csv(csv, index=False)
    cfg = yaml.safe_load(dept.config_path.read_text())
    cfg["datasets"][0]["household"] = {"column": "hh"}
    dept.config_path.write_text(yaml.safe_dump(cfg))
    conn = start_connector(dept.config_path)
    yield dept, conn
    conn.stop()


def test_the_household_mapping_is_served_only_when_planned_and_covered(
    register: tuple[Department, RunningConnector], tax: tuple[Department, RunningConnector]
) -> None:
    dept, conn = register
    before = _counted(dept)
    # A person query over the register needs the mapping (the member cap counts persons per household);
    # an approval that does not name it does not cover it.
    query = dept.query("hh-1", dimensions=("district",))
    uncovered = dept.approval("hh-1", query=query, dimensions=("district",), household=False)
    r = _send(
        dept,
        conn,
        dept.request("hh-1", query=query, approval=uncovered, dimensions=("district",), household=True),
    )
    _refused(r, 403, "not_approved", "household mapping")
    # Leaving the mapping out is not what the plan needs either.
    covered = dept.approval("hh-1", query=query, dimensions=("district",), household=True)
    r = _send(dept, conn, dept.request("hh-1", query=query, approval=covered, dimensions=("district",)))
    _refused(r, 403, "not_in_plan", "household mapping")
    assert _counted(dept) == before
    r = _send(
        dept,
        conn,
        dept.request("hh-1", query=query, approval=covered, dimensions=("district",), household=True),
    )
    assert r.status_code == 200, r.text
    # A dataset that is not the register never serves a household token, whatever is signed.
    tax_dept, tax_conn = tax
    before = _counted(tax_dept)
    r = _send(tax_dept, tax_conn, tax_dept.request("hh-2", household=True))
    assert r.status_code in (403, 422) and r.json()["error"] in ("invalid_request", "not_in_plan")
    assert "household mapping" in r.json()["message"]
    assert _counted(tax_dept) == before


def test_a_rule_covers_the_household_mapping_only_when_it_names_it(
    register: tuple[Department, RunningConnector],
) -> None:
    dept, conn = register
    before = _counted(dept)
    scope = {"dataset": "wages", "measures": ("wage_income", "months_paid"), "dimensions": ("district",)}
    silent = _rule(dept, "hh-silent", datasets=(ApprovedDataset(**scope),))
    query = dept.query("hh-rule", dimensions=("district",))
    r = _send(
        dept,
        conn,
        dept.request(
            "hh-rule", query=query, approval=None, rule=silent, dimensions=("district",), household=True
        ),
    )
    _refused(r, 403, "not_approved", "household mapping")
    assert _counted(dept) == before and _use(dept, "hh-silent") == (0, Decimal(0))
    named = _rule(dept, "hh-named", datasets=(ApprovedDataset(**scope, household=True),))
    r = _send(
        dept,
        conn,
        dept.request(
            "hh-rule", query=query, approval=None, rule=named, dimensions=("district",), household=True
        ),
    )
    assert r.status_code == 200, r.text
    assert _use(dept, "hh-named") == (1, Decimal("0.5"))


def test_a_connector_without_this_query_in_its_schema_serves_nothing(
    tax: tuple[Department, RunningConnector],
) -> None:
    dept, conn = tax
    before = _counted(dept)
    # A query over another department's dataset only, sent to tax with tax's own approval of it.
    query = dept.query("bind-elsewhere").model_copy()
    elsewhere = type(query).model_validate(
        {
            **query.model_dump(mode="json"),
            "measure": {
                "terms": [{"dataset": "social.pensions", "measure": "pension"}],
                "lower": 0,
                "upper": 10,
            },
            "group_by": [],
        }
    )
    r = _send(
        dept,
        conn,
        dept.request("bind-elsewhere", query=elsewhere, approval=dept.approval("x", query=elsewhere)),
    )
    _refused(r, 403, "not_in_plan", "reads nothing of dataset wages")
    assert _counted(dept) == before
