"""Export formats: a range of the gateway's audit log, and a connector's local log, as JSON Lines.

Gateway export (`fedgate-audit-export/1`), one JSON object per line, in this order:

1. a header, `{"kind":"header","format":"fedgate-audit-export/1","start":S,"end":E,"prev_hash":H,
   "prefix":[...]}`: the range S..E, the hash of entry S - 1 (64 zeros when S = 1), and the Merkle frontier
   of the first S - 1 entries (hex hashes of its maximal perfect subtrees, largest first), from which the
   roots of larger trees can be recomputed without the earlier entries;
2. the checkpoints that cover the range, by size: `{"kind":"checkpoint","size":N,"note":"<signed note>",
   "consistency":{"from":M,"proof":[...]}|null}`. Those with S - 1 <= N <= E are checked against roots
   recomputed from the entries; each carries a consistency proof from the previous one. The first
   checkpoint beyond E, if any, is included with a proof from size E, so the range's tail is covered too;
3. the entries, by seq: `{"kind":"entry","seq":N,"prev_hash":"<hex>","hash":"<hex>","entry":<canonical>}`,
   where `entry` is the stored canonical entry, byte for byte (see `audit.entries`), so a verifier
   re-hashes exactly these bytes: hash = SHA-256(prev_hash || entry). Entry lines are written compactly
   with the keys in exactly this order; the verifier relies on that layout and refuses any other.

Connector log export (`fedgate-connector-log/1`): a header `{"kind":"header","format":...,"connector":NAME}`
then one line per local log entry as `ConnectorState.log_entries()` returns it: `{"seq","entry",
"prev_hash","hash"}`, where hash = SHA-256(prev_hash || RFC 8785 of entry). Readers also accept a file of
entry lines without the header.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import rfc8785

from audit.checkpoint import Checkpointer
from audit.entries import GENESIS_HASH
from audit.errors import ExportFormatError
from audit.scan import ENTRY_HEAD, parse_entry_line
from audit.store import AuditLog, StoredCheckpoint

__all__ = [
    "CONNECTOR_FORMAT",
    "ENTRY_HEAD",
    "EXPORT_FORMAT",
    "ExportSummary",
    "SupportsLogEntries",
    "export_connector_log",
    "export_log",
    "parse_entry_line",
    "read_connector_log",
]

EXPORT_FORMAT = "fedgate-audit-export/1"
CONNECTOR_FORMAT = "fedgate-connector-log/1"


def entry_line(seq: int, prev_hash: str, hash_: str, canonical: bytes) -> bytes:
    return b'{"kind":"entry","seq":%d,"prev_hash":"%s","hash":"%s","entry":%s}\n' % (
        seq,
        prev_hash.encode(),
        hash_.encode(),
        canonical,
    )


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    start: int
    end: int
    entries: int
    checkpoints: int


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Any]:
    """Write to a temporary file beside `path` and move it into place only when complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def export_log(
    log: AuditLog,
    out: Path,
    *,
    start: int = 1,
    end: int | None = None,
    checkpointer: Checkpointer | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write entries start..end (default: to the head) with the checkpoints that cover them.

    With a `checkpointer`, a checkpoint of the current head is signed first, so that the whole range is
    covered by a signature. `progress(n)` is called with the number of
    entries written so far.
    """
    if checkpointer is not None:
        checkpointer.checkpoint()
    size = log.head().size
    end = size if end is None else min(end, size)
    if start < 1 or start > end + 1:
        raise ValueError(f"the export range {start}..{end} is outside the log of {size} entries")
    prefix = log.frontier(start - 1)
    prev_hash = GENESIS_HASH.hex()
    if start > 1:
        before = log.entry(start - 1)
        if before is None:
            raise ValueError(f"entry {start - 1} is missing from the store")
        prev_hash = before.hash

    stored = log.checkpoints(min_size=start - 1, max_size=end)
    after = log.checkpoints(min_size=end + 1)
    beyond = [c for c in after if c.size == after[0].size] if after else []
    lines: list[bytes] = []
    current: int | None = None  # the size of the checkpoints being written
    previous: int | None = None  # the next smaller checkpoint size, which the proof starts from
    for cp in stored:
        if cp.size != current:
            previous, current = current, cp.size
        consistency = None
        if previous is not None:
            proof = log.consistency_proof(previous, cp.size)
            consistency = {"from": previous, "proof": [p.hex() for p in proof]}
        lines.append(_checkpoint_line(cp, consistency))
    for cp in beyond:
        proof = log.consistency_proof(end, cp.size)
        lines.append(_checkpoint_line(cp, {"from": end, "proof": [p.hex() for p in proof]}))

    header: dict[str, Any] = {
        "kind": "header",
        "format": EXPORT_FORMAT,
        "start": start,
        "end": end,
        "prev_hash": prev_hash,
        "prefix": [h.hex() for h in prefix.hashes],
    }
    written = 0
    with _atomic(out) as f:
        f.write(_json_line(header))
        f.writelines(lines)
        chunk: list[bytes] = []
        for e in log.entries(start, end):
            chunk.append(entry_line(e.seq, e.prev_hash, e.hash, e.canonical))
            if len(chunk) == 10_000:
                f.writelines(chunk)
                written += len(chunk)
                chunk.clear()
                if progress is not None:
                    progress(written)
        f.writelines(chunk)
        written += len(chunk)
        if progress is not None:
            progress(written)
    return ExportSummary(out, start, end, written, len(lines))


def _checkpoint_line(cp: StoredCheckpoint, consistency: dict[str, Any] | None) -> bytes:
    return _json_line({"kind": "checkpoint", "size": cp.size, "note": cp.note, "consistency": consistency})


def _json_line(obj: dict[str, Any]) -> bytes:
    # Compact and in the order written, so that "kind" comes first and a reader can tell lines apart.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


# --- connector logs


class SupportsLogEntries(Protocol):
    """What `connectors.state.ConnectorState` offers: its local log as a list of dicts."""

    def log_entries(self) -> list[dict[str, Any]]: ...


def export_connector_log(state: SupportsLogEntries, out: Path, *, connector: str) -> int:
    """Write a connector's local log as a `fedgate-connector-log/1` export; returns the number of entries."""
    entries = state.log_entries()
    with _atomic(out) as f:
        header: dict[str, Any] = {"kind": "header", "format": CONNECTOR_FORMAT, "connector": connector}
        f.write(rfc8785.dumps(header) + b"\n")
        for e in entries:
            line = {"seq": e["seq"], "entry": e["entry"], "prev_hash": e["prev_hash"], "hash": e["hash"]}
            f.write(rfc8785.dumps(line) + b"\n")
    return len(entries)


def read_connector_log(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """The connector name (from the header, if any) and the log entries of a connector log export."""
    name: str | None = None
    entries: list[dict[str, Any]] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                raise ExportFormatError(number, "not a JSON object") from None
            if not isinstance(obj, dict):
                raise ExportFormatError(number, "not a JSON object")
            if obj.get("kind") == "header":
                if number != 1 or obj.get("format") != CONNECTOR_FORMAT:
                    raise ExportFormatError(number, f"a header comes first and names {CONNECTOR_FORMAT}")
                connector = obj.get("connector")
                name = connector if isinstance(connector, str) else None
                continue
            if not {"seq", "entry", "prev_hash", "hash"} <= obj.keys() or not isinstance(obj["entry"], dict):
                raise ExportFormatError(number, "a connector log line has seq, entry, prev_hash and hash")
            entries.append(obj)
    return name, entries
