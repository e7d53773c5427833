"""Witnessing an operator cannot evade: inclusion of the request's own entry, no going back, cosignatures,
and the cases a dishonest operator tries (a tail edit re-signed, a deletion with renumbering, a split view
between two connectors, a stale checkpoint), each caught by the connector at the next extract or by
`verify`/`reconcile` with the departments' cosignatures."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from connector_fixture import Department, make_department
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from witness_fixture import ORIGIN, PlayedGateway, pin_audit_key

from audit.checkpoint import Checkpoint, NoteSigner, load_verifier, parse_verifier
from audit.cli import audit_app
from audit.cosignature import CosignatureVerifier, Cosigner, open_cosignature
from audit.errors import CheckpointError, ProofError
from audit.export import export_connector_log, export_log
from audit.reconcile import reconcile
from audit.verify import VerifyReport, verify_export
from audit.witness import check_inclusion
from connectors.config import load_config
from connectors.errors import ConfigError
from connectors.protocol import (
    H_COSIGNATURE,
    ExtractRequest,
    load_private_key,
    public_key_text,
    sign_approval,
    sign_request,
)
from connectors.service import ConnectorService, budget_window, build_service, create_app

# --- a connector in this process (the signature covers the URL the test client calls)


@dataclass
class Witness:
    dept: Department
    service: ConnectorService
    http: TestClient

    def send(self, req: ExtractRequest) -> httpx.Response:
        body = req.body()
        signed = sign_request(
            self.dept.gateway_key,
            method="POST",
            url="http://testserver/v1/extract",
            connector=self.dept.name,
            query_id=req.query_id,
            body=body,
        )
        headers = signed.as_headers() | {"content-type": "application/json"}
        return self.http.post("/v1/extract", content=body, headers=headers)

    def key(self) -> CosignatureVerifier:
        pem = (self.dept.directory / "connector.key").read_bytes()
        return CosignatureVerifier(self.dept.name, load_private_key(pem).public_key())

    def export(self, path: Path) -> Path:
        export_connector_log(self.service.state, path, connector=self.dept.name)
        return path


@contextmanager
def witness(directory: Path, signer: NoteSigner, name: str = "tax") -> Iterator[Witness]:
    dept = make_department(directory, "sqlite", name=name)
    pin_audit_key(dept, signer)
    service = build_service(load_config(dept.config_path))
    with TestClient(create_app(service)) as http:
        yield Witness(dept, service, http)
    service.state.close()


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture
def tax(tmp_path: Path, signer: NoteSigner) -> Iterator[Witness]:
    with witness(tmp_path / "tax", signer) as w:
        yield w


def _served(w: Witness, gateway: PlayedGateway, qid: str, against: int) -> str:
    """One honest extract: logged, checkpointed, served; the gateway logs the cosignature."""
    req = gateway.witnessed(w.dept.request(qid), against)
    r = w.send(req)
    assert r.status_code == 200, r.text
    return gateway.record_cosignature(r, req)


def _snapshot(src: Path, dst: Path, signer: NoteSigner) -> PlayedGateway:
    """A byte-for-byte copy of the gateway's log as it is now (a backup, or a forger's starting point)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return PlayedGateway.open(dst, signer)


def _verify(gateway_log: PlayedGateway, path: Path, **kw: Any) -> VerifyReport:
    export_log(gateway_log.log, path)
    return verify_export(path, [gateway_log.signer.verifier], **kw)


# --- the pieces


def test_a_cosignature_is_c2sp_tlog_cosignature_v1_and_binds_its_checkpoint() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    cosigner = Cosigner("tax", key)
    checkpoint = Checkpoint.sign(ORIGIN, 7, bytes(range(32)), NoteSigner.generate(ORIGIN))
    line = cosigner.cosign(checkpoint, 1_700_000_000)
    assert line.startswith("\u2014 tax ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 4 + 8 + 64 and int.from_bytes(blob[4:12], "big") == 1_700_000_000
    verifier = CosignatureVerifier.parse(cosigner.verifier.vkey)
    assert open_cosignature(checkpoint, line, verifier).timestamp == 1_700_000_000
    other = Checkpoint.sign(ORIGIN, 8, bytes(range(32)), NoteSigner.generate(ORIGIN))
    with pytest.raises(CheckpointError, match="does not verify"):
        open_cosignature(other, line, verifier)
    with pytest.raises(CheckpointError, match="not by the pinned key"):
        open_cosignature(
            checkpoint, line, CosignatureVerifier("tax", Ed25519PrivateKey.generate().public_key())
        )
    # The gateway's own checkpoint signature is not a cosignature (another key ID type).
    with pytest.raises(CheckpointError):
        open_cosignature(checkpoint, checkpoint.note.split("\n\n")[1], verifier)


@pytest.mark.parametrize("raw", [bytes(32), bytes([1]) + bytes(31), bytes([7]) * 32, bytes(range(4)) * 8])
def test_weak_audit_and_witness_keys_are_refused(raw: bytes, tmp_path: Path) -> None:
    from audit.checkpoint import ALG_ED25519, key_id

    vkey = f"gw+{key_id('gw', raw).hex()}+{base64.b64encode(bytes([ALG_ED25519]) + raw).decode()}"
    with pytest.raises(CheckpointError):
        parse_verifier(vkey)
    with pytest.raises(CheckpointError):
        load_verifier(base64.b64encode(raw).decode())
    dept = make_department(tmp_path, "sqlite")
    doc = yaml.safe_load(dept.config_path.read_text())
    doc["policy"]["audit_public_keys"] = [vkey]
    dept.config_path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="audit_public_keys"):
        load_config(dept.config_path)


def test_a_connector_refuses_to_start_unwitnessed_or_without_an_https_public_url(
    tmp_path: Path, signer: NoteSigner
) -> None:
    dept = make_department(tmp_path, "sqlite")
    doc = yaml.safe_load(dept.config_path.read_text())
    del doc["unsafe_development"]
    doc["listen"] = {"public_url": "https://tax.example.internal:8443"}
    dept.config_path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"policy\.audit_public_keys is required"):
        load_config(dept.config_path)
    doc["policy"]["audit_public_keys"] = [signer.vkey]
    for url in (None, "http://tax.example.internal:8710"):
        doc["listen"] = {"public_url": url}
        dept.config_path.write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError, match=r"listen\.public_url must be the https URL"):
            load_config(dept.config_path)
    doc["listen"] = {"public_url": "https://tax.example.internal:8443"}
    dept.config_path.write_text(yaml.safe_dump(doc))
    assert load_config(dept.config_path).config.policy.audit_public_keys == (signer.vkey,)


def test_an_inclusion_proof_vouches_for_the_exact_entry_bytes(tmp_path: Path, signer: NoteSigner) -> None:
    gateway = PlayedGateway.open(tmp_path / "g.sqlite3", signer)
    gateway.events([f"e{i}" for i in range(6)])
    checkpoint = gateway.checkpoint()
    entry = gateway.log.entry(4)
    assert entry is not None
    prev, proof = bytes.fromhex(entry.prev_hash), gateway.log.inclusion_proof(4, checkpoint.size)
    assert check_inclusion(checkpoint, 4, prev, entry.canonical, proof)["name"] == "e3"
    edited = entry.canonical.replace(b'"e3"', b'"e9"')
    for args in ((5, prev, entry.canonical), (4, prev, edited), (4, bytes(32), entry.canonical)):
        with pytest.raises(ProofError):
            check_inclusion(checkpoint, args[0], args[1], args[2], proof)
    with pytest.raises(ProofError):
        check_inclusion(checkpoint, 7, prev, entry.canonical, proof)


# --- what the connector checks at the extract


def test_the_request_must_be_in_the_checkpoint_it_carries(
    tax: Witness, signer: NoteSigner, tmp_path: Path
) -> None:
    gateway = PlayedGateway.open(tmp_path / "g.sqlite3", signer)
    gateway.events(["start"])
    req = tax.dept.request("q-incl-0001")
    # A checkpoint signed before the extract was logged cannot include it.
    early = gateway.checkpoint()
    seq = gateway.plan(req)
    r = tax.send(req.model_copy(update={**gateway.fields(1, early, 0), "witness_seq": seq}))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    # An entry that is in the checkpoint but records another extract (another dataset's digest).
    other = gateway.plan(req.model_copy(update={"measures": ("wage_income",)}))
    checkpoint = gateway.checkpoint()
    r = tax.send(req.model_copy(update=gateway.fields(other, checkpoint, 0)))
    assert r.status_code == 403 and "does not record this extract" in r.json()["message"]
    # Nothing was witnessed or served by either refusal.
    assert tax.service.state.witnessed()[0] == 0 and tax.service.state.spent(budget_window()) == 0
    r = tax.send(req.model_copy(update=gateway.fields(seq, checkpoint, 0)))
    assert r.status_code == 200
    assert tax.service.state.witnessed()[0] == checkpoint.size


def test_an_identical_retry_with_fresh_witness_fields_gets_the_stored_answer(
    tax: Witness, signer: NoteSigner, tmp_path: Path
) -> None:
    gateway = PlayedGateway.open(tmp_path / "g.sqlite3", signer)
    req = tax.dept.request("q-retry-0001")
    seq = gateway.plan(req)
    first = tax.send(req.model_copy(update=gateway.fields(seq, gateway.checkpoint(), 0)))
    assert first.status_code == 200
    witnessed = tax.service.state.witnessed()[0]
    gateway.events(["a run died before the answer arrived", "the gateway restarts"])
    # The rerun logs the same extract again and carries a fresh checkpoint with fresh proofs.
    again = tax.send(gateway.witnessed(req, witnessed))
    assert again.status_code == 200 and again.content == first.content
    assert again.headers[H_COSIGNATURE] != first.headers[H_COSIGNATURE]
    # Another request for the same (query, dataset), under a second approval the department signed.
    assert req.approval is not None
    later = req.approval.approval.model_copy(update={"issued_at": req.approval.approval.issued_at + 1})
    second = req.model_copy(update={"approval": sign_approval(tax.dept.approval_key, later)})
    changed = gateway.witnessed(second, tax.service.state.witnessed()[0])
    assert tax.send(changed).json()["error"] == "already_served"


def test_a_stale_checkpoint_is_refused_and_a_rolled_back_log_fails_verify(
    tax: Witness, signer: NoteSigner, tmp_path: Path
) -> None:
    gateway = PlayedGateway.open(tmp_path / "g.sqlite3", signer)
    gateway.events([f"e{i}" for i in range(4)])
    old_req = tax.dept.request("q-stale-0001")
    old_seq = gateway.plan(old_req)
    old = gateway.checkpoint()
    restored = _snapshot(tmp_path / "g.sqlite3", tmp_path / "backup.sqlite3", signer)
    _served(tax, gateway, "q-stale-0002", 0)
    witnessed = tax.service.state.witnessed()[0]
    assert witnessed > old.size
    # The older checkpoint, with a valid proof that the witnessed one extends it: still refused.
    r = tax.send(old_req.model_copy(update=gateway.fields(old_seq, old, witnessed)))
    assert r.status_code == 409 and r.json() == {
        **r.json(),
        "error": "checkpoint_stale",
        "witnessed_size": witnessed,
    }
    assert tax.service.state.witnessed()[0] == witnessed
    # The auditor saved the checkpoint the connector witnessed; the operator restores an older backup.
    saved = tax.service.state.witnessed()[1]
    assert saved is not None
    report = _verify(
        restored, tmp_path / "restored.jsonl", trusted_checkpoints=[(saved, "the saved checkpoint")]
    )
    assert not report.ok
    assert any(p.kind == "truncated" and "rolled back" in p.message for p in report.problems)
    honest = _verify(
        gateway, tmp_path / "honest.jsonl", trusted_checkpoints=[(saved, "the saved checkpoint")]
    )
    assert honest.ok and honest.anchors_checked == 1


# --- rewrites re-signed with the audit key


def _forge(prefix: PlayedGateway, tail: list[dict[str, object]]) -> PlayedGateway:
    """The operator's forgery: the untouched prefix, then an edited tail, re-signed with the audit key."""
    prefix.log.append_many(tail)
    prefix.checkpoint()
    return prefix


def test_a_tail_edit_resigned_is_caught_at_the_next_extract_and_by_verify_with_cosignatures(
    tax: Witness, signer: NoteSigner, tmp_path: Path
) -> None:
    gateway = PlayedGateway.open(tmp_path / "g.sqlite3", signer)
    gateway.events(["e0", "e1"])
    prefix = _snapshot(tmp_path / "g.sqlite3", tmp_path / "forged.sqlite3", signer)
    _served(tax, gateway, "q-tail-0001", 0)
    gateway.events(["query.released with its DP values"])
    witnessed = tax.service.state.witnessed()[0]
    honest = _verify(gateway, tmp_path / "honest.jsonl", witness_keys=[tax.key()])
    assert honest.ok and honest.witnessed["tax"].size == witnessed and honest.witnessed["tax"].agrees
    # The operator edits the tail (the last entries, the extract's own record among them) and re-signs.
    tail = [e.event for e in gateway.log.entries(3)]
    tail[0] = {**tail[0], "dataset": "an extract the operator would rather not show"}
    forged = _forge(prefix, tail)
    # verify with the audit key alone passes the forgery; the cosignature in the export exposes it.
    assert _verify(forged, tmp_path / "forged.jsonl").ok
    report = _verify(forged, tmp_path / "forged.jsonl", witness_keys=[tax.key()])
    assert not report.ok and not report.witnessed["tax"].agrees
    assert any(p.kind == "fork" for p in report.problems)
    # The connector refuses the forged history at the next extract, and from then on serves nothing.
    r = tax.send(forged.witnessed(tax.dept.request("q-tail-0002"), witnessed))
    assert r.status_code == 409 and r.json()["error"] == "fork_detected"
    assert tax.service.state.witnessed()[2] is True
    r = tax.send(gateway.witnessed(tax.dept.request("q-tail-0003"), witnessed))
    assert r.status_code == 409 and r.json()["error"] == "fork_detected"


def test_a_deletion_with_renumbering_is_caught_by_the_connector_and_by_verify(
    tax: Witness, signer: NoteSigner, tmp_path: Path
) -> None:
    gateway = PlayedGateway.open(tmp_path / "g.sqlite3", signer)
    gateway.events(["e0"])
    prefix = tmp_path / "prefix.sqlite3"
    _snapshot(tmp_path / "g.sqlite3", prefix, signer)
    gateway.events(["an embarrassing refusal", "e2"])
    _served(tax, gateway, "q-del-0001", 0)
    witnessed = tax.service.state.witnessed()[0]
    # Entry 2 is deleted and the later ones renumbered, padded so the log does not look shorter.
    tail = [e.event for e in gateway.log.entries(3)]
    pad: dict[str, object] = {"action": "test.event", "actor": "t"}
    forged = _forge(_snapshot(prefix, tmp_path / "forged.sqlite3", signer), [*tail, pad])
    # With the cosignature entries dropped too, the department's own log export is the evidence.
    kept = [e for e in tail if e.get("action") != "checkpoint.cosigned"]
    without = _forge(_snapshot(prefix, tmp_path / "without.sqlite3", signer), [*kept, pad, pad])
    handed = tax.export(tmp_path / "tax-log.jsonl")
    report = _verify(without, tmp_path / "without.jsonl", witness_keys=[tax.key()], cosigned=[handed])
    assert not report.ok and report.witnessed["tax"].size == witnessed
    r = tax.send(forged.witnessed(tax.dept.request("q-del-0002"), witnessed))
    assert r.status_code == 409 and r.json()["error"] == "fork_detected"
    # reconcile sees it too, and says so with a non-zero exit.
    export_log(forged.log, tmp_path / "forged.jsonl")
    assert any(d.kind.startswith("checkpoint") for d in reconcile(tmp_path / "forged.jsonl", handed))
    result = CliRunner().invoke(audit_app, ["reconcile", str(tmp_path / "forged.jsonl"), str(handed)])
    assert result.exit_code == 1


def test_a_split_view_between_two_connectors_is_caught_with_both_cosignatures(
    tax: Witness, signer: NoteSigner, tmp_path: Path
) -> None:
    with witness(tmp_path / "register", signer, name="register") as register:
        honest = PlayedGateway.open(tmp_path / "honest.sqlite3", signer)
        honest.events(["e0", "e1"])
        # The operator shows the register another history from entry 2 on, signed with the same key.
        other = PlayedGateway.open(tmp_path / "other.sqlite3", signer)
        other.events(["e0", "a history only the register sees"])
        _served(tax, honest, "q-split-0001", 0)
        _served(register, other, "q-split-0002", 0)
        # Each connector alone saw a consistent log; together they cannot both be right.
        tax_log, register_log = (
            tax.export(tmp_path / "tax.jsonl"),
            register.export(tmp_path / "register.jsonl"),
        )
        keys = [tax.key(), register.key()]
        report = _verify(
            honest, tmp_path / "honest.jsonl", witness_keys=keys, cosigned=[tax_log, register_log]
        )
        assert not report.ok
        assert report.witnessed["tax"].agrees and not report.witnessed["register"].agrees
        result = CliRunner().invoke(
            audit_app,
            [
                "verify",
                str(tmp_path / "honest.jsonl"),
                "-k",
                signer.vkey,
                "--witness-key",
                f"tax={public_key_text(tax.key().public_key)}",
                "--witness-key",
                register.key().vkey,
                "--cosigned",
                str(register_log),
            ],
        )
        assert result.exit_code == 1 and "register" in result.output, result.output

        def forks(connector_log: Path) -> list[object]:
            found = reconcile(tmp_path / "honest.jsonl", connector_log)
            return [d for d in found if d.kind.startswith("checkpoint")]

        assert forks(register_log) and not forks(tax_log)


def test_the_connector_log_keeps_each_cosignature_it_returned(
    tax: Witness, signer: NoteSigner, tmp_path: Path
) -> None:
    gateway = PlayedGateway.open(tmp_path / "g.sqlite3", signer)
    line = _served(tax, gateway, "q-log-0001", 0)
    entries = [
        json.loads(raw)["entry"] for raw in tax.export(tmp_path / "log.jsonl").read_text().splitlines()[1:]
    ]
    served = [e for e in entries if e.get("path") == "/v1/extract"]
    assert served[-1]["cosignature"] == line
    assert open_cosignature(Checkpoint.parse_unverified(served[-1]["checkpoint"]), line, tax.key())
