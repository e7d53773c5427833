"""Preflight: a connector confirms it can serve an extract (checks and a one-row probe) without serving
or counting anything, and the gateway asks every planned connector before it reserves any budget."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml
from connector_fixture import PERSON_A, PERSON_B, PERSON_C, Department, make_department, signed_call
from dbservers import postgres_url  # noqa: F401 (fixture)

from aggregation.query import Measure, QuerySpec, Statistic, StatisticKind, Term
from audit.checkpoint import NoteSigner, load_signer
from connectors.config import Unit, load_config
from connectors.ids import IdKind, normalize
from connectors.process import RunningConnector, start_connector
from connectors.protocol import (
    PreflightRequest,
    fingerprint,
    load_private_key,
    private_key_pem,
    sign_approval,
)
from connectors.service import budget_window
from connectors.state import ConnectorState
from gateway import db
from gateway.approval_plan import own_schema
from gateway.auth import Role, create_principal
from gateway.client import GatewayClient, GatewayError
from gateway.dev.process import start_gateway
from gateway.federation import ConnectorCallError, ConnectorLink


def _client(dept: Department, conn: RunningConnector) -> ConnectorLink:
    cfg = load_config(dept.config_path).config
    pinned = load_private_key(cfg.signing_key_file.read_bytes()).public_key()
    return ConnectorLink(conn.url, connector=dept.name, gateway_key=dept.gateway_key, connector_key=pinned)


def _preflight(dept: Department, query_id: str, **changes: object) -> PreflightRequest:
    return PreflightRequest.model_validate(dept.request(query_id, **changes).model_dump())


def _spent(dept: Department) -> Decimal:
    state = ConnectorState(dept.directory / "state")
    try:
        return state.spent(budget_window())
    finally:
        state.close()


@pytest.fixture
def sqlite_dept(tmp_path: Path) -> Iterator[tuple[Department, RunningConnector]]:
    dept = make_department(tmp_path, "sqlite")
    conn = start_connector(dept.config_path)
    yield dept, conn
    conn.stop()


def test_a_ready_preflight_is_signed_and_counts_nothing(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    with _client(dept, conn) as client:
        answer, receipt = client.preflight(_preflight(dept, "q-preflight-1"))
        assert len(receipt["request_digest"]) == len(receipt["response_digest"]) == 64
        assert (answer.connector, answer.dataset, answer.ready) == ("tax", "wages", True)
        assert _spent(dept) == 0  # nothing counted against the department's window
        table, _ = client.extract(dept.request("q-preflight-1"))  # the extract is still the first one
        assert table.num_rows == 3
        assert _spent(dept) == Decimal("0.5")
        # Served now: the identical preflight is ready (a retry would replay), a different one is not.
        client.preflight(_preflight(dept, "q-preflight-1"))
        with pytest.raises(ConnectorCallError) as err:
            # The same query and dataset, another request: under a second approval the department signed.
            signed = dept.request("q-preflight-1").approval
            assert signed is not None
            later = signed.approval.model_copy(update={"issued_at": signed.approval.issued_at + 1})
            client.preflight(
                _preflight(dept, "q-preflight-1", approval=sign_approval(dept.approval_key, later))
            )
        assert (err.value.status, err.value.code) == (403, "already_served")


def test_preflight_refuses_what_the_extract_would_refuse(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    with _client(dept, conn) as client:
        narrow = dept.approval("q-preflight-2", measures=("wage_income",))
        with pytest.raises(ConnectorCallError) as err:
            client.preflight(_preflight(dept, "q-preflight-2", approval=narrow))
        assert (err.value.status, err.value.code) == (403, "not_approved")
        with pytest.raises(ConnectorCallError) as err:
            client.preflight(_preflight(dept, "q-preflight-3", token={"epoch": 99}))
        assert err.value.code == "unknown_key_epoch"
    # A preflight body is never an extract: extracts forbid its `kind`.
    body = _preflight(dept, "q-preflight-4").body()
    r = signed_call(
        conn.url,
        "/v1/extract",
        key=dept.gateway_key,
        connector="tax",
        body=body,
        query_id=dept.qid("q-preflight-4"),
    )
    assert r.status_code == 422
    assert _spent(dept) == 0


def test_a_source_that_cannot_be_read_fails_the_preflight(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    dept, conn = sqlite_dept
    with sqlite3.connect(dept.directory / "tax.db") as db_:
        db_.execute("ALTER TABLE wages RENAME COLUMN month TO paid_month")
    with _client(dept, conn) as client:
        with pytest.raises(ConnectorCallError) as err:
            client.preflight(_preflight(dept, "q-preflight-5"))
        assert (err.value.status, err.value.code) == (503, "source_unavailable")
    assert _spent(dept) == 0
    entries = [e["entry"] for e in ConnectorState(dept.directory / "state").log_entries()]
    last = [e for e in entries if e.get("path") == "/v1/preflight"][-1]
    assert (last["status"], last["error"], last["dataset"]) == (503, "source_unavailable", "wages")
    assert "request_digest" not in last and len(last["preflight_digest"]) == 64


@pytest.mark.postgres
def test_the_probe_runs_the_roll_ups_aggregates(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    """A money column turned to text still reads row by row, but SUM over it fails: the probe sees it."""
    dept = make_department(tmp_path, "postgres", db_url=postgres_url)
    conn = start_connector(dept.config_path)
    source = sa.create_engine(postgres_url)
    try:
        with _client(dept, conn) as client:
            client.preflight(_preflight(dept, "q-preflight-6"))
            with source.begin() as c:
                c.execute(sa.text("ALTER TABLE wages ALTER COLUMN amount TYPE text USING amount::text"))
            with pytest.raises(ConnectorCallError) as err:
                client.preflight(_preflight(dept, "q-preflight-6"))
            assert (err.value.status, err.value.code) == (503, "source_unavailable")
        assert _spent(dept) == 0
    finally:
        source.dispose()
        conn.stop()


# --- end to end: the gateway asks before it reserves ---------------------------------------------------


def _wage_query(purpose: str) -> QuerySpec:
    return QuerySpec(
        purpose=purpose,
        unit=Unit.PERSON,
        member_cap=4,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=(Term(dataset="tax.wages", measure="wage_income"),), lower=0, upper=100_000),
        statistics=(Statistic(kind=StatisticKind.SUM),),
        epsilon=Decimal("0.5"),
    )


def make_register(directory: Path, tax: Department) -> Department:
    """A household register for `tax`'s persons (person and household queries need one), sharing its
    gateway key and federation keyring so the tokens join."""
    keyring = json.loads(tax.keyring_path.read_text())
    register = make_department(
        directory, "sqlite", name="register", gateway_key=tax.gateway_key, keyring_doc=keyring
    )
    with sqlite3.connect(directory / "tax.db") as db_:
        db_.execute("CREATE TABLE persons (pid TEXT, hh TEXT)")
        people = [normalize(IdKind.RESIDENT_ID, p) for p in (PERSON_A, PERSON_B, PERSON_C)]
        db_.executemany(
            "INSERT INTO persons VALUES (?, ?)", [(p, f"H{i // 2}") for i, p in enumerate(people)]
        )
    config = yaml.safe_load(register.config_path.read_text())
    config["datasets"] = [
        {
            "name": "persons",
            "table": "persons",
            "entity": {"column": "pid", "kind": "person"},
            "household": {"column": "hh"},
        }
    ]
    register.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return register


def _approve_all(
    gateway: RunningConnector,
    keys: dict[str, str],
    qid: str,
    depts: list[Department],
    conns: list[RunningConnector],
) -> None:
    """Each department plans the query against its own connector's schema and signs that."""
    for d, conn in zip(depts, conns, strict=True):
        with GatewayClient(gateway.url, keys[d.name]) as admin:
            admin.approve(
                qid, private_key_pem(d.approval_key), d.name, schemas=[own_schema(conn.url, d.admin_key)]
            )


def _start_gateway(
    tmp_path: Path, depts: list[Department]
) -> tuple[RunningConnector, dict[str, str], list[RunningConnector]]:
    """A gateway on loopback with an operator, an analyst, an auditor and each department's admin, and
    each department's connector started, allowed and registered under its pinned key."""
    (tmp_path / "gateway.key").write_bytes(private_key_pem(depts[0].gateway_key))
    (tmp_path / "audit.key").write_text(NoteSigner.generate("test-gateway").skey() + "\n")
    state = tmp_path / "gw"
    state.mkdir()
    engine = db.make_engine(f"sqlite:///{state / 'gateway.sqlite3'}")
    db.migrate(engine)
    people = [
        (Role.OPERATOR, "operator", None),
        (Role.ANALYST, "analyst", None),
        (Role.AUDITOR, "auditor", None),
    ]
    people += [(Role.DEPARTMENT_ADMIN, d.name, d.name) for d in depts]
    keys = {
        name: create_principal(engine, role=role, name=name, department=dept_, expires_days=1)[1]
        for role, name, dept_ in people
    }
    engine.dispose()
    conns = [start_connector(d.config_path) for d in depts]
    gateway = start_gateway(
        state, signing_key_file=tmp_path / "gateway.key", audit_key_file=tmp_path / "audit.key"
    )
    for d, conn in zip(depts, conns, strict=True):
        cfg = load_config(d.config_path).config
        pinned = fingerprint(load_private_key(cfg.signing_key_file.read_bytes()).public_key())
        with GatewayClient(gateway.url, keys["operator"]) as operator:
            operator.allow_endpoint(conn.url)
        with GatewayClient(gateway.url, keys[d.name]) as admin:
            admin.register_connector(d.name, conn.url, pinned)
    return gateway, keys, conns


@pytest.mark.postgres
def test_a_query_whose_source_breaks_reserves_nothing_and_runs_after_the_fix(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    dept = make_department(tmp_path / "tax", "postgres", db_url=postgres_url)
    register = make_register(tmp_path / "register", dept)
    gateway, keys, (conn, register_conn) = _start_gateway(tmp_path, [dept, register])
    source = sa.create_engine(postgres_url)
    try:
        with GatewayClient(gateway.url, keys["analyst"]) as analyst:
            view = analyst.submit(_wage_query("Wages paid in the county, preflight end to end"))
            qid = view["id"]
            _approve_all(gateway, keys, qid, [dept, register], [conn, register_conn])
            assert analyst.query(qid)["state"] == "approved"
            before = analyst.budget(["2025"])["years"][0]["remaining"]

            # The DBA renames the period column: the connector still holds the old reflection.
            with source.begin() as c:
                c.execute(sa.text("ALTER TABLE wages RENAME COLUMN month TO paid_month"))
            with pytest.raises(GatewayError) as err:
                analyst.run(qid)
            assert (err.value.status, err.value.code) == (503, "connector_unavailable")
            assert "connector tax" in err.value.message and "source_unavailable" in err.value.message
            # Nothing reserved, nothing charged.
            assert analyst.budget(["2025"])["years"][0]["remaining"] == before
            shown = analyst.query(qid)
            assert shown["state"] == "approved" and shown["covered_by"]["tax"] == "approval"
            assert _spent(dept) == 0  # nor at the connector

            with source.begin() as c:
                c.execute(sa.text("ALTER TABLE wages RENAME COLUMN paid_month TO month"))
            released = analyst.run(qid)  # the same approval, no new signature
            assert released["result"]["query_id"] == qid
            after = analyst.budget(["2025"])["years"][0]["remaining"]
            assert Decimal(before) - Decimal(after) == Decimal("0.5")
        with GatewayClient(gateway.url, keys["auditor"]) as auditor:
            failed = auditor.audit_entries(action="query.failed", query_id=qid)["entries"]
        (event,) = [e["event"] for e in failed]
        assert (event["reason"], event["charged"]) == ("connector_unavailable", False)
        assert event["connectors"] == ["tax.wages: source_unavailable"]
    finally:
        source.dispose()
        gateway.stop()
        conn.stop()
        register_conn.stop()


def test_the_preflight_route_is_signed_like_every_other(
    sqlite_dept: tuple[Department, RunningConnector],
) -> None:
    _dept, conn = sqlite_dept
    body = json.dumps({"kind": "preflight"}).encode()
    assert httpx.post(conn.url + "/v1/preflight", content=body, timeout=10).status_code == 401


def test_a_connector_misconfigured_or_failing_mid_extract(tmp_path: Path) -> None:
    """The social connector first pins another audit key than the gateway's: the preflight names it and
    nothing is charged. Fixed, a sum that overflows in SQLite passes the one-row probe but fails the
    extract after tax has answered: the 502 names social and its code, and the query stays charged."""
    tax = make_department(tmp_path / "tax", "sqlite")
    social = make_department(tmp_path / "social", "sqlite", name="social", gateway_key=tax.gateway_key)
    config = yaml.safe_load(social.config_path.read_text())
    config["policy"]["audit_public_keys"] = [NoteSigner.generate("someone-else").vkey]
    social.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    register = make_register(tmp_path / "register", tax)
    gateway, keys, conns = _start_gateway(tmp_path, [tax, social, register])
    try:
        terms = (
            Term(dataset="tax.wages", measure="wage_income"),
            Term(dataset="social.wages", measure="wage_income"),
        )
        spec = _wage_query("Wages in two departments").model_copy(
            update={"measure": Measure(terms=terms, lower=0, upper=200_000)}
        )
        with GatewayClient(gateway.url, keys["analyst"]) as analyst:
            qid = analyst.submit(QuerySpec.model_validate(spec.model_dump()))["id"]
            _approve_all(gateway, keys, qid, [tax, social, register], conns)
            before = Decimal(analyst.budget(["2025"])["years"][0]["remaining"])
            with pytest.raises(GatewayError) as err:
                analyst.run(qid)
            assert (err.value.status, err.value.code) == (503, "connector_unavailable")
            assert "connector social (dataset wages): forbidden" in err.value.message
            assert Decimal(analyst.budget(["2025"])["years"][0]["remaining"]) == before
            assert analyst.query(qid)["state"] == "approved"

            # The department pins the gateway's audit key and restarts on the same address.
            config["policy"]["audit_public_keys"] = [load_signer(tmp_path / "audit.key").vkey]
            social.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            port = int(conns[1].url.rsplit(":", 1)[1])
            conns[1].stop()
            conns[1] = start_connector(social.config_path, port=port)
            # Two rows whose sum overflows SQLite's integers: each row reads, the roll-up does not.
            with sqlite3.connect(social.directory / "tax.db") as db_:
                db_.executemany(
                    "INSERT INTO wages VALUES (?, '2025-03', ?, 'A')", [(PERSON_B, 2**62), (PERSON_B, 2**62)]
                )
            with pytest.raises(GatewayError) as err:
                analyst.run(qid)
            assert (err.value.status, err.value.code) == (502, "connector_error")
            assert "social.wages: source_unavailable" in err.value.message
            assert "tax.wages" not in err.value.message
            assert before - Decimal(analyst.budget(["2025"])["years"][0]["remaining"]) == Decimal("0.5")
            assert analyst.query(qid)["state"] == "failed"
    finally:
        gateway.stop()
        for c in conns:
            c.stop()
