"""The connector as a real uvicorn process on loopback, over every source kind."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from connector_fixture import (
    EXPECTED,
    PERSON_A,
    RAW_FORMS,
    Department,
    make_department,
    signed_call,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dbservers import mariadb_url, postgres_url  # noqa: F401 (fixtures)

from connectors.config import ListenSpec, Unit
from connectors.federation_keys import load_keyring
from connectors.ids import resident_attributes
from connectors.process import RunningConnector, start_connector
from connectors.protocol import (
    BASELINE_SUFFIX,
    TOKEN_COLUMN,
    Approval,
    ApprovalRule,
    ApprovedDataset,
    ConnectorSchema,
    Revocation,
    SignatureError,
    SignedApproval,
    SignedRule,
    TokenSpec,
    WindowLimits,
    canonical_json,
    fingerprint,
    sign_approval,
    sign_revocation,
    sign_rule,
    verify_approval,
)
from connectors.query import Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.state import ConnectorState
from gateway.federation import AnswerUnverified, ConnectorLink


def _client(dept: Department, conn: RunningConnector) -> ConnectorLink:
    from connectors.config import load_config
    from connectors.protocol import load_private_key

    cfg = load_config(dept.config_path).config
    pinned = load_private_key(cfg.signing_key_file.read_bytes()).public_key()
    return ConnectorLink(conn.url, connector=dept.name, gateway_key=dept.gateway_key, connector_key=pinned)


def _token_of(dept: Department, query_id: str, nid: str) -> bytes:
    keyring = load_keyring(dept.keyring_path)
    tok = keyring.tokenizer(
        epoch=keyring.current_epoch,
        suite=TokenSpec(epoch=0).suite,
        entity_kind="person",
        query_id=dept.qid(query_id),
    )
    return tok.token(nid)


def _check_extract(dept: Department, conn: RunningConnector) -> None:
    """One extract must hold exactly one clipped row per valid person, with public-domain codes."""
    with _client(dept, conn) as client:
        schema = client.schema()
        table, _ = client.extract(dept.request("q-kind-check-1"))
    assert [d.name for d in schema.datasets] == ["wages"]
    rows = {r[TOKEN_COLUMN]: r for r in table.to_pylist()}
    assert len(rows) == len(EXPECTED)
    for nid, (wage, months) in EXPECTED.items():
        row = rows[_token_of(dept, "q-kind-check-1", nid)]
        assert (row["wage_income"], row["months_paid"]) == (wage, months)
        attrs = resident_attributes(nid)
        assert row["sex"] == attrs.sex and row["birth_year_band"] == attrs.birth_year_band
    districts = sorted(r["district"] or "-" for r in rows.values())
    assert districts == ["-", "A", "B"]  # the out-of-domain code is withheld, not passed on


@pytest.fixture(scope="module")
def sqlite_dept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Department, RunningConnector]]:
    # A window large enough for every extract of this module (each query is its own, bound by digest).
    dept = make_department(tmp_path_factory.mktemp("sqlite"), "sqlite", epsilon_window="100")
    conn = start_connector(dept.config_path)
    yield dept, conn
    conn.stop()


@pytest.mark.parametrize("kind", ["sqlite", "parquet", "csv"])
def test_extract_over_embedded_sources(tmp_path: Path, kind: str) -> None:
    dept = make_department(tmp_path, kind)
    conn = start_connector(dept.config_path)
    try:
        _check_extract(dept, conn)
    finally:
        conn.stop()


@pytest.mark.postgres
def test_extract_over_postgresql(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    dept = make_department(tmp_path, "postgres", db_url=postgres_url)
    conn = start_connector(dept.config_path)
    try:
        _check_extract(dept, conn)
    finally:
        conn.stop()


@pytest.mark.mariadb
def test_extract_over_mariadb(tmp_path: Path, mariadb_url: str) -> None:  # noqa: F811
    dept = make_department(tmp_path, "mariadb", db_url=mariadb_url)
    conn = start_connector(dept.config_path)
    try:
        _check_extract(dept, conn)
    finally:
        conn.stop()


def test_schema_is_signed_and_carries_no_counts(sqlite_dept: tuple[Department, RunningConnector]) -> None:
    dept, conn = sqlite_dept
    with _client(dept, conn) as client:
        schema = client.schema()
    assert isinstance(schema, ConnectorSchema)
    wages = schema.datasets[0]
    assert {m.name: (m.lower, m.upper) for m in wages.measures}["wage_income"] == (0, 100_000)
    assert {d.name: d.domain for d in wages.dimensions}["district"] == ("A", "B")
    text = schema.model_dump_json()
    assert "rows" not in text and "count" not in text.replace('"rollup":"count"', "")
    # A client that pins another key refuses the answer.
    wrong = Ed25519PrivateKey.generate().public_key()
    with (
        ConnectorLink(
            conn.url, connector=dept.name, gateway_key=dept.gateway_key, connector_key=wrong
        ) as bad,
        pytest.raises(AnswerUnverified, match="bad_signature"),
    ):
        bad.schema()


def test_same_person_same_token_across_connectors_and_not_across_queries(tmp_path: Path) -> None:
    first = make_department(tmp_path / "one", "sqlite", name="tax")
    keyring = first.keyring_path.read_text()
    import json

    second = make_department(
        tmp_path / "two", "csv", name="social", keyring_doc=json.loads(keyring), gateway_key=first.gateway_key
    )
    a, b = start_connector(first.config_path), start_connector(second.config_path)
    try:
        with _client(first, a) as ca, _client(second, b) as cb:
            # One query over both departments' wages: each connector serves its own part of it.
            both = QuerySpec(
                purpose="tokens of one query link across departments",
                unit=Unit.PERSON,
                period_start="2025-01",
                period_end="2025-12",
                measure=Measure(
                    terms=(
                        Term(dataset="tax.wages", measure="wage_income"),
                        Term(dataset="social.wages", measure="wage_income"),
                    ),
                    lower=0,
                    upper=10_000_000,
                ),
                statistics=(Statistic(kind=StatisticKind.SUM),),
                epsilon=Decimal("0.5"),
                member_cap=1,
            )
            part = {"query": both, "measures": ("wage_income",), "dimensions": ()}
            t1 = set(ca.extract(first.request("q-link-0001", **part))[0].column(TOKEN_COLUMN).to_pylist())
            t2 = set(cb.extract(second.request("q-link-0001", **part))[0].column(TOKEN_COLUMN).to_pylist())
            t3 = set(ca.extract(first.request("q-link-0002"))[0].column(TOKEN_COLUMN).to_pylist())
    finally:
        a.stop()
        b.stop()
    assert t1 == t2 and len(t1) == len(EXPECTED)
    assert not t1 & t3


def test_no_raw_id_in_any_response_byte(sqlite_dept: tuple[Department, RunningConnector]) -> None:
    dept, conn = sqlite_dept
    bodies = []
    req = dept.request("q-scan-bytes-1")
    r = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector=dept.name,
        body=req.body(),
        query_id=req.query_id,
    )
    assert r.status_code == 200
    bodies.append(r.content + str(r.headers).encode())
    for path in ("/v1/schema", "/v1/health"):
        r = signed_call(conn.url, path, key=dept.gateway_key, connector=dept.name)
        bodies.append(r.content + str(r.headers).encode())
    r = httpx.get(conn.url + "/v1/quality", headers={"authorization": f"Bearer {dept.admin_key}"})
    bodies.append(r.content)
    forms = {f.strip() for f in RAW_FORMS} | {PERSON_A[:17], PERSON_A[6:14]}
    for body in bodies:
        for form in forms:
            assert form.encode() not in body


def _post(dept: Department, conn: RunningConnector, query_id: str, **kw: object) -> httpx.Response:
    req = dept.request(query_id, **kw)
    return signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector=dept.name,
        body=req.body(),
        query_id=req.query_id,
    )


def test_unsigned_stale_replayed_forged_and_misaddressed_requests_are_refused(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    body = dept.request("q-auth-0001").body()
    url = conn.url + "/v1/extract"

    unsigned = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 401 and unsigned.json()["error"] == "unauthenticated"

    stale = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector=dept.name,
        body=body,
        query_id=dept.qid("q-auth-0001"),
        timestamp=int(time.time()) - 3600,
    )
    assert stale.status_code == 401

    stranger = signed_call(
        conn.url,
        "/v1/extract",
        key=Ed25519PrivateKey.generate(),
        connector=dept.name,
        body=body,
        query_id=dept.qid("q-auth-0001"),
    )
    assert stranger.status_code == 401

    tampered = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector=dept.name,
        body=body,
        query_id=dept.qid("q-auth-0001"),
        sign_url="http://elsewhere.example/v1/extract",
    )
    assert tampered.status_code == 401

    misaddressed = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector="civil",
        body=body,
        query_id=dept.qid("q-auth-0001"),
    )
    assert misaddressed.status_code == 403

    nonce = "n" * 32
    first = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector=dept.name,
        body=body,
        query_id=dept.qid("q-auth-0001"),
        nonce=nonce,
    )
    assert first.status_code == 200
    replay = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector=dept.name,
        body=body,
        query_id=dept.qid("q-auth-0001"),
        nonce=nonce,
    )
    assert replay.status_code == 401 and "replay" in replay.json()["message"]


def test_approval_is_required_and_bounds_the_extract(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    forged = dept.approval("q-appr-0001", key=Ed25519PrivateKey.generate())
    assert _post(dept, conn, "q-appr-0001", approval=forged).json()["error"] == "not_approved"

    other_query = dept.approval("q-appr-9999")
    assert _post(dept, conn, "q-appr-0002", approval=other_query).status_code == 403

    narrow = dept.approval("q-appr-0003", measures=("months_paid",))
    r = _post(dept, conn, "q-appr-0003", approval=narrow)
    assert r.status_code == 403 and r.json()["error"] == "not_approved"

    no_dims = dept.approval("q-appr-0004", dimensions=())
    assert _post(dept, conn, "q-appr-0004", approval=no_dims).status_code == 403

    greedy = dept.approval("q-appr-0005", epsilon="5")
    r = _post(dept, conn, "q-appr-0005", approval=greedy)
    assert r.status_code == 403 and r.json()["error"] == "budget_exceeded"

    household = dept.approval("q-appr-0006", unit="organisation")
    assert _post(dept, conn, "q-appr-0006", approval=household).status_code in (403, 422)


@pytest.mark.parametrize(
    "change",
    [
        {"dataset": "salaries"},
        {"dataset": "wages; DROP TABLE wages"},
        {"measures": ("amount",)},
        {"measures": ("wage_income) FROM wages --",)},
        {"dimensions": ("pid",)},
        {"dimensions": ("1=1 OR district",)},
    ],
)
def test_names_not_in_the_configuration_get_4xx(
    sqlite_dept: tuple[Department, RunningConnector], change: dict[str, object]
) -> None:
    dept, conn = sqlite_dept
    query = dept.query("q-names-0001")
    r = _post(
        dept, conn, "q-names-0001", query=query, approval=dept.approval("q-names", query=query), **change
    )
    assert 400 <= r.status_code < 500
    assert r.json()["error"] in {"unknown_dataset", "unknown_field", "invalid_request"}


def test_malformed_body_gets_422_not_500(sqlite_dept: tuple[Department, RunningConnector]) -> None:
    dept, conn = sqlite_dept
    for body in (b"{", b"[]", b'{"dataset": 5}', b"\xff\xfe"):
        r = signed_call(
            conn.url,
            "/v1/extract",
            key=dept.gateway_key,
            connector=dept.name,
            body=body,
            query_id=dept.qid("q-malformed-1"),
        )
        assert r.status_code == 422, body
    # Numbers beyond what the protocol bounds are refused as invalid too, never a 500.
    import json

    good = json.loads(dept.request("q-malformed-2").body())
    for change in ({"token": {"epoch": 2**70}}, {"checkpoint_against": 2**64}, {"epsilon": "1e-30"}):
        r = signed_call(
            conn.url,
            "/v1/extract",
            key=dept.gateway_key,
            connector=dept.name,
            body=json.dumps({**good, **change}).encode(),
            query_id=dept.qid("q-malformed-2"),
        )
        assert r.status_code == 422, change


def test_each_query_dataset_served_once_identical_retry_same_answer(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    first = _post(dept, conn, "q-once-00001")
    again = _post(dept, conn, "q-once-00001")
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    # Another request for the same (query, dataset): here under a second approval the department signed.
    signed = dept.request("q-once-00001").approval
    assert signed is not None
    later = signed.approval.model_copy(update={"issued_at": signed.approval.issued_at + 1})
    different = _post(dept, conn, "q-once-00001", approval=sign_approval(dept.approval_key, later))
    assert different.status_code == 403 and different.json()["error"] == "already_served"


def test_window_cap_is_enforced(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite", epsilon_window="1.0")
    conn = start_connector(dept.config_path)
    try:
        ok = _post(dept, conn, "q-cap-00001", approval=dept.approval("q-cap-00001", epsilon="0.6"))
        assert ok.status_code == 200
        over = _post(dept, conn, "q-cap-00002", approval=dept.approval("q-cap-00002", epsilon="0.6"))
        assert over.status_code == 403 and over.json()["error"] == "budget_exceeded"
        assert "remaining" in over.json()["message"]
    finally:
        conn.stop()


def test_malformed_ids_are_counted_for_the_department_only(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    assert _post(dept, conn, "q-quality-01").status_code == 200
    assert httpx.get(conn.url + "/v1/quality").status_code == 401
    assert httpx.get(conn.url + "/v1/quality", headers={"authorization": "Bearer nope"}).status_code == 401
    report = httpx.get(conn.url + "/v1/quality", headers={"authorization": f"Bearer {dept.admin_key}"}).json()
    wages = report["datasets"]["wages"]
    assert wages["invalid_ids"] == 4
    assert wages["legacy_ids"] == 1 and wages["cleaned_ids"] == 1 and wages["duplicate_ids"] == 2
    assert wages["out_of_domain"] == 1


def test_nonces_survive_a_restart_and_the_local_log_chains(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    body = dept.request("q-restart-01").body()
    conn = start_connector(dept.config_path)
    nonce = "r" * 32
    try:
        first = signed_call(
            conn.url,
            "/v1/extract",
            key=dept.gateway_key,
            connector=dept.name,
            body=body,
            query_id=dept.qid("q-restart-01"),
            nonce=nonce,
        )
        assert first.status_code == 200
    finally:
        conn.kill()
    conn = start_connector(dept.config_path)
    try:
        replay = signed_call(
            conn.url,
            "/v1/extract",
            key=dept.gateway_key,
            connector=dept.name,
            body=body,
            query_id=dept.qid("q-restart-01"),
            nonce=nonce,
        )
        assert replay.status_code == 401
    finally:
        conn.stop()
    state = ConnectorState(dept.directory / "state")
    entries = state.log_entries()
    assert state.verify_log() == len(entries) >= 2
    statuses = [e["entry"]["status"] for e in entries if e["entry"]["path"] == "/v1/extract"]
    assert statuses == [200, 401]
    state.close()


def test_extract_answer_is_arrow_with_fixed_width_tokens(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    r = _post(dept, conn, "q-arrow-0001")
    table = pa.ipc.open_stream(io.BytesIO(r.content)).read_all()
    assert table.schema.field(TOKEN_COLUMN).type == pa.binary(16)
    tokens = table.column(TOKEN_COLUMN).to_pylist()
    assert tokens == sorted(tokens)  # sorted by token: no trace of the source's order


def _rule(dept: Department, **changes: object) -> SignedRule:
    fields: dict[str, object] = {
        "department": dept.name,
        "rule_id": "monthly-income",
        "datasets": (ApprovedDataset(dataset="wages", measures=("wage_income",), dimensions=("district",)),),
        "units": ("person",),
        "max_epsilon_per_query": Decimal("0.5"),
        "analysts": (fingerprint(ALICE.public_key()),),
        "window": WindowLimits(max_queries=100, max_epsilon=Decimal(3)),
        "per_analyst": WindowLimits(max_queries=100, max_epsilon=Decimal(3)),
    }
    fields.update(changes)
    return sign_rule(dept.approval_key, ApprovalRule.model_validate(fields))


ALICE, MALLORY = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
NARROW = {
    "measures": ("wage_income",),
    "dimensions": ("district",),
    "epsilon": Decimal("0.5"),
    "approval": None,
}


def _served(dept: Department, query_id: str) -> bool:
    state = ConnectorState(dept.directory / "state", read_only=True)
    try:
        return any(
            e["entry"].get("query_id") == query_id and e["entry"].get("status") == 200
            for e in state.log_entries()
        )
    finally:
        state.close()


def test_a_signed_rule_admits_queries_inside_it_and_only_those(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    ok = _post(dept, conn, "q-rule-00001", rule=_rule(dept), **NARROW, analyst=ALICE)
    assert ok.status_code == 200
    now = int(time.time())
    refusals = [
        ({"rule": _rule(dept), "epsilon": Decimal("0.75")}, ALICE),  # above the rule's maximum
        ({"rule": _rule(dept)}, MALLORY),  # signed by an analyst the rule does not name
        ({"rule": _rule(dept)}, None),  # signed by no analyst: the gateway's word is not enough
        ({"rule": _rule(dept, units=("household",))}, ALICE),  # another unit
        ({"rule": _rule(dept), "measures": ("wage_income", "months_paid")}, ALICE),
        ({"rule": _rule(dept, issued_at=now - 100, expires_at=now - 1)}, ALICE),  # expired
        ({"rule": _rule(dept, analysts=("*",))}, ALICE),  # "*" and the department did not opt in
    ]
    for i, (change, analyst) in enumerate(refusals):
        query_id = f"q-rule-1000{i}"
        r = _post(dept, conn, query_id, **{**NARROW, **change, "analyst": analyst})
        assert r.status_code == 403 and r.json()["error"] == "not_approved", change
        assert not _served(dept, query_id)
    # Alice's signature of one query does not carry over to another, nor to another digest.
    r = _post(
        dept,
        conn,
        "q-rule-20001",
        rule=_rule(dept),
        **NARROW,
        analyst=ALICE,
        analyst_signature=dept.request(
            "q-rule-00001", rule=_rule(dept), **NARROW, analyst=ALICE
        ).analyst_signature,
    )
    assert r.status_code == 403 and "analyst's signature" in r.json()["message"]
    forged = sign_rule(Ed25519PrivateKey.generate(), _rule(dept).rule)
    r = _post(dept, conn, "q-rule-20000", rule=forged, **NARROW, analyst=ALICE)
    assert r.status_code == 403


def _revoke(
    dept: Department,
    conn: RunningConnector,
    revocation: Revocation,
    *,
    key: Ed25519PrivateKey | None = None,
    admin_key: str | None = None,
) -> httpx.Response:
    signed = sign_revocation(key or dept.approval_key, revocation)
    return httpx.post(
        conn.url + "/v1/admin/revocations",
        content=signed.model_dump_json(),
        headers={"authorization": f"Bearer {admin_key or dept.admin_key}"},
    )


def test_a_rule_revoked_at_the_connector_opens_nothing_whatever_the_gateway_sends(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    issued = int(time.time()) - 60
    rule = _rule(dept, rule_id="revoke-me", issued_at=issued)
    revocation = Revocation(
        department=dept.name, rule_id="revoke-me", issued_at=issued + 1, reason="narrowed"
    )
    # Only the department's admin, with the department's own signature, revokes; each refusal holds nothing.
    assert _revoke(dept, conn, revocation, admin_key="not-the-admin-key").status_code == 401
    assert _revoke(dept, conn, revocation, key=Ed25519PrivateKey.generate()).status_code == 403
    other = revocation.model_copy(update={"department": "social"})
    assert _revoke(dept, conn, other).status_code == 403
    listed = httpx.get(
        conn.url + "/v1/admin/revocations", headers={"authorization": f"Bearer {dept.admin_key}"}
    )
    assert listed.json()["revocations"] == []
    assert httpx.get(conn.url + "/v1/admin/revocations").status_code == 401
    # Revoked: the rule, still validly signed and forwarded by the gateway, opens nothing.
    r = _revoke(dept, conn, revocation)
    assert r.status_code == 201 and r.json()["new"] is True
    assert _revoke(dept, conn, revocation).json()["new"] is False  # the same again holds nothing new
    r = _post(dept, conn, "q-revk-00001", rule=rule, **NARROW, analyst=ALICE)
    assert r.status_code == 403 and "revoked" in r.json()["message"]
    assert not _served(dept, "q-revk-00001")
    # A replacement the department signs after the revocation is in force.
    newer = _rule(dept, rule_id="revoke-me", issued_at=issued + 2, replaces=rule.rule.digest())
    r = _post(dept, conn, "q-revk-00002", rule=newer, **NARROW, analyst=ALICE)
    assert r.status_code == 200, r.text
    # A revocation naming one version's digest revokes that version only.
    exact = Revocation(
        department=dept.name, rule_id="revoke-me", rule_digest=newer.rule.digest(), issued_at=issued
    )
    assert _revoke(dept, conn, exact).status_code == 201
    r = _post(dept, conn, "q-revk-00003", rule=newer, **NARROW, analyst=ALICE)
    assert r.status_code == 403
    # The connector's own log holds each revocation, chained.
    state = ConnectorState(dept.directory / "state", read_only=True)
    kinds = [e["entry"]["kind"] for e in state.log_entries()]
    assert kinds.count("rule_revoked") == 2
    state.verify_log()


# --- a baseline period in one extract

MAIN = {"period_start": "2025-07", "period_end": "2025-12"}
BASELINE = {"baseline_start": "2025-01", "baseline_end": "2025-06"}


@pytest.fixture(scope="module")
def baseline_dept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Department, RunningConnector]]:
    # Its own department, so these extracts do not draw on the epsilon window of the other tests'.
    dept = make_department(tmp_path_factory.mktemp("baseline"), "sqlite", epsilon_window="100")
    conn = start_connector(dept.config_path)
    yield dept, conn
    conn.stop()


HOUSEHOLD = {"unit": "household", "dimensions": ()}
"""A baseline belongs to a household query with a measure: the wages, with no person attribute."""


def _period_approval(
    dept: Department,
    label: str,
    baseline: tuple[str, str] | None = ("2025-01", "2025-06"),
    *,
    asked: tuple[str, str] | None = ("2025-01", "2025-06"),
) -> SignedApproval:
    """The department's approval of the household query over the second half of 2025 with the `asked`
    baseline, stating `baseline` (which a sound approval states as asked)."""
    query = dept.query(label, unit="household", dimensions=(), period=("2025-07", "2025-12"), baseline=asked)
    return dept.approval(
        label, query=query, unit="household", dimensions=(), period=("2025-07", "2025-12"), baseline=baseline
    )


def test_a_baseline_stated_by_the_approval_is_served_beside_the_period(
    baseline_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = baseline_dept
    approval = _period_approval(dept, "q-base-00001")
    r = _post(dept, conn, "q-base-00001", approval=approval, **HOUSEHOLD, **MAIN, **BASELINE)
    assert r.status_code == 200, r.text
    rows = {x[TOKEN_COLUMN]: x for x in pa.ipc.open_stream(io.BytesIO(r.content)).read_all().to_pylist()}
    assert len(rows) == len(EXPECTED)  # A and C were paid only in the baseline, and still appear
    row = rows[_token_of(dept, "q-base-00001", PERSON_A)]
    assert (row["wage_income"], row["wage_income" + BASELINE_SUFFIX]) == (0, 50_000)
    assert (row["months_paid"], row["months_paid" + BASELINE_SUFFIX]) == (0, 5)


def test_a_baseline_the_approval_does_not_state_is_refused(
    baseline_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = baseline_dept
    cases = [
        ("q-base-00002", None, BASELINE),  # approved without one
        ("q-base-00003", ("2025-01", "2025-03"), BASELINE),  # another one
        ("q-base-00004", ("2025-01", "2025-06"), {}),  # approved with one, asked without
    ]
    for label, stated, baseline in cases:
        asked = (baseline["baseline_start"], baseline["baseline_end"]) if baseline else None
        signed = _period_approval(dept, label, stated, asked=asked)
        r = _post(dept, conn, label, approval=signed, **HOUSEHOLD, **MAIN, **baseline)
        assert r.status_code == 403 and r.json()["error"] == "not_approved", label
        assert "baseline" in r.json()["message"]


def test_a_rule_covers_any_baseline(baseline_dept: tuple[Department, RunningConnector]) -> None:
    dept, conn = baseline_dept
    rule = ApprovalRule(
        department=dept.name,
        rule_id="with-baseline",
        datasets=(ApprovedDataset(dataset="wages", measures=("wage_income",)),),
        units=(Unit.HOUSEHOLD,),
        max_epsilon_per_query=Decimal("0.5"),
        analysts=(fingerprint(ALICE.public_key()),),
        window=WindowLimits(max_queries=100, max_epsilon=Decimal(3)),
        per_analyst=WindowLimits(max_queries=100, max_epsilon=Decimal(3)),
    )
    r = _post(
        dept,
        conn,
        "q-base-00005",
        approval=None,
        rule=sign_rule(dept.approval_key, rule),
        analyst=ALICE,
        epsilon=Decimal("0.5"),
        measures=("wage_income",),
        **HOUSEHOLD,
        **MAIN,
        **BASELINE,
    )
    assert r.status_code == 200, r.text
    table = pa.ipc.open_stream(io.BytesIO(r.content)).read_all()
    assert table.column_names == [TOKEN_COLUMN, "wage_income", "wage_income" + BASELINE_SUFFIX]


def test_a_baseline_overlapping_the_period_is_invalid(
    baseline_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = baseline_dept
    approval = _period_approval(dept, "q-base-00006")
    good = dept.request("q-base-00006", approval=approval, **HOUSEHOLD, **MAIN, **BASELINE)
    for baseline in (
        {"baseline_start": "2025-01", "baseline_end": "2025-07"},  # overlaps the period's first month
        {"baseline_start": "2026-01", "baseline_end": "2026-06"},  # after the period
        {"baseline_start": "2025-06", "baseline_end": "2025-01"},  # reversed
        {"baseline_start": "2025-01", "baseline_end": None},  # half a range
    ):
        # Built by hand: the protocol model itself refuses to make such a request.
        body = canonical_json({**good.model_dump(mode="json"), **baseline})
        r = signed_call(
            conn.url,
            "/v1/extract",
            key=dept.gateway_key,
            connector=dept.name,
            body=body,
            query_id=good.query_id,
        )
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", baseline
    r = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector=dept.name,
        body=good.body(),
        query_id=good.query_id,
    )
    assert r.status_code == 200  # the same request with a sound baseline is served


def test_a_baseline_needs_a_dataset_with_a_period(tmp_path: Path) -> None:
    import yaml

    dept = make_department(tmp_path, "sqlite")
    cfg = yaml.safe_load(dept.config_path.read_text())
    del cfg["datasets"][0]["period"]  # a snapshot table
    dept.config_path.write_text(yaml.safe_dump(cfg))
    conn = start_connector(dept.config_path)
    try:
        signed = _period_approval(dept, "q-base-00007")
        r = _post(dept, conn, "q-base-00007", approval=signed, **HOUSEHOLD, **MAIN, **BASELINE)
        assert r.status_code == 403 and r.json()["error"] == "not_in_plan"
        assert "period" in r.json()["message"]
        plain = _period_approval(dept, "q-base-00008", baseline=None, asked=None)
        assert _post(dept, conn, "q-base-00008", approval=plain, **HOUSEHOLD, **MAIN).status_code == 200
    finally:
        conn.stop()


def test_another_baseline_is_another_query(
    baseline_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = baseline_dept
    approval = _period_approval(dept, "q-base-00009")
    first = _post(dept, conn, "q-base-00009", approval=approval, **HOUSEHOLD, **MAIN, **BASELINE)
    assert first.status_code == 200
    # The same query asked with a shorter baseline is not the query the request carries.
    shorter = {"baseline_start": "2025-04", "baseline_end": "2025-06"}
    query = dept.query(
        "q-base-00009",
        unit="household",
        dimensions=(),
        period=("2025-07", "2025-12"),
        baseline=BASELINE_RANGE,
    )
    again = _post(dept, conn, "q-base-00009", approval=approval, query=query, **HOUSEHOLD, **MAIN, **shorter)
    assert again.status_code == 403 and again.json()["error"] == "query_mismatch"


BASELINE_RANGE = ("2025-01", "2025-06")


# A known fedgate-approval/2 approval and its signature under a fixed key: without a baseline the signed
# bytes carry no baseline field, and they always carry the issue time and the (default, 14-day) expiry.
_KNOWN_KEY = bytes(range(32))
_KNOWN_BYTES = (
    b'fedgate-approval/2\n{"datasets":[{"dataset":"wages","dimensions":[],"household":false,'
    b'"measures":["wage_income"]}],'
    b'"department":"tax","epsilon":"0.25","expires_at":1801209600,"issued_at":1800000000,'
    b'"period_end":"2025-12","period_start":"2025-01",'
    b'"query_digest":"' + b"a" * 64 + b'","query_id":"q-proto-0001","unit":"household",'
    b'"version":"fedgate-approval/2"}'
)
_KNOWN_SIGNATURE = "04pSeZJvuJkMYq3DdmHiRiR/M0EIOTzYYGjvPrsUUPLJMWLIxc3dgKBYiNdnMJHMSGX63OH5qnjWXhFUEdP6Dg=="


def test_approvals_without_a_baseline_keep_their_signed_bytes() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey as Key

    key = Key.from_private_bytes(_KNOWN_KEY)
    approval = Approval(
        department="tax",
        query_id="q-proto-0001",
        query_digest="a" * 64,
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        datasets=(ApprovedDataset(dataset="wages", measures=("wage_income",)),),
        epsilon=Decimal("0.25"),
        issued_at=1_800_000_000,
    )
    assert approval.signing_bytes() == _KNOWN_BYTES and b"baseline" not in approval.signing_bytes()
    known = SignedApproval(
        approval=approval, key_fingerprint=fingerprint(key.public_key()), signature=_KNOWN_SIGNATURE
    )
    assert verify_approval(key.public_key(), known) == approval
    assert sign_approval(key, approval).signature == _KNOWN_SIGNATURE
    # A baseline is signed: adding one to a signed approval breaks its signature.
    widened = approval.model_copy(update={"baseline_start": "2024-01", "baseline_end": "2024-12"})
    with pytest.raises(SignatureError):
        verify_approval(key.public_key(), known.model_copy(update={"approval": widened}))
    assert b'"baseline_end":"2024-12","baseline_start":"2024-01"' in widened.signing_bytes()


def test_requests_without_a_baseline_carry_no_baseline_field(
    baseline_dept: tuple[Department, RunningConnector],
) -> None:
    dept, _conn = baseline_dept
    assert b"baseline_" not in dept.request("q-base-00010").body()
    approval = _period_approval(dept, "q-base-00011")
    with_base = dept.request("q-base-00011", approval=approval, **HOUSEHOLD, **MAIN, **BASELINE)
    # the request's, the approval's and the carried query's
    assert with_base.body().count(b'"baseline_start":"2025-01"') == 2
    assert with_base.body().count(b'"period_start":"2025-01"') == 1


def test_a_body_above_the_limit_is_413_before_its_signature_is_checked(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    limit = ListenSpec().max_body_bytes  # the configuration leaves the default
    too_large = b'{"pad": "' + b"x" * limit + b'"}'
    # Correctly signed, so only its size is wrong; and unsigned, refused all the same.
    signed = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector=dept.name,
        body=too_large,
        query_id=dept.qid("q-big-01"),
    )
    unsigned = httpx.post(conn.url + "/v1/extract", content=too_large, timeout=30)

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024

    streamed = httpx.post(conn.url + "/v1/extract", content=chunks(), timeout=30)
    for r in (signed, unsigned, streamed):
        assert r.status_code == 413
        body = r.json()
        assert body["error"] == "invalid_request" and str(limit) in body["message"]
    # The connector still serves a signed request of ordinary size afterwards.
    schema = signed_call(conn.url, "/v1/schema", key=dept.gateway_key, connector=dept.name)
    assert schema.status_code == 200


@pytest.mark.postgres
def test_a_source_failure_shows_its_cause_to_the_department_only(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    import secrets

    import sqlalchemy as sa
    import yaml
    from sqlalchemy.engine import make_url

    dept = make_department(tmp_path, "postgres", db_url=postgres_url)
    role = f"fedgate_r_{secrets.token_hex(4)}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        c.execute(sa.text(f"GRANT SELECT ON wages TO {role}"))
    doc = yaml.safe_load(dept.config_path.read_text())
    doc["source"]["url"] = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
    dept.config_path.write_text(yaml.safe_dump(doc))
    conn = start_connector(dept.config_path)
    try:
        with admin.connect() as c:
            c.execute(sa.text(f"REVOKE SELECT ON wages FROM {role}"))
        r = _post(dept, conn, "q-fail-00001")
        assert r.status_code == 503
        assert r.json()["error"] == "source_unavailable"
        assert "permission" not in r.text and "psycopg" not in r.text  # the gateway sees the fixed code only
        # Nothing is reserved: once the grant is back the same query is served.
        state_report = httpx.get(
            conn.url + "/v1/quality", headers={"authorization": f"Bearer {dept.admin_key}"}
        ).json()
        failure = state_report["recent_failures"][0]
        assert failure["dataset"] == "wages" and failure["query_id"] == dept.qid("q-fail-00001")
        assert failure["cause"] == "permission_denied"
        assert failure["error_class"] == "psycopg.InsufficientPrivilege"
        assert "wages" in failure["detail"] and "GRANT" in failure["fix"].upper()
        assert state_report["epsilon_spent"] == {next(iter(state_report["epsilon_spent"])): "0"}
        logged = [line for line in conn.log_path.read_text().splitlines() if "connector.source_error" in line]
        assert logged and "InsufficientPrivilege" in logged[0] and "permission_denied" in logged[0]
        with admin.connect() as c:
            c.execute(sa.text(f"GRANT SELECT ON wages TO {role}"))
        assert _post(dept, conn, "q-fail-00001").status_code == 200
    finally:
        conn.stop()
        with admin.connect() as c:
            c.execute(sa.text(f"REVOKE ALL ON wages FROM {role}"))
            c.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()
