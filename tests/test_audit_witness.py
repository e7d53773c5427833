"""Witnessing and reconciling: a history rewritten and re-signed with the gateway's own key is caught.

A gateway log and a real connector state are driven the way the gateway and the connector service write
them: for each extract call, the connector records the request digest, the answer's digest and the
checkpoint the request carried; the gateway records the same call as a `connector.call` event.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from audit.checkpoint import Checkpoint, Checkpointer, NoteSigner
from audit.cli import audit_app
from audit.entries import connector_call_event
from audit.errors import CheckpointError, CheckpointStale, ForkDetected
from audit.export import export_connector_log, export_log, read_connector_log
from audit.reconcile import DifferenceKind, reconcile
from audit.store import AuditLog
from audit.verify import verify_export
from audit.witness import check_consistent, witness
from connectors.state import ConnectorState

ORIGIN = "audit.fedgate.example/test"
CALLS = 5


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass
class World:
    log: AuditLog
    checkpointer: Checkpointer
    state: ConnectorState
    last_seen: str | None
    events: list[dict[str, Any]]  # what the gateway appended, in order, to replay a rewritten history


def _http(i: int) -> dict[str, Any]:
    return {"action": "http.request", "actor": "analyst:alice", "outcome": "ok", "status": 200, "i": i}


def _call(world: World, i: int, *, rewritten_log: AuditLog | None = None) -> None:
    """One extract call: the gateway signs a checkpoint, the connector witnesses it and logs the call."""
    note = world.checkpointer.checkpoint().note
    last = Checkpoint.parse_unverified(world.last_seen) if world.last_seen else None
    proof = world.log.consistency_proof(last.size, Checkpoint.parse_unverified(note).size) if last else []
    world.last_seen = witness(world.last_seen, note, proof, [world.checkpointer.verifier], origin=ORIGIN).note
    request, response = _digest("request", i), _digest("response", i)
    world.state.append_log(
        {
            "kind": "request",
            "request_id": _digest("id", i)[:32],
            "method": "POST",
            "path": "/v1/extract",
            "status": 200,
            "client": "127.0.0.1",
            "query_id": "q1",
            "latency_ms": 1.5,
            "dataset": "wages",
            "request_digest": request,
            "checkpoint": note,
            "replay": False,
            "response_digest": response,
            "epsilon": "0.5",
        }
    )
    event = connector_call_event(
        connector="tax",
        path="/v1/extract",
        request_digest=request,
        response_digest=response,
        connector_signature="c2lnbmF0dXJl",
        checkpoint=note,
        outcome="ok",
        query_id="q1",
        dataset="wages",
    )
    world.log.append(event)
    world.events.append(event)


def _world(tmp_path: Path, signer: NoteSigner) -> World:
    log = AuditLog.open(f"sqlite:///{tmp_path / 'gateway.db'}")
    world = World(log, Checkpointer(log, signer, origin=ORIGIN), ConnectorState(tmp_path / "tax"), None, [])
    for i in range(CALLS):
        for j in range(3):
            event = _http(10 * i + j)
            log.append(event)
            world.events.append(event)
        _call(world, i)
    return world


def _rewrite(
    tmp_path: Path, world: World, signer: NoteSigner, drop_call: int
) -> tuple[AuditLog, Checkpointer]:
    """The operator's rewrite: the same history without one call, longer, re-signed with the gateway key."""
    log = AuditLog.open(f"sqlite:///{tmp_path / 'rewritten.db'}")
    calls = 0
    for event in world.events:
        if event["action"] == "connector.call":
            calls += 1
            if calls == drop_call:
                continue
        log.append(event)
    log.append_many(_http(1000 + i) for i in range(10))
    return log, Checkpointer(log, signer, origin=ORIGIN)


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


def test_an_honest_gateway_and_connector_agree(tmp_path: Path, signer: NoteSigner) -> None:
    world = _world(tmp_path, signer)
    gateway_export = tmp_path / "gateway.jsonl"
    connector_export = tmp_path / "tax.jsonl"
    export_log(world.log, gateway_export, checkpointer=world.checkpointer)
    assert export_connector_log(world.state, connector_export, connector="tax") == CALLS
    name, entries = read_connector_log(connector_export)
    assert name == "tax" and [e["seq"] for e in entries] == list(range(1, CALLS + 1))
    assert reconcile(gateway_export, connector_export) == []
    runner = CliRunner()
    result = runner.invoke(audit_app, ["reconcile", str(gateway_export), str(connector_export)])
    assert result.exit_code == 0 and "agree" in result.output
    world.state.close()


def test_a_rewritten_history_resigned_with_the_gateway_key_is_caught(
    tmp_path: Path, signer: NoteSigner
) -> None:
    world = _world(tmp_path, signer)
    forged_log, forged_checkpointer = _rewrite(tmp_path, world, signer, drop_call=2)
    forged = forged_checkpointer.checkpoint()
    # The forged history is internally sound and signed with the real key ...
    gateway_export = tmp_path / "gateway.jsonl"
    export_log(forged_log, gateway_export)
    assert verify_export(gateway_export, [signer.vkey]).ok

    # ... but the connector refuses it: it cannot extend the checkpoint the connector last saw.
    assert world.last_seen is not None
    last = Checkpoint.parse_unverified(world.last_seen)
    proof = forged_log.consistency_proof(last.size, forged.size)
    with pytest.raises(ForkDetected):
        witness(world.last_seen, forged.note, proof, [signer.verifier], origin=ORIGIN)

    # ... and reconciling the logs shows the hidden call and the checkpoints the rewrite cannot reproduce.
    connector_export = tmp_path / "tax.jsonl"
    export_connector_log(world.state, connector_export, connector="tax")
    differences = reconcile(gateway_export, connector_export)
    kinds = [d.kind for d in differences]
    assert DifferenceKind.CALL_MISSING_IN_GATEWAY in kinds
    missing = next(d for d in differences if d.kind == DifferenceKind.CALL_MISSING_IN_GATEWAY)
    assert missing.request_digest == _digest("request", 1) and missing.connector_seq == 2
    differing = {d.checkpoint_size for d in differences if d.kind == DifferenceKind.CHECKPOINT_DIFFERS}
    assert differing  # the checkpoints witnessed after the dropped call
    result = CliRunner().invoke(
        audit_app, ["reconcile", str(gateway_export), str(connector_export)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1 and "call_missing_in_gateway" in result.output
    world.state.close()


def test_witness_accepts_growth_and_refuses_stale_checkpoints_and_forks(
    tmp_path: Path, signer: NoteSigner
) -> None:
    log = AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}")
    cp = Checkpointer(log, signer)
    log.append_many(_http(i) for i in range(7))
    seven = cp.checkpoint()
    log.append_many(_http(i) for i in range(7, 20))
    twenty = cp.checkpoint()
    first = witness(None, seven.note, [], [signer.verifier])  # trust on first use
    assert first.size == 7
    proof = log.consistency_proof(7, 20)
    assert witness(seven.note, twenty.note, proof, [signer.verifier]).size == 20
    # An older checkpoint, even one the newer extends, is refused: a gateway cannot show an older view.
    with pytest.raises(CheckpointStale) as stale:
        witness(twenty.note, seven.note, proof, [signer.verifier])
    assert (stale.value.witnessed_size, stale.value.presented_size) == (20, 7)
    assert witness(twenty.note, twenty.note, [], [signer.verifier]).note == twenty.note
    assert check_consistent(twenty, twenty, []) == twenty
    with pytest.raises(ForkDetected):
        witness(seven.note, twenty.note, proof[:-1], [signer.verifier])
    # Same size, another root: a fork, whatever the proof.
    other = AuditLog.open(f"sqlite:///{tmp_path / 'b.db'}")
    other.append_many(_http(i + 100) for i in range(20))
    fork = Checkpointer(other, signer).checkpoint()
    with pytest.raises(ForkDetected, match="size 20"):
        witness(twenty.note, fork.note, [], [signer.verifier])
    # A checkpoint not signed by the pinned key is refused before any comparison.
    stranger = Checkpoint.sign(signer.name, 20, twenty.root, NoteSigner.generate(signer.name))
    with pytest.raises(CheckpointError):
        witness(seven.note, stranger.note, proof, [signer.verifier])


def test_reconcile_names_each_kind_of_difference(tmp_path: Path, signer: NoteSigner) -> None:
    world = _world(tmp_path, signer)
    # The gateway logs a call the connector never saw, and one whose answer differs.
    note = world.checkpointer.checkpoint().note
    ghost = connector_call_event(
        connector="tax",
        path="/v1/extract",
        request_digest=_digest("ghost"),
        response_digest=_digest("ghost answer"),
        connector_signature=None,
        checkpoint=note,
        outcome="ok",
    )
    world.log.append(ghost)
    other_connector = {**ghost, "connector": "civil", "request_digest": _digest("civil")}
    world.log.append(other_connector)  # another connector's call is not this connector's business
    schema_call = {**ghost, "path": "/v1/schema", "request_digest": _digest("schema")}
    world.log.append(schema_call)  # connectors log digests of extracts only
    differing = connector_call_event(
        connector="tax",
        path="/v1/extract",
        request_digest=_digest("request", CALLS),
        response_digest=_digest("another answer"),
        connector_signature=None,
        checkpoint=note,
        outcome="ok",
    )
    world.state.append_log(
        {
            "kind": "request",
            "request_digest": _digest("request", CALLS),
            "response_digest": _digest("response"),
        }
    )
    world.log.append(differing)
    gateway_export = tmp_path / "gateway.jsonl"
    export_log(world.log, gateway_export, checkpointer=world.checkpointer)
    connector_export = tmp_path / "tax.jsonl"
    export_connector_log(world.state, connector_export, connector="tax")
    kinds = {d.kind for d in reconcile(gateway_export, connector_export)}
    assert kinds == {
        DifferenceKind.CALL_MISSING_IN_CONNECTOR,
        DifferenceKind.RESPONSE_DIFFERS,
        DifferenceKind.CALL_CHECKPOINT_DIFFERS,
    }

    # A gateway export that stops before what the connector witnessed.
    short = tmp_path / "short.jsonl"
    export_log(world.log, short, end=5)
    kinds = {d.kind for d in reconcile(short, connector_export)}
    assert DifferenceKind.CHECKPOINT_MISSING_IN_GATEWAY in kinds

    # An edited connector log no longer chains.
    lines = connector_export.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["entry"]["response_digest"] = _digest("edited")
    lines[2] = json.dumps(entry)
    connector_export.write_text("\n".join(lines) + "\n")
    broken = [
        d
        for d in reconcile(gateway_export, connector_export)
        if d.kind == DifferenceKind.CONNECTOR_LOG_BROKEN
    ]
    assert [d.connector_seq for d in broken] == [2]
    with pytest.raises(ValueError, match="connector"):
        headerless = tmp_path / "headerless.jsonl"
        headerless.write_text("\n".join(lines[1:]) + "\n")
        reconcile(gateway_export, headerless)
    world.state.close()
