"""Routes for auditors: search the audit log, prove entries and consistency, export ranges.

The auditor role only (analysts and department admins get 403). A checkpoint or proof needs no trust in
the gateway: an auditor checks it offline with the audit public key (`fedgate audit verify`).
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from audit.errors import ProofError
from audit.export import export_log
from audit.store import AuditLog, StoredEntry
from gateway.api.deps import Auditor, ContextDep, GatewayContext
from gateway.api.errors import error_responses
from gateway.api.schemas import MAX_SEQUENCE
from gateway.errors import Invalid, NotFound

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class EntryOut(BaseModel):
    """One audit entry: a typed event, chained to the one before."""

    seq: int = Field(description="the entry's position in the log, from 1")
    time: str = Field(description="when it was recorded (ISO 8601)")
    hash: str = Field(description="SHA-256 of the entry (hex)")
    prev_hash: str = Field(description="the previous entry's hash (hex)")
    event: dict[str, Any] = Field(description="the event: its action, principal and details; never data")


class EntriesOut(BaseModel):
    """A page of audit entries."""

    entries: list[EntryOut] = Field(description="the entries, in sequence order")
    next_after_seq: int | None = Field(
        description="pass as after_seq for the next page; null on the last page"
    )


class EntryProofOut(BaseModel):
    """An audit entry with its inclusion proof in the log's latest tree."""

    entry: EntryOut = Field(description="the entry")
    tree_size: int = Field(description="the tree size the proof is for")
    root: str = Field(description="the tree head at that size (hex)")
    inclusion_proof: list[str] = Field(description="the proof's hashes (base64), leaf to root")


class CheckpointOut(BaseModel):
    """A signed checkpoint of the audit log: its size and Merkle root (RFC 6962)."""

    size: int = Field(description="entries the checkpoint covers")
    root: str = Field(description="Merkle tree head over those entries (hex)")
    note: str = Field(description="the signed note (checkpoint text and signatures), for witnesses")
    public_key: str = Field(description="the log's Ed25519 public key (base64) that signed it")


class ConsistencyOut(BaseModel):
    """A consistency proof between two sizes of the audit log (RFC 6962)."""

    from_size: int = Field(description="the older size")
    to_size: int = Field(description="the newer size")
    proof: list[str] = Field(description="the proof's hashes (base64)")


def _log(ctx: GatewayContext) -> AuditLog:
    return ctx.audit.log


def _entry(e: StoredEntry) -> EntryOut:
    return EntryOut(seq=e.seq, time=e.record["time"], hash=e.hash, prev_hash=e.prev_hash, event=e.event)


def _b64(items: list[bytes]) -> list[str]:
    return [base64.b64encode(p).decode() for p in items]


@router.get("/entries", responses=error_responses(403, 422), response_model=EntriesOut)
def list_entries(
    ctx: ContextDep,
    auditor: Auditor,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    actor: str | None = Query(None, max_length=100),
    action: str | None = Query(None, max_length=100),
    query_id: str | None = Query(None, max_length=80),
    connector: str | None = Query(None, max_length=64),
    outcome: str | None = Query(None, max_length=32),
    after_seq: int = Query(0, ge=0, le=MAX_SEQUENCE),
    limit: int = Query(100, ge=1, le=1000),
) -> EntriesOut:
    """Entries matching every filter, by sequence number; page with `after_seq`."""
    for moment, name in ((since, "since"), (until, "until")):
        if moment is not None and moment.tzinfo is None:
            raise Invalid("give a time zone (e.g. Z)", name)
    page = _log(ctx).filter(
        since=since,
        until=until,
        actor=actor,
        action=action,
        query_id=query_id,
        connector=connector,
        outcome=outcome,
        after_seq=after_seq,
        limit=limit,
    )
    return EntriesOut(
        entries=[_entry(e) for e in page], next_after_seq=page[-1].seq if len(page) == limit else None
    )


@router.get("/entries/{seq}", responses=error_responses(403, 404, 422), response_model=EntryProofOut)
def get_entry(
    seq: Annotated[int, PathParam(ge=0, le=MAX_SEQUENCE)], ctx: ContextDep, auditor: Auditor
) -> EntryProofOut:
    """One entry with its inclusion proof in the current tree."""
    audit_log = _log(ctx)
    entry = audit_log.entry(seq)
    if entry is None:
        raise NotFound("no entry with that sequence number", "seq")
    size, root = audit_log.head()
    return EntryProofOut(
        entry=_entry(entry),
        tree_size=size,
        root=root.hex(),
        inclusion_proof=_b64(audit_log.inclusion_proof(seq, size)),
    )


def latest_checkpoint(ctx: GatewayContext) -> CheckpointOut:
    assert ctx.checkpointer is not None
    stored = _log(ctx).latest_checkpoint()
    if stored is None:
        ctx.checkpointer.checkpoint()
        stored = _log(ctx).latest_checkpoint()
    assert stored is not None
    return CheckpointOut(
        size=stored.size, root=stored.root, note=stored.note, public_key=ctx.checkpointer.verifier.vkey()
    )


@router.get("/checkpoint", responses=error_responses(403, 404), response_model=CheckpointOut)
def get_checkpoint(ctx: ContextDep, auditor: Auditor) -> CheckpointOut:
    """The latest signed checkpoint (signed-note text) and the key to check it with."""
    return latest_checkpoint(ctx)


@router.post("/checkpoint", responses=error_responses(403), response_model=CheckpointOut)
def sign_checkpoint(ctx: ContextDep, auditor: Auditor) -> CheckpointOut:
    """Sign a checkpoint of the current head now."""
    assert ctx.checkpointer is not None
    ctx.checkpointer.checkpoint()
    return latest_checkpoint(ctx)


@router.get("/consistency", responses=error_responses(403, 422), response_model=ConsistencyOut)
def consistency(
    ctx: ContextDep,
    auditor: Auditor,
    from_size: int = Query(ge=0, le=MAX_SEQUENCE),
    to_size: int = Query(ge=0, le=MAX_SEQUENCE),
) -> ConsistencyOut:
    """The RFC 9162 consistency proof between two tree sizes."""
    try:
        proof = _log(ctx).consistency_proof(from_size, to_size)
    except (ProofError, ValueError) as exc:
        raise Invalid(str(exc), "from_size") from None
    return ConsistencyOut(from_size=from_size, to_size=to_size, proof=_b64(proof))


@router.get("/export", responses=error_responses(403, 422), response_class=FileResponse)
def export(
    ctx: ContextDep,
    auditor: Auditor,
    background: BackgroundTasks,
    start: int = Query(1, ge=1, le=MAX_SEQUENCE),
    end: int | None = Query(None, ge=1, le=MAX_SEQUENCE),
) -> FileResponse:
    """A range as JSON Lines with the checkpoints that cover it (a fresh checkpoint of the head is signed)."""
    work = Path(tempfile.mkdtemp(prefix="fedgate-audit-"))
    out = work / "audit-export.jsonl"
    try:
        export_log(_log(ctx), out, start=start, end=end, checkpointer=ctx.checkpointer)
    except ValueError as exc:
        raise Invalid(str(exc), "start") from None
    background.add_task(shutil.rmtree, work, True)
    return FileResponse(out, media_type="application/x-ndjson", filename="audit-export.jsonl")
