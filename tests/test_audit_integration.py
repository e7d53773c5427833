"""The audit log in the federation: connectors witness checkpoints and refuse a forked history, the
auditor API proves what it serves, reconcile finds a rewritten history, and a gateway whose ledger is
behind its audit log refuses to start."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from connector_fixture import Department, make_department
from fastapi.testclient import TestClient
from witness_fixture import PlayedGateway, pin_audit_key, send

from audit.checkpoint import Checkpoint, NoteSigner, open_checkpoint, parse_verifier
from audit.export import export_connector_log, export_log
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.reconcile import reconcile
from audit.store import AuditLog
from audit.verify import verify_export
from connectors.process import RunningConnector, start_connector
from connectors.state import ConnectorState
from gateway.app import build_context, create_app
from gateway.auth import Role, create_principal
from gateway.context import GatewayContext
from gateway.events import QueryReleased
from gateway.settings import GatewaySettings, SettingsError

ORIGIN = "fedgate-gateway"


def _log(path: Path, events: list[str]) -> AuditLog:
    log = AuditLog.open(f"sqlite:///{path}")
    for name in events:
        log.append({"action": "test.event", "actor": "tester", "name": name})
    return log


def _checkpoint(log: AuditLog, signer: NoteSigner) -> Checkpoint:
    size, root = log.head()
    return Checkpoint.sign(ORIGIN, size, root, signer)


@pytest.fixture
def witnessing(tmp_path: Path) -> Iterator[tuple[Department, RunningConnector, NoteSigner]]:
    signer = NoteSigner.generate(ORIGIN)
    dept = make_department(tmp_path / "dept", "sqlite")
    pin_audit_key(dept, signer)
    conn = start_connector(dept.config_path)
    yield dept, conn, signer
    conn.stop()


def test_a_connector_refuses_a_history_rewritten_and_resigned_with_the_gateways_key(
    witnessing: tuple[Department, RunningConnector, NoteSigner], tmp_path: Path
) -> None:
    dept, conn, signer = witnessing
    honest = PlayedGateway.open(tmp_path / "honest.sqlite3", signer)
    honest.events([f"e{i}" for i in range(5)])
    bare = dept.request("q-witness-0001")
    assert send(dept, conn.url, bare).status_code == 422  # a checkpoint and its proofs are required
    assert send(dept, conn.url, honest.witnessed(bare, 0)).status_code == 200  # trust on first use
    honest.events([f"more{i}" for i in range(4)])
    second = dept.request("q-witness-0002")
    seq = honest.plan(second)
    grown = honest.checkpoint()
    stale = send(dept, conn.url, second.model_copy(update=honest.fields(seq, grown, 3)))
    assert stale.status_code == 409 and stale.json() == {
        **stale.json(),
        "error": "checkpoint_stale",
        "witnessed_size": 6,
    }
    ok = send(dept, conn.url, second.model_copy(update=honest.fields(seq, grown, 6)))
    assert ok.status_code == 200
    assert conn.process.poll() is None
    # The operator rewrites history (entry 4 changed) and re-signs it with the gateway's own audit key.
    forged = PlayedGateway.open(tmp_path / "forged.sqlite3", signer)
    forged.events(["e0", "e1", "e2", "REWRITTEN", "e4", *[f"more{i}" for i in range(6)]])
    r = send(dept, conn.url, forged.witnessed(dept.request("q-witness-0003"), grown.size))
    assert r.status_code == 409 and r.json()["error"] == "fork_detected"
    # From then on the connector serves nothing, even a request consistent with what it saw before.
    honest.events(["late0", "late1"])
    r = send(dept, conn.url, honest.witnessed(dept.request("q-witness-0004"), grown.size))
    assert r.status_code == 409
    # A checkpoint signed by another key is refused outright.
    stranger = PlayedGateway(honest.log, NoteSigner.generate(ORIGIN), store=False)
    r = send(dept, conn.url, stranger.witnessed(dept.request("q-witness-0005"), grown.size))
    assert r.status_code in (403, 409)

    # Reconcile: the forged gateway log does not reproduce the checkpoints the connector witnessed.
    conn.stop()
    state = ConnectorState(dept.directory / "state")
    connector_export = tmp_path / "connector.jsonl"
    export_connector_log(state, connector_export, connector=dept.name)
    state.close()
    gateway_export = tmp_path / "forged-gateway.jsonl"
    export_log(forged.log, gateway_export)
    differences = reconcile(gateway_export, connector_export)
    assert any(d.kind.startswith("checkpoint") for d in differences)


@pytest.fixture
def gateway_ctx(tmp_path: Path) -> Iterator[GatewayContext]:
    context = build_context(GatewaySettings(state_dir=tmp_path / "state"))
    yield context
    context.engine.dispose()


def test_auditor_api_serves_what_it_can_prove(gateway_ctx: GatewayContext, tmp_path: Path) -> None:
    keys = {}
    for role, name, dept in [
        (Role.AUDITOR, "aud", None),
        (Role.ANALYST, "ana", None),
        (Role.DEPARTMENT_ADMIN, "tax-admin", "tax"),
        (Role.OPERATOR, "op", None),
    ]:
        _, keys[name] = create_principal(gateway_ctx.engine, role=role, name=name, department=dept)
    client = TestClient(create_app(gateway_ctx))

    def get(path: str, who: str, **params: object) -> httpx.Response:
        return client.get(path, params=params, headers={"authorization": f"Bearer {keys[who]}"})

    for who in ("ana", "tax-admin", "op"):
        assert get("/v1/audit/entries", who).status_code == 403
        assert get("/v1/audit/checkpoint", who).status_code == 403
    for _ in range(3):
        get("/v1/catalog", "ana")
    page = get("/v1/audit/entries", "aud", action="http.request", limit=2).json()
    assert len(page["entries"]) == 2 and page["next_after_seq"] == page["entries"][-1]["seq"]
    assert all(e["event"]["action"] == "http.request" for e in page["entries"])
    refused = get("/v1/audit/entries", "aud", outcome="refused").json()["entries"]
    assert {e["event"]["principal"] for e in refused} >= {"ana"}  # the analyst's 403s are recorded

    one = get("/v1/audit/entries/2", "aud").json()
    verify_inclusion(
        1,
        one["tree_size"],
        leaf_hash(bytes.fromhex(one["entry"]["hash"])),  # leaves are the entry hashes, RFC 6962 style
        [base64.b64decode(p) for p in one["inclusion_proof"]],
        bytes.fromhex(one["root"]),
    )
    cp = get("/v1/audit/checkpoint", "aud").json()
    checkpoint = open_checkpoint(cp["note"], [parse_verifier(cp["public_key"])])
    later = client.post("/v1/audit/checkpoint", headers={"authorization": f"Bearer {keys['aud']}"}).json()
    proof = get("/v1/audit/consistency", "aud", from_size=checkpoint.size, to_size=later["size"]).json()
    verify_consistency(
        checkpoint.size,
        later["size"],
        [base64.b64decode(p) for p in proof["proof"]],
        checkpoint.root,
        bytes.fromhex(later["root"]),
    )
    assert get("/v1/audit/entries/999999", "aud").status_code == 404
    assert get("/v1/audit/entries", "aud", since="2025-01-01T00:00:00").status_code == 422
    export = get("/v1/audit/export", "aud")
    assert export.status_code == 200
    path = tmp_path / "export.jsonl"
    path.write_bytes(export.content)
    report = verify_export(path, [cp["public_key"]])
    assert report.ok and report.entries >= 8


def _released(query_id: str) -> QueryReleased:
    return QueryReleased(
        actor="ana", query_id=query_id, query_digest="d" * 64, epsilon="0.5", result_digest="e" * 64
    )


def test_a_gateway_whose_ledger_is_behind_its_audit_log_refuses_to_start(gateway_ctx: GatewayContext) -> None:
    gateway_ctx.ledger.reserve(
        "q-audited-000001", analyst="ana", datasets=["tax.wages"], epsilon=Decimal("0.5")
    )
    gateway_ctx.ledger.mark_data_arrived("q-audited-000001")
    gateway_ctx.ledger.commit("q-audited-000001", {"release": "noisy values"})
    gateway_ctx.audit.record(_released("q-audited-000001"))
    build_context(gateway_ctx.settings, engine=gateway_ctx.engine)  # consistent: starts
    # A release the ledger does not know, as after restoring an older ledger backup.
    gateway_ctx.audit.record(_released("q-audited-000002"))
    with pytest.raises(SettingsError, match="less spending than the audit log"):
        build_context(gateway_ctx.settings, engine=gateway_ctx.engine)


def test_the_audit_key_rotates_on_the_command_line_and_old_exports_still_verify(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from audit.cli import audit_app

    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    log = AuditLog.open(url)
    old, new = NoteSigner.generate(ORIGIN), NoteSigner.generate(ORIGIN)
    (tmp_path / "old.key").write_text(old.skey())
    (tmp_path / "new.key").write_text(new.skey())
    for i in range(5):
        log.append({"action": "test.event", "actor": "tester", "name": f"before{i}"})
    runner = CliRunner()
    rotated = runner.invoke(
        audit_app,
        [
            "rotate",
            "--db",
            url,
            "--old-key",
            str(tmp_path / "old.key"),
            "--new-key",
            str(tmp_path / "new.key"),
        ],
    )
    assert rotated.exit_code == 0, rotated.output
    assert new.vkey in rotated.stdout
    log.append({"action": "test.event", "actor": "tester", "name": "after"})
    out = tmp_path / "export.jsonl"
    exported = runner.invoke(
        audit_app, ["export", "--db", url, "--out", str(out), "--signing-key", str(tmp_path / "new.key")]
    )
    assert exported.exit_code == 0, exported.output
    assert any(e.event["action"] == "audit.key_rotated" for e in log.entries())
    for trusted in (old.vkey, new.vkey):  # one key from anywhere in the history is enough
        assert verify_export(out, [trusted]).ok
    assert not verify_export(out, [NoteSigner.generate(ORIGIN).vkey]).ok
