"""A gateway's audit side played by hand: it logs each extract before signing the checkpoint it carries,
and builds the witness fields (consistency and inclusion proofs) a real runner sends, so tests can also
build the ones a dishonest operator would."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from connector_fixture import Department, signed_call

from audit.checkpoint import Checkpoint, Checkpointer, NoteSigner
from audit.entries import ACTION_COSIGNED, ACTION_EXTRACT_PLANNED
from audit.store import AuditLog
from connectors.protocol import H_COSIGNATURE, ExtractRequest, extract_digest

ORIGIN = "fedgate-test-gateway"


def pin_audit_key(dept: Department, signer: NoteSigner) -> None:
    """Make a department's connector witness the log signed by `signer`."""
    doc = yaml.safe_load(dept.config_path.read_text())
    doc["policy"]["audit_public_keys"] = [signer.vkey]
    dept.config_path.write_text(yaml.safe_dump(doc))


def b64(items: list[bytes]) -> tuple[str, ...]:
    return tuple(base64.b64encode(p).decode() for p in items)


@dataclass
class PlayedGateway:
    log: AuditLog
    signer: NoteSigner
    store: bool = True  # keep signed checkpoints in the log, so exports carry them

    @classmethod
    def open(cls, path: Path, signer: NoteSigner) -> PlayedGateway:
        return cls(AuditLog.open(f"sqlite:///{path}"), signer)

    def __post_init__(self) -> None:
        self._checkpointer = Checkpointer(self.log, self.signer, origin=ORIGIN) if self.store else None

    def events(self, names: list[str]) -> None:
        self.log.append_many({"action": "test.event", "actor": "tester", "name": n} for n in names)

    def plan(self, req: ExtractRequest) -> int:
        """Log the planned extract, as the runner does before signing its checkpoint; return its seq."""
        return self.log.append(
            {
                "action": ACTION_EXTRACT_PLANNED,
                "actor": "gateway",
                "connector": req.connector,
                "query_id": req.query_id,
                "dataset": req.dataset,
                "extract_digest": extract_digest(req),
            }
        ).seq

    def checkpoint(self) -> Checkpoint:
        if self._checkpointer is not None:
            return self._checkpointer.checkpoint()
        size, root = self.log.head()
        return Checkpoint.sign(ORIGIN, size, root, self.signer)

    def record_cosignature(self, response: httpx.Response, req: ExtractRequest) -> str:
        """Log the connector's cosignature as the runner does; return the line."""
        line = base64.b64decode(response.headers[H_COSIGNATURE]).decode()
        assert req.checkpoint is not None
        self.log.append(
            {
                "action": ACTION_COSIGNED,
                "actor": "gateway",
                "outcome": "ok",
                "connector": req.connector,
                "department": req.connector,
                "query_id": req.query_id,
                "size": Checkpoint.parse_unverified(req.checkpoint).size,
                "checkpoint": req.checkpoint,
                "cosignature": line,
            }
        )
        return line

    def fields(self, seq: int, checkpoint: Checkpoint, against: int) -> dict[str, Any]:
        proof: list[bytes] = []
        if 0 < against != checkpoint.size:
            low, high = sorted((against, checkpoint.size))
            proof = self.log.consistency_proof(low, high)
        entry = self.log.entry(seq)
        assert entry is not None
        return {
            "checkpoint": checkpoint.note,
            "checkpoint_proof": b64(proof),
            "checkpoint_against": against,
            "witness_seq": seq,
            "witness_entry": entry.canonical.decode(),
            "witness_prev_hash": entry.prev_hash,
            "witness_inclusion": b64(self.log.inclusion_proof(seq, checkpoint.size)),
        }

    def witnessed(self, req: ExtractRequest, against: int) -> ExtractRequest:
        """`req` logged, checkpointed and carrying its witness fields."""
        seq = self.plan(req)
        return req.model_copy(update=self.fields(seq, self.checkpoint(), against))


def send(dept: Department, url: str, req: ExtractRequest) -> httpx.Response:
    return signed_call(
        url, "/v1/extract", key=dept.gateway_key, connector=dept.name, body=req.body(), query_id=req.query_id
    )
