"""What others saw of the gateway's log: checkpoints an export must agree with (`fedgate audit verify`).

Two kinds of outside evidence pin an export beyond the audit key, which its operator holds:

* a **trusted checkpoint**: one the auditor saved earlier (`GET /v1/audit/checkpoint`). A later export
  must reproduce its root at its size, so a history rewritten, truncated or rolled back since then and
  re-signed with the audit key fails;
* **cosignatures**: each connector's signed statement of the checkpoint it witnessed
  (`audit.cosignature`), taken from the export's own `checkpoint.cosigned` entries and from what the
  departments hand over (a cosigned note, or their connector's local log export). With every department's
  latest cosignature a history shown differently to two departments, or rewritten after one saw it,
  disagrees with at least one of them.

`Anchor` is one such checkpoint with where it came from; `verify.verify_export` checks each against the
roots it recomputes, and reports the latest size each department witnessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from audit.checkpoint import Checkpoint, NoteVerifier, open_checkpoint, parse_note
from audit.cosignature import CosignatureVerifier, open_cosignature
from audit.entries import ACTION_COSIGNED
from audit.errors import CheckpointError
from audit.export import CONNECTOR_FORMAT, read_connector_log

__all__ = ["Anchor", "WitnessedSize", "cosignature_anchors", "load_witness_key", "trusted_anchor"]

_COSIGNED_MARK = b'"action":"' + ACTION_COSIGNED.encode() + b'"'


@dataclass(frozen=True)
class Anchor:
    """A checkpoint an export must agree with: `source` names where it came from, for the report."""

    checkpoint: Checkpoint
    source: str
    witness: str | None = None  # the connector that cosigned it, if a cosignature
    department: str | None = None


@dataclass
class WitnessedSize:
    """The largest checkpoint one connector cosigned (verified under its pinned key), and its department."""

    connector: str
    department: str | None
    size: int
    timestamp: int
    agrees: bool = True


def load_witness_key(value: str) -> CosignatureVerifier:
    """A witness key from `name+id+base64` (C2SP vkey) or `name=ed25519:<base64>` (the connector's key
    as its schema and registration show it); a file holding either is read."""
    text = value.strip()
    path = Path(text)
    if "\n" not in text and len(text) < 4096 and path.is_file():
        text = path.read_text(encoding="utf-8").strip()
    if "=" in text and text.split("=", 1)[1].startswith("ed25519:"):
        from connectors.protocol import SignatureError, parse_public_key

        name, key = text.split("=", 1)
        try:
            return CosignatureVerifier(name, parse_public_key(key))
        except SignatureError as exc:
            raise CheckpointError(f"witness key {name!r}: {exc}") from None
    return CosignatureVerifier.parse(text)


def trusted_anchor(note: str, keys: Iterable[NoteVerifier], source: str) -> Anchor:
    """A saved checkpoint, verified under the trusted audit keys."""
    return Anchor(open_checkpoint(note, keys), source)


def _cosigned_events(export: Path) -> Iterator[dict[str, object]]:
    with export.open("rb") as f:
        for raw in f:
            if _COSIGNED_MARK not in raw:
                continue
            try:
                event = json.loads(raw)["entry"]["event"]
            except (ValueError, KeyError, TypeError):
                continue  # the scan of the entries reports a malformed line
            if isinstance(event, dict) and event.get("action") == ACTION_COSIGNED:
                yield event


def _split_cosigned(note: str) -> tuple[Checkpoint, list[str]]:
    """A cosigned note: the checkpoint (with its first signature line, the gateway's) and the other lines."""
    parsed = parse_note(note)
    lines = note[len(parsed.text) + 1 :].splitlines(keepends=True)
    return Checkpoint.parse_unverified(parsed.text + "\n" + lines[0]), lines[1:]


def _handed_over(path: Path) -> Iterator[tuple[str, str]]:
    """(checkpoint note, cosignature line) pairs from a cosigned note file or a connector log export."""
    text = path.read_text(encoding="utf-8")
    if CONNECTOR_FORMAT in text.split("\n", 1)[0]:
        _, entries = read_connector_log(path)
        for e in entries:
            note, line = e["entry"].get("checkpoint"), e["entry"].get("cosignature")
            if isinstance(note, str) and isinstance(line, str):
                yield note, line
        return
    checkpoint, lines = _split_cosigned(text)
    for line in lines:
        yield checkpoint.note, line


def cosignature_anchors(
    export: Path,
    handed_over: Iterable[Path],
    witness_keys: Iterable[CosignatureVerifier],
    warnings: list[str],
) -> tuple[list[Anchor], dict[str, WitnessedSize]]:
    """Every cosignature that verifies under a pinned witness key, as anchors, and per connector the
    largest size it cosigned. Cosignatures from no pinned key, or that fail, are warnings: a department
    whose key is not given is not evidence either way. The gateway's signature on a cosigned checkpoint is
    not what proves anything here (its holder is the one under suspicion): the cosignature is."""
    keys = {k.name: k for k in witness_keys}
    departments: dict[str, str | None] = {}
    pairs: list[tuple[str, str, str]] = []
    for event in _cosigned_events(export):
        note, line, name = event.get("checkpoint"), event.get("cosignature"), event.get("connector")
        if isinstance(name, str):
            dept = event.get("department")
            departments.setdefault(name, dept if isinstance(dept, str) else None)
        if isinstance(note, str) and isinstance(line, str):
            pairs.append((note, line, "the export's checkpoint.cosigned entries"))
    for path in handed_over:
        pairs += [(note, line, str(path)) for note, line in _handed_over(path)]
    anchors: list[Anchor] = []
    latest: dict[str, WitnessedSize] = {}
    unpinned: set[str] = set()
    for note, line, source in pairs:
        try:
            checkpoint = Checkpoint.parse_unverified(note)
            name = parse_note(checkpoint.body + "\n" + line).signatures[0].name
        except CheckpointError as exc:
            warnings.append(f"a cosigned checkpoint from {source} cannot be read: {exc}")
            continue
        verifier = keys.get(name)
        if verifier is None:
            unpinned.add(name)
            continue
        try:
            cosig = open_cosignature(checkpoint, line, verifier)
        except CheckpointError as exc:
            warnings.append(f"a cosignature from {source} does not verify: {exc}")
            continue
        anchors.append(Anchor(checkpoint, f"{name}'s cosignature ({source})", name, departments.get(name)))
        seen = latest.get(name)
        if seen is None or checkpoint.size > seen.size:
            latest[name] = WitnessedSize(name, departments.get(name), checkpoint.size, cosig.timestamp)
    for name in sorted(unpinned):
        warnings.append(f"cosignatures by {name} were not checked: give its key with --witness-key")
    return anchors, latest
