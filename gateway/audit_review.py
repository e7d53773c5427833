"""What the auditor's pages show of the audit log: evidence a browser checks, witnessed sizes, exports.

    entry_evidence(ctx, seq)       an entry's canonical bytes, its chain hashes, the signed checkpoint that
                                   covers it and the inclusion proof at that checkpoint's size: everything
                                   the page needs to re-hash the entry and verify it against a pinned key
    witnessed_sizes(log)           per connector, the largest checkpoint it cosigned (verified at the time
                                   under its pinned key) and its department
    entries_csv(entries)           the filter fields of entries as CSV (the JSON Lines export is audit.export)
    reconcile_upload(ctx, data)    the gateway's export reconciled with a connector log handed over

The gateway serves evidence; it is not trusted to have checked it. The page verifies the entry hash, the
RFC 9162 inclusion proof and the checkpoint's Ed25519 signature itself (static/js/merkle-verify.js,
signed-note.js) against the audit key the auditor pinned in the browser.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from audit.entries import ACTION_COSIGNED
from audit.errors import CheckpointError, ExportFormatError, ProofError
from audit.export import export_log
from audit.reconcile import Difference, reconcile
from audit.store import AuditLog, StoredCheckpoint, StoredEntry
from gateway.context import GatewayContext
from gateway.errors import Invalid, NotFound

__all__ = [
    "EntryEvidence",
    "Witnessed",
    "entries_csv",
    "entry_evidence",
    "reconcile_upload",
    "witnessed_sizes",
]

CSV_COLUMNS = ("seq", "time", "actor", "action", "query_id", "connector", "outcome", "status", "hash")
MAX_CONNECTOR_LOG_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class EntryEvidence:
    entry: StoredEntry
    checkpoint: StoredCheckpoint
    proof: list[bytes]
    verifier_key: str  # the gateway's current audit key, shown beside the pinned one, never trusted as a pin

    @property
    def canonical_b64(self) -> str:
        return base64.b64encode(self.entry.canonical).decode()

    @property
    def proof_b64(self) -> list[str]:
        return [base64.b64encode(p).decode() for p in self.proof]

    @property
    def proof_json(self) -> str:
        return json.dumps(self.proof_b64)


def entry_evidence(ctx: GatewayContext, seq: int) -> EntryEvidence:
    log = ctx.audit.log
    entry = log.entry(seq)
    if entry is None:
        raise NotFound("no entry with that sequence number", "seq")
    assert ctx.checkpointer is not None
    checkpoint = log.latest_checkpoint()
    if checkpoint is None or checkpoint.size < seq:
        ctx.checkpointer.checkpoint()  # the head now covers the entry: sign it, as an export does
        checkpoint = log.latest_checkpoint()
    assert checkpoint is not None
    return EntryEvidence(
        entry=entry,
        checkpoint=checkpoint,
        proof=log.inclusion_proof(seq, checkpoint.size),
        verifier_key=ctx.checkpointer.verifier.vkey(),
    )


@dataclass
class Witnessed:
    connector: str
    department: str | None
    size: int
    time: str
    invalid: int = 0  # cosignatures that did not verify under the connector's pinned key when received


def witnessed_sizes(log: AuditLog, page: int = 1000) -> list[Witnessed]:
    """The largest size each connector cosigned, from the log's `checkpoint.cosigned` entries."""
    out: dict[str, Witnessed] = {}
    after = 0
    while True:
        batch = log.filter(action=ACTION_COSIGNED, after_seq=after, limit=page)
        for e in batch:
            event = e.event
            name = str(event.get("connector"))
            dept = event.get("department")
            seen = out.setdefault(name, Witnessed(name, dept if isinstance(dept, str) else None, 0, ""))
            if event.get("cosignature_outcome") != "ok":
                seen.invalid += 1
                continue
            size = event.get("size")
            if isinstance(size, int) and size >= seen.size:
                seen.size, seen.time = size, e.record["time"]
        if len(batch) < page:
            break
        after = batch[-1].seq
    return sorted(out.values(), key=lambda w: (w.department or "", w.connector))


def entries_csv(entries: Iterable[StoredEntry]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        event = e.event
        writer.writerow([e.seq, e.record["time"], *(event.get(k, "") for k in CSV_COLUMNS[2:8]), e.hash])
    return buffer.getvalue()


def reconcile_upload(ctx: GatewayContext, connector_log: bytes, connector: str | None) -> list[Difference]:
    """Reconcile the whole gateway log (exported now, with a fresh checkpoint) with a connector's export."""
    if len(connector_log) > MAX_CONNECTOR_LOG_BYTES:
        raise Invalid(f"a connector log is limited to {MAX_CONNECTOR_LOG_BYTES} bytes here", "connector_log")
    with tempfile.TemporaryDirectory(prefix="fedgate-reconcile-") as work:
        gateway_export = Path(work) / "gateway.jsonl"
        handed = Path(work) / "connector.jsonl"
        handed.write_bytes(connector_log)
        export_log(ctx.audit.log, gateway_export, checkpointer=ctx.checkpointer)
        try:
            return reconcile(gateway_export, handed, connector=connector or None)
        except (ExportFormatError, CheckpointError, ProofError, UnicodeDecodeError) as exc:
            raise Invalid(
                f"not a connector log export (`fedgate connector export-log`): {exc}", "connector_log"
            ) from None
        except ValueError as exc:
            raise Invalid(str(exc), "connector") from None
