"""The tamper-evident audit log: every request and event, hash-chained, Merkle-checkpointed, signed.

    entries     what an entry is, byte for byte, and what it must never hold
    store       the append-only SQLAlchemy store: gapless seq, group commit, queries, proofs
    merkle      RFC 6962/9162 tree hashing, inclusion and consistency proofs
    checkpoint  signed-note checkpoints, the checkpointer, audit key rotation
    export      JSON Lines exports of the gateway's log and of a connector's local log
    verify      offline verification of an export with the audit public key
    witness     what a connector checks before trusting a new checkpoint
    cosignature a connector's signed statement of the checkpoint it witnessed
    reconcile   the gateway's log against a connector's
    cli         `fedgate audit ...`

The names below are importable from `audit` directly; they load their module on first use, so importing
`audit` (as the CLI does) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AuditLog": "audit.store",
    "AppendedEntry": "audit.store",
    "StoredEntry": "audit.store",
    "TreeHead": "audit.store",
    "audit_metadata": "audit.store",
    "create_tables": "audit.store",
    "check_event": "audit.entries",
    "connector_call_event": "audit.entries",
    "scrub": "audit.entries",
    "Checkpoint": "audit.checkpoint",
    "CheckpointPolicy": "audit.checkpoint",
    "Checkpointer": "audit.checkpoint",
    "NoteSigner": "audit.checkpoint",
    "NoteVerifier": "audit.checkpoint",
    "load_signer": "audit.checkpoint",
    "load_verifier": "audit.checkpoint",
    "open_checkpoint": "audit.checkpoint",
    "rotate_key": "audit.checkpoint",
    "export_connector_log": "audit.export",
    "export_log": "audit.export",
    "VerifyReport": "audit.verify",
    "verify_export": "audit.verify",
    "check_consistent": "audit.witness",
    "check_inclusion": "audit.witness",
    "CheckpointStale": "audit.errors",
    "Cosignature": "audit.cosignature",
    "Cosigner": "audit.cosignature",
    "CosignatureVerifier": "audit.cosignature",
    "witness": "audit.witness",
    "Difference": "audit.reconcile",
    "reconcile": "audit.reconcile",
    "AuditError": "audit.errors",
    "AuditUnavailable": "audit.errors",
    "CheckpointError": "audit.errors",
    "ForkDetected": "audit.errors",
    "ProofError": "audit.errors",
    "UnsafeEntry": "audit.errors",
    "VerificationFailed": "audit.errors",
}

__all__ = [
    "AppendedEntry",
    "AuditError",
    "AuditLog",
    "AuditUnavailable",
    "Checkpoint",
    "CheckpointError",
    "CheckpointPolicy",
    "CheckpointStale",
    "Checkpointer",
    "Cosignature",
    "CosignatureVerifier",
    "Cosigner",
    "Difference",
    "ForkDetected",
    "NoteSigner",
    "NoteVerifier",
    "ProofError",
    "StoredEntry",
    "TreeHead",
    "UnsafeEntry",
    "VerificationFailed",
    "VerifyReport",
    "audit_metadata",
    "check_consistent",
    "check_event",
    "check_inclusion",
    "connector_call_event",
    "create_tables",
    "export_connector_log",
    "export_log",
    "load_signer",
    "load_verifier",
    "open_checkpoint",
    "reconcile",
    "rotate_key",
    "scrub",
    "verify_export",
    "witness",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'audit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from audit.checkpoint import (
        Checkpoint,
        Checkpointer,
        CheckpointPolicy,
        NoteSigner,
        NoteVerifier,
        load_signer,
        load_verifier,
        open_checkpoint,
        rotate_key,
    )
    from audit.cosignature import Cosignature, CosignatureVerifier, Cosigner
    from audit.entries import check_event, connector_call_event, scrub
    from audit.errors import (
        AuditError,
        AuditUnavailable,
        CheckpointError,
        CheckpointStale,
        ForkDetected,
        ProofError,
        UnsafeEntry,
        VerificationFailed,
    )
    from audit.export import export_connector_log, export_log
    from audit.reconcile import Difference, reconcile
    from audit.store import AppendedEntry, AuditLog, StoredEntry, TreeHead, audit_metadata, create_tables
    from audit.verify import VerifyReport, verify_export
    from audit.witness import check_consistent, check_inclusion, witness
