"""Reconcile the gateway's audit export with one connector's local log export.

Each side records every connector call: the gateway as a `connector.call` event (see
`audit.entries.connector_call_event`), the connector as a local log entry with the same request digest,
the digest of the answer it sent, and the checkpoint the request carried. An auditor compares them:

* calls the connector served that the gateway's log lacks (the gateway hid or rewrote them);
* extract calls the gateway logged that the connector never saw;
* calls whose answer digests, or whose carried checkpoints, differ between the two sides;
* checkpoints the connector witnessed that the gateway's log does not reproduce: the gateway's entries
  hash to another root at that size, or a signed checkpoint of that size in the export has another root,
  or the export ends before that size. A history rewritten and re-signed with the gateway's own key shows
  up here, because the connector kept the checkpoints of the history it was shown.

Only the gateway's extract calls (`path` ending in `/extract`) are expected in the connector's log: those
are the calls a connector records with their request digest. Export both logs at about the same time;
calls made between the two exports show up as missing on the side exported first. Reconciling does not
re-verify either export's chain beyond the connector's: run `verify` on the gateway export first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import rfc8785

from audit.checkpoint import Checkpoint
from audit.entries import ACTION_CONNECTOR_CALL, ACTION_CONNECTOR_REQUEST, GENESIS_HASH
from audit.errors import CheckpointError, ExportFormatError, ProofError
from audit.export import EXPORT_FORMAT, parse_entry_line, read_connector_log
from audit.merkle import CompactRange, leaf_hash

__all__ = ["Difference", "DifferenceKind", "reconcile"]

_CALL_MARK = b'"action":"' + ACTION_CONNECTOR_CALL.encode() + b'"'
_REQUEST_MARK = b'"action":"' + ACTION_CONNECTOR_REQUEST.encode() + b'"'


class DifferenceKind(StrEnum):
    CALL_MISSING_IN_GATEWAY = "call_missing_in_gateway"
    CALL_ANSWER_UNRECORDED = "call_answer_unrecorded"
    CALL_MISSING_IN_CONNECTOR = "call_missing_in_connector"
    RESPONSE_DIFFERS = "response_differs"
    CALL_CHECKPOINT_DIFFERS = "call_checkpoint_differs"
    CHECKPOINT_DIFFERS = "checkpoint_differs"
    CHECKPOINT_MISSING_IN_GATEWAY = "checkpoint_missing_in_gateway"
    CONNECTOR_LOG_BROKEN = "connector_log_broken"


@dataclass(frozen=True)
class Difference:
    """One disagreement; the sequence numbers say where to look on each side."""

    kind: DifferenceKind
    message: str
    request_digest: str | None = None
    gateway_seq: int | None = None
    connector_seq: int | None = None
    checkpoint_size: int | None = None


@dataclass(frozen=True)
class _Call:
    seq: int
    request_digest: str
    response_digest: str | None
    checkpoint: str | None


@dataclass
class _GatewaySide:
    start: int
    end: int
    calls: dict[str, list[_Call]]
    roots: dict[int, bytes]  # recomputed from the entries at the sizes asked for
    signed: dict[int, set[bytes]]  # roots of the export's checkpoints, by size
    sent: dict[str, int]  # request digest -> seq of the entry logged before the request was sent


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _read_gateway(path: Path, connector: str, sizes: set[int]) -> _GatewaySide:
    """Calls to `connector` and the roots at `sizes` (from the recorded entry hashes) of a gateway export."""
    calls: dict[str, list[_Call]] = {}
    roots: dict[int, bytes] = {}
    signed: dict[int, set[bytes]] = {}
    sent: dict[str, int] = {}
    with path.open("rb") as f:
        try:
            header = json.loads(f.readline())
        except ValueError:
            raise ExportFormatError(1, "the header is not JSON") from None
        if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
            raise ExportFormatError(1, f"the first line is a header naming the format {EXPORT_FORMAT}")
        try:
            start, end = int(header["start"]), int(header["end"])
            frontier = CompactRange(start - 1, (bytes.fromhex(h) for h in header["prefix"]))
        except (KeyError, TypeError, ValueError, ProofError):
            raise ExportFormatError(1, "the header's range or prefix is malformed") from None
        if frontier.size in sizes:
            roots[frontier.size] = frontier.root()
        for number, line in enumerate(f, start=2):
            if not line.startswith(b'{"kind":"entry"'):
                try:
                    obj = json.loads(line)
                    if obj.get("kind") == "checkpoint":
                        cp = Checkpoint.parse_unverified(obj["note"])
                        signed.setdefault(cp.size, set()).add(cp.root)
                except (ValueError, KeyError, TypeError, AttributeError, CheckpointError):
                    raise ExportFormatError(number, "a checkpoint line is malformed") from None
                continue
            parsed = parse_entry_line(line.rstrip(b"\n"))
            if parsed is None:
                raise ExportFormatError(number, "not an entry line of the export format")
            seq_b, _, hash_b, entry, _ = parsed
            frontier.append(leaf_hash(bytes.fromhex(hash_b.decode())))
            if frontier.size in sizes:
                roots[frontier.size] = frontier.root()
            if _REQUEST_MARK in entry:
                event = json.loads(entry).get("event", {})
                digest = _str(event.get("request_digest"))
                if event.get("connector") == connector and digest is not None:
                    sent.setdefault(digest, int(seq_b))
                continue
            if _CALL_MARK not in entry:
                continue
            event = json.loads(entry).get("event", {})
            if event.get("action") != ACTION_CONNECTOR_CALL or event.get("connector") != connector:
                continue
            path_ = _str(event.get("path")) or ""
            digest = _str(event.get("request_digest"))
            if digest is None or not path_.endswith("/extract"):
                continue
            call = _Call(
                int(seq_b), digest, _str(event.get("response_digest")), _str(event.get("checkpoint"))
            )
            calls.setdefault(digest, []).append(call)
    return _GatewaySide(start, end, calls, roots, signed, sent)


def _connector_chain(entries: list[dict[str, Any]]) -> list[Difference]:
    """Re-hash the connector's local chain (SHA-256(prev_hash || RFC 8785 of entry), from 64 zeros)."""
    out: list[Difference] = []
    prev = GENESIS_HASH.hex()
    for e in entries:
        try:
            digest = hashlib.sha256(bytes.fromhex(prev) + rfc8785.dumps(e["entry"])).hexdigest()
        except (ValueError, TypeError, rfc8785.CanonicalizationError):
            digest = ""
        if e["prev_hash"] != prev or e["hash"] != digest:
            out.append(
                Difference(
                    DifferenceKind.CONNECTOR_LOG_BROKEN,
                    f"the connector's local log breaks at its entry {e['seq']}: it was altered",
                    connector_seq=e["seq"],
                )
            )
            break
        prev = e["hash"]
    return out


def reconcile(
    gateway_export: Path, connector_export: Path, *, connector: str | None = None
) -> list[Difference]:
    """List the calls and checkpoints that the two logs do not agree on (empty when they agree).

    `connector` names the connector whose log this is; by default the name in the connector export's header.
    """
    header_name, entries = read_connector_log(Path(connector_export))
    name = connector or header_name
    if name is None:
        raise ValueError("the connector export has no header naming the connector: pass connector=NAME")
    differences = _connector_chain(entries)

    connector_calls: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    seen: dict[str, tuple[int, Checkpoint]] = {}
    for e in entries:
        entry = e["entry"]
        digest = _str(entry.get("request_digest"))
        if digest is not None:
            connector_calls.setdefault(digest, []).append((e["seq"], entry))
        note = _str(entry.get("checkpoint"))
        if note is not None and note not in seen:
            try:
                seen[note] = (e["seq"], Checkpoint.parse_unverified(note))
            except CheckpointError:
                differences.append(
                    Difference(
                        DifferenceKind.CHECKPOINT_DIFFERS,
                        f"the checkpoint recorded at connector entry {e['seq']} cannot be parsed",
                        connector_seq=e["seq"],
                    )
                )

    gateway = _read_gateway(Path(gateway_export), name, {cp.size for _, cp in seen.values()})

    for digest, on_connector in connector_calls.items():
        on_gateway = gateway.calls.get(digest)
        cseq, centry = on_connector[0]
        if not on_gateway and digest in gateway.sent:
            differences.append(
                Difference(
                    DifferenceKind.CALL_ANSWER_UNRECORDED,
                    f"gateway entry {gateway.sent[digest]} logged sending the request of connector entry "
                    f"{cseq}, but not its answer: the gateway stopped during the call",
                    request_digest=digest,
                    gateway_seq=gateway.sent[digest],
                    connector_seq=cseq,
                )
            )
            continue
        if not on_gateway:
            differences.append(
                Difference(
                    DifferenceKind.CALL_MISSING_IN_GATEWAY,
                    f"connector entry {cseq} records a call that the gateway's log does not have",
                    request_digest=digest,
                    connector_seq=cseq,
                )
            )
            continue
        call = on_gateway[0]
        response = _str(centry.get("response_digest"))
        if response != call.response_digest:
            differences.append(
                Difference(
                    DifferenceKind.RESPONSE_DIFFERS,
                    f"gateway entry {call.seq} and connector entry {cseq} record different answers",
                    request_digest=digest,
                    gateway_seq=call.seq,
                    connector_seq=cseq,
                )
            )
        if _str(centry.get("checkpoint")) != call.checkpoint:
            differences.append(
                Difference(
                    DifferenceKind.CALL_CHECKPOINT_DIFFERS,
                    f"gateway entry {call.seq} and connector entry {cseq} record different checkpoints",
                    request_digest=digest,
                    gateway_seq=call.seq,
                    connector_seq=cseq,
                )
            )
    for digest, calls in gateway.calls.items():
        if digest not in connector_calls:
            for call in calls:
                differences.append(
                    Difference(
                        DifferenceKind.CALL_MISSING_IN_CONNECTOR,
                        f"gateway entry {call.seq} records a call to {name} that its log does not have",
                        request_digest=digest,
                        gateway_seq=call.seq,
                    )
                )

    for cseq, cp in seen.values():
        signed = gateway.signed.get(cp.size, set())
        recomputed = gateway.roots.get(cp.size)
        if signed - {cp.root} or (recomputed is not None and recomputed != cp.root):
            differences.append(
                Difference(
                    DifferenceKind.CHECKPOINT_DIFFERS,
                    f"the connector witnessed a checkpoint of size {cp.size} (its entry {cseq}) whose root "
                    "the gateway's log does not reproduce: the history was rewritten",
                    connector_seq=cseq,
                    checkpoint_size=cp.size,
                )
            )
        elif recomputed is None and cp.size > gateway.end:
            differences.append(
                Difference(
                    DifferenceKind.CHECKPOINT_MISSING_IN_GATEWAY,
                    f"the connector witnessed a checkpoint of size {cp.size} (at its entry {cseq}); the "
                    f"gateway export ends at entry {gateway.end}",
                    connector_seq=cseq,
                    checkpoint_size=cp.size,
                )
            )

    def order(d: Difference) -> tuple[int, int]:
        return (d.gateway_seq or 0, d.connector_seq or 0)

    return sorted(differences, key=order)
