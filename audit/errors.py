"""Errors raised by the audit log.

    AuditError
     ├── AuditUnavailable       the store cannot be written or read: the gateway answers 503
     ├── UnsafeEntry            an entry holds a secret-looking field, a reserved action, or no JSON
     ├── ProofError             an inclusion or consistency proof does not verify
     ├── CheckpointError        a signed note or checkpoint is malformed or not trusted
     ├── ForkDetected           two signed checkpoints cannot both be views of one append-only log
     ├── CheckpointStale        a checkpoint smaller than the one a witness already holds
     ├── ExportFormatError      an export file does not follow the export format (names the line)
     └── VerificationFailed     an export does not verify; carries the report

Messages never carry entry contents, keys or secrets: they name sequence numbers, sizes and fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit.verify import VerifyReport


class AuditError(Exception):
    """Base of every audit error."""


class AuditUnavailable(AuditError):
    """The audit store cannot be written (or read). Fail closed: refuse the request that needed the entry."""


class UnsafeEntry(AuditError, ValueError):
    """An entry must not be logged as it is; the message names the offending field, never its value.

    `field` is the dotted path of that field in the event (None when the event as a whole is refused).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class ProofError(AuditError):
    """A Merkle proof does not verify, or its sizes and indices are out of range."""


class CheckpointError(AuditError):
    """A signed note or checkpoint cannot be parsed or is not signed by a trusted key."""


class ForkDetected(AuditError):
    """Two signed checkpoints disagree: same size with different roots, or no valid consistency proof.

    Either the gateway showed different histories to different parties, or it rewrote its log. A connector
    that sees this must refuse to serve until an auditor has reconciled the logs.
    """

    def __init__(self, message: str, *, old_size: int, new_size: int) -> None:
        self.old_size = old_size
        self.new_size = new_size
        super().__init__(message)


class CheckpointStale(AuditError):
    """A consistent checkpoint, but smaller than the one this witness already holds: refused, so a gateway
    cannot show a witness an older view of its log (a restored backup, a hidden tail)."""

    def __init__(self, *, witnessed_size: int, presented_size: int) -> None:
        self.witnessed_size = witnessed_size
        self.presented_size = presented_size
        super().__init__(
            f"the checkpoint of size {presented_size} is older than the one of size {witnessed_size} "
            "already witnessed"
        )


class ExportFormatError(AuditError):
    """An export file does not follow the format; the message names the line number."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}")


class VerificationFailed(AuditError):
    """An export does not verify; `report` has every problem and the first bad sequence number."""

    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        first = report.first_problem
        detail = f"first bad sequence number {first.seq}: {first.message}" if first else "unknown problem"
        super().__init__(f"the audit export does not verify: {detail}")
