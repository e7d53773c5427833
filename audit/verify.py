"""Offline verification of an audit export with nothing but the file and the audit public key(s).

`verify_export` streams the export once. For every entry it re-hashes the exact canonical bytes
(SHA-256(prev_hash || entry)), checks the link to the previous entry, the sequence numbers (the line's and
the one inside the hashed entry), and adds the entry hash as a Merkle leaf. At each checkpoint's size it
compares the recomputed root with the signed one. Afterwards it checks every checkpoint's signature with
the key that was active at its size (following `audit.key_rotated` entries, each signed by both keys), the
consistency proofs between successive checkpoints and to the first checkpoint beyond the range, and that
two checkpoints of one size agree.

Every problem is reported with the sequence number it incriminates; `first_bad_seq` is the smallest.
Where an entry's own bytes show the fault (a changed field, a missing, duplicated, swapped or inserted
entry) that is the entry itself. Where only a checkpoint shows it (a history rewritten with a recomputed
chain, a tail truncated and re-appended), no file can say which entry differs from what was signed: the
report names the first entry after the last checkpoint that still holds, i.e. the first one no signature
vouches for.

Entries after the last checkpoint that covers them are reported as a warning (`uncovered_from`): they are
chained but not yet signed. An export whose entries no trusted checkpoint covers at all fails.

The audit key alone cannot catch its holder: a log rewritten and re-signed verifies. Outside evidence does
(`audit.witnessed`): checkpoints the auditor saved earlier (`trusted_checkpoints`) and the connectors'
cosignatures (`witness_keys` pins each department's key; `cosigned` adds what departments hand over)
must each be reproduced by the export's entries at their size; an export that ends before one of them
was truncated or rolled back. The report lists the latest size each department cosigned (`witnessed`).
"""

from __future__ import annotations

import bisect
import concurrent.futures
import hashlib
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checkpoint import (
    Checkpoint,
    NoteVerifier,
    Rotation,
    load_verifier,
    open_note,
    verify_rotation,
)
from audit.cosignature import CosignatureVerifier
from audit.entries import ACTION_KEY_ROTATED, GENESIS_HASH
from audit.errors import CheckpointError, ExportFormatError, ProofError, VerificationFailed
from audit.export import EXPORT_FORMAT
from audit.merkle import CompactRange, verify_consistency
from audit.scan import ENTRY_HEAD, Chunk, ChunkResult, ProblemKind, ScanState, plan_chunks, scan_chunk
from audit.witnessed import Anchor, WitnessedSize, cosignature_anchors, trusted_anchor

__all__ = ["Problem", "ProblemKind", "VerifyReport", "verify_export"]

MAX_PROBLEMS = 1000
_PARALLEL_BYTES = 16 << 20  # below this, starting worker processes costs more than it saves
_HEX64 = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: ProblemKind
    message: str


@dataclass
class VerifyReport:
    """What `verify_export` found. `ok` is true only without problems; warnings do not fail it."""

    path: Path
    start: int = 1
    end: int = 0
    entries: int = 0
    origin: str | None = None
    checkpoints_verified: int = 0
    covered_to: int = 0
    uncovered_from: int | None = None
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    warnings: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    anchors_checked: int = 0
    witnessed: dict[str, WitnessedSize] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def first_problem(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None

    @property
    def first_bad_seq(self) -> int | None:
        first = self.first_problem
        return first.seq if first else None

    @property
    def reason(self) -> str | None:
        first = self.first_problem
        return first.message if first else None

    def raise_for_problems(self) -> None:
        """Return None if the export verified; raise `VerificationFailed` (carrying this report) otherwise."""
        if not self.ok:
            raise VerificationFailed(self)

    def add(self, seq: int, kind: ProblemKind, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) >= MAX_PROBLEMS and seq >= self.problems[-1].seq:
            return  # a flood of problems: keep the earliest, the first bad sequence number among them
        self.problems.append(Problem(seq, kind, message))
        if len(self.problems) >= MAX_PROBLEMS:
            # Stable, so problems with one seq keep the order they were found in.
            self.problems.sort(key=lambda p: p.seq)
            del self.problems[MAX_PROBLEMS:]


@dataclass
class _CheckpointLine:
    line: int
    size: int
    note: str
    checkpoint: Checkpoint | None
    consistency_from: int | None
    proof: list[bytes] | None
    signed: bool = False  # signed by the key active at its size


@dataclass
class _Stream:
    """What the pass over the entries leaves for the checks that need the whole file."""

    roots: dict[int, bytes] = field(default_factory=dict)  # recomputed roots at checkpoint sizes
    size: int = 0  # tree size after the last entry
    root: bytes = b""
    rotations: list[tuple[int, bytes]] = field(default_factory=list)
    entry_problems: list[int] = field(default_factory=list)  # seqs blamed by the entries' own bytes


def _hex_hash(value: Any, line: int, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX64:
        raise ExportFormatError(line, f"the {what} is not 64 lowercase hex digits")
    return bytes.fromhex(value)


def _read_header(raw: bytes) -> tuple[int, int, bytes, CompactRange]:
    try:
        header = json.loads(raw)
    except ValueError:
        raise ExportFormatError(1, "the header is not JSON") from None
    if (
        not isinstance(header, dict)
        or header.get("kind") != "header"
        or header.get("format") != EXPORT_FORMAT
    ):
        raise ExportFormatError(1, f"the first line is a header naming the format {EXPORT_FORMAT}")
    start, end, prefix = header.get("start"), header.get("end"), header.get("prefix")
    if not isinstance(start, int) or not isinstance(end, int) or start < 1 or end < start - 1:
        raise ExportFormatError(1, "the header's start and end are not a valid range")
    if not isinstance(prefix, list):
        raise ExportFormatError(1, "the header's prefix is not a list of hashes")
    hashes = [_hex_hash(h, 1, "prefix hash") for h in prefix]
    try:
        frontier = CompactRange(start - 1, hashes)
    except ProofError as exc:
        raise ExportFormatError(1, f"the header's prefix does not fit size {start - 1}: {exc}") from None
    prev_hash = _hex_hash(header.get("prev_hash"), 1, "header's prev_hash")
    if start == 1 and prev_hash != GENESIS_HASH:
        raise ExportFormatError(1, "an export from seq 1 starts from the all-zero hash")
    return start, end, prev_hash, frontier


def _read_checkpoint(raw: bytes, line: int) -> _CheckpointLine:
    try:
        obj = json.loads(raw)
    except ValueError:
        raise ExportFormatError(line, "a checkpoint line is not JSON") from None
    if not isinstance(obj, dict) or obj.get("kind") != "checkpoint":
        raise ExportFormatError(line, "expected a checkpoint line")
    size, note, consistency = obj.get("size"), obj.get("note"), obj.get("consistency")
    if not isinstance(size, int) or size < 0 or not isinstance(note, str):
        raise ExportFormatError(line, "a checkpoint line has an integer size and a note")
    proof: list[bytes] | None = None
    source: int | None = None
    if consistency is not None:
        if not isinstance(consistency, dict) or not isinstance(consistency.get("from"), int):
            raise ExportFormatError(line, "a checkpoint's consistency has 'from' and 'proof'")
        source = consistency["from"]
        hashes = consistency.get("proof")
        if not isinstance(hashes, list):
            raise ExportFormatError(line, "a checkpoint's consistency proof is a list of hashes")
        proof = [_hex_hash(h, line, "proof hash") for h in hashes]
    try:
        checkpoint: Checkpoint | None = Checkpoint.parse_unverified(note)
    except CheckpointError:
        checkpoint = None
    return _CheckpointLine(line, size, note, checkpoint, source, proof)


def verify_export(
    path: Path | str,
    public_keys: Iterable[str | Path | NoteVerifier | Ed25519PublicKey],
    *,
    origin: str | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    trusted_checkpoints: Iterable[tuple[str, str]] = (),
    witness_keys: Iterable[CosignatureVerifier] = (),
    cosigned: Iterable[Path] = (),
) -> VerifyReport:
    """Verify an export offline; the report names the first bad sequence number and what is wrong.

    `public_keys` are the audit keys the auditor trusts (verifier key strings, PEM or raw keys, files, or
    key objects); one from anywhere in the log's key history is enough. `origin`, if given, must be the
    checkpoints' origin. The report is returned whether or not the export verifies: test `report.ok` or call
    `report.raise_for_problems()`. `progress(n)` is told how many entries have been checked; `workers`
    processes (default: one per usable core, for large files) share the re-hashing.
    `trusted_checkpoints` are (signed note, where it came from) pairs the auditor saved earlier;
    `witness_keys` the departments' connector keys, which check the cosignatures in the export and in the
    `cosigned` files (cosigned notes or connector log exports).
    """
    path = Path(path)
    trusted = [load_verifier(k) for k in public_keys]
    if not trusted:
        raise ValueError("verify_export needs at least one public key: without one nothing is proven")
    report = VerifyReport(path=path)
    anchors = [trusted_anchor(note, trusted, source) for note, source in trusted_checkpoints]
    witnessed_anchors, report.witnessed = cosignature_anchors(path, cosigned, witness_keys, report.warnings)
    anchors += witnessed_anchors
    with path.open("rb") as f:
        first = f.readline()
        try:
            start, end, prev_hash, frontier = _read_header(first)
        except ExportFormatError as exc:
            report.add(1, ProblemKind.FORMAT, str(exc))
            return report
        report.start, report.end = start, end
        checkpoints: list[_CheckpointLine] = []
        number = 1
        offset = len(first)
        line = f.readline()
        # Every line between the header and the first entry must be a checkpoint.
        while line and not line.startswith(ENTRY_HEAD):
            number += 1
            offset += len(line)
            try:
                checkpoints.append(_read_checkpoint(line, number))
            except ExportFormatError as exc:
                report.add(start, ProblemKind.FORMAT, str(exc))
            line = f.readline()
        state = ScanState(
            expect=start, prev_seq=start - 1, claimed_prev=prev_hash.hex().encode(), prev_digest=prev_hash
        )
        chunks = plan_chunks(f, offset, state)
    targets = {cp.size for cp in checkpoints} | {a.checkpoint.size for a in anchors}
    stream = _scan(path, chunks, number, frontier, targets, report, progress, workers)
    _check_signatures(checkpoints, stream, trusted, origin, report)
    _check_roots(checkpoints, stream, report)
    _check_anchors(anchors, stream, report)
    report.problems.sort(key=lambda p: p.seq)  # stable: one seq's problems stay in the order found
    return report


def _scan(
    path: Path,
    chunks: list[Chunk],
    lines_before: int,
    frontier: CompactRange,
    target_sizes: set[int],
    report: VerifyReport,
    progress: Callable[[int], None] | None,
    workers: int | None,
) -> _Stream:
    """Scan the chunks (in worker processes when the file is large) and fold their leaves into the tree."""
    stream = _Stream()
    targets = sorted(s for s in target_sizes if s >= frontier.size)
    total_bytes = sum(c.end - c.begin for c in chunks)
    if workers is None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = usable if total_bytes >= _PARALLEL_BYTES else 1
    workers = max(1, min(workers, len(chunks)))
    results = _chunk_results(str(path), chunks, workers)
    _fold(stream, results, lines_before, frontier, targets, report, progress)
    return stream


def _chunk_results(path: str, chunks: list[Chunk], workers: int) -> Iterator[ChunkResult]:
    """Each chunk's result, in order: from worker processes if asked and possible, else scanned here."""
    done = 0
    if workers > 1:
        # "spawn", not "fork": forking a process that runs other threads (a progress bar, a server) can
        # deadlock the child. A pool that cannot start (say, a caller's script without a __main__ guard)
        # is not an error: the remaining chunks are scanned in this process.
        context = multiprocessing.get_context("spawn")
        try:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [pool.submit(scan_chunk, path, c) for c in chunks]
                for future in futures:
                    result = future.result()
                    done += 1
                    yield result
            return
        except (BrokenProcessPool, OSError):
            pass
    for chunk in chunks[done:]:
        yield scan_chunk(path, chunk)


def _fold(
    stream: _Stream,
    results: Iterable[ChunkResult],
    lines_before: int,
    frontier: CompactRange,
    targets: list[int],
    report: VerifyReport,
    progress: Callable[[int], None] | None,
) -> None:
    """Add each chunk's leaves to the Merkle frontier, noting the roots at checkpoint sizes."""
    sha256 = hashlib.sha256
    hashes = frontier.hashes
    size = frontier.size
    target_index = 0
    next_target = targets[0] if targets else -1
    if next_target == size:
        stream.roots[size] = frontier.root()
        target_index += 1
        next_target = targets[target_index] if target_index < len(targets) else -1
    count = 0
    for result in results:
        for seq, kind, message, line in result.problems:
            stream.entry_problems.append(seq)
            report.add(seq, kind, message.format(line=lines_before + count + line) if line else message)
        stream.rotations.extend(result.rotations)
        leaves = result.leaves
        for i in range(0, len(leaves), 32):
            # Merged as in merkle.CompactRange.append.
            node = bytes(leaves[i : i + 32])
            n = size
            while n & 1:
                node = sha256(b"\x01" + hashes.pop() + node).digest()
                n >>= 1
            hashes.append(node)
            size += 1
            if size == next_target:
                frontier.size = size
                stream.roots[size] = frontier.root()
                target_index += 1
                next_target = targets[target_index] if target_index < len(targets) else -1
        count += result.lines
        if progress is not None:
            progress(count)
    frontier.size = size
    report.entries = count
    start = report.start
    expected = report.end - start + 1
    if count < expected:
        stream.entry_problems.append(start + count)
        report.add(
            start + count,
            ProblemKind.TRUNCATED,
            f"the export ends after {count} entries; its header announces entries {start}..{report.end}",
        )
    elif count > expected:
        stream.entry_problems.append(report.end + 1)
        report.add(report.end + 1, ProblemKind.FORMAT, f"the export has entries beyond its end {report.end}")
    stream.size = size
    stream.root = frontier.root()


def _key_history(
    rotations: list[tuple[int, bytes]], trusted: list[NoteVerifier], report: VerifyReport
) -> list[tuple[int, Rotation]] | None:
    """The verified rotations in order, or None (with a problem) when the history cannot be followed."""
    history: list[tuple[int, Rotation]] = []
    for seq, entry in rotations:
        try:
            event = json.loads(entry)["event"]
        except (ValueError, KeyError, TypeError):
            report.add(seq, ProblemKind.FORMAT, f"entry {seq} is not valid JSON")
            continue
        if not isinstance(event, dict) or event.get("action") != ACTION_KEY_ROTATED:
            continue
        try:
            rotation = verify_rotation(event)
        except CheckpointError as exc:
            report.add(seq, ProblemKind.ROTATION, f"the key rotation at entry {seq} does not verify: {exc}")
            return None
        if history and not history[-1][1].new.same_key(rotation.old):
            report.add(
                seq,
                ProblemKind.ROTATION,
                f"the key rotation at entry {seq} does not start from the current key",
            )
            return None
        history.append((seq, rotation))
    if history:
        chain = [history[0][1].old] + [r.new for _, r in history]
        if not any(t.same_key(k) for t in trusted for k in chain):
            report.add(
                report.start,
                ProblemKind.SIGNATURE,
                "none of the given public keys appears in the log's key history",
            )
            return None
    return history


def _check_signatures(
    checkpoints: list[_CheckpointLine],
    stream: _Stream,
    trusted: list[NoteVerifier],
    origin: str | None,
    report: VerifyReport,
) -> None:
    """Each checkpoint must be signed by the key active at its size (or, with no rotation, a given key)."""
    history = _key_history(stream.rotations, trusted, report)
    rotation_seqs = [seq for seq, _ in history or []]
    if history:
        report.keys = [history[0][1].old.vkey(), *(r.new.vkey() for _, r in history)]
    origins = {cp.checkpoint.origin for cp in checkpoints if cp.checkpoint is not None}
    expected_origin = origin or (history[0][1].origin if history else None)
    if expected_origin is None and len(origins) == 1:
        expected_origin = next(iter(origins))
    report.origin = expected_origin
    for cp in checkpoints:
        seq = max(cp.size, report.start)
        if cp.checkpoint is None:
            report.add(seq, ProblemKind.SIGNATURE, f"line {cp.line}: the checkpoint note cannot be parsed")
            continue
        if cp.checkpoint.size != cp.size:
            report.add(seq, ProblemKind.FORMAT, f"line {cp.line}: the note's size differs from the line's")
            continue
        if expected_origin is None or cp.checkpoint.origin != expected_origin:
            report.add(seq, ProblemKind.SIGNATURE, f"the checkpoint of size {cp.size} names another origin")
            continue
        if history is None:
            continue  # the key history is broken: reported once already
        if history:
            i = bisect.bisect_right(rotation_seqs, cp.size)
            keys = [history[0][1].old] if i == 0 else [history[i - 1][1].new]
        else:
            keys = trusted
        try:
            open_note(cp.note, keys)
        except CheckpointError as exc:
            report.add(
                seq,
                ProblemKind.SIGNATURE,
                f"the checkpoint of size {cp.size} is not signed by the key active at that size: {exc}",
            )
            continue
        cp.signed = True


def _check_roots(checkpoints: list[_CheckpointLine], stream: _Stream, report: VerifyReport) -> None:
    """Signed roots against the entries, in size order; then coverage.

    Only checkpoints whose signature holds are evidence; the others are reported once, as signature
    problems. A mismatch at size N is blamed on the first entry after the last good checkpoint that the
    entries' own checks already flagged, or else on the first entry after that checkpoint: no file can
    say more.
    """
    last_good = report.start - 1
    verified = 0
    flagged = sorted(stream.entry_problems)

    def blame(upper: int) -> int:
        i = bisect.bisect_right(flagged, last_good)
        if i < len(flagged) and flagged[i] <= upper:
            return flagged[i]
        return last_good + 1

    by_size: dict[int, _CheckpointLine] = {}
    for cp in checkpoints:
        if cp.signed:
            by_size.setdefault(cp.size, cp)
    signed = sorted(
        (cp for cp in checkpoints if cp.signed and cp.checkpoint is not None), key=lambda c: c.size
    )
    for size, group in itertools.groupby(signed, key=lambda c: c.size):
        # Checkpoints of one size are judged together, against the last good size below them.
        good = False
        roots: set[bytes] = set()
        for cp in group:
            roots.add(cp.checkpoint.root if cp.checkpoint else b"")
            if _check_one(cp, stream, report, blame, by_size):
                verified += 1
                good = True
        if len(roots) > 1:
            seq = blame(size)
            report.add(seq, ProblemKind.FORK, f"two signed checkpoints of size {size} have different roots")
        elif good:
            last_good = max(last_good, size)

    report.checkpoints_verified = verified
    last = report.start + report.entries - 1
    report.covered_to = min(last_good, last)
    if report.entries and last_good < report.start:
        report.add(
            report.start,
            ProblemKind.UNSIGNED,
            "no checkpoint signed by a trusted key covers these entries: sign one before exporting",
        )
    elif report.entries and last_good < last:
        report.uncovered_from = last_good + 1
        report.warnings.append(
            f"entries {last_good + 1}..{last} are chained but not yet covered by a signed checkpoint"
        )


def _check_one(
    cp: _CheckpointLine,
    stream: _Stream,
    report: VerifyReport,
    blame: Callable[[int], int],
    by_size: dict[int, _CheckpointLine],
) -> bool:
    """Whether one signed checkpoint agrees with the entries (and with the previous one); reports if not."""
    assert cp.checkpoint is not None
    if cp.size < report.start - 1:
        report.add(report.start, ProblemKind.FORMAT, f"line {cp.line}: a checkpoint precedes the range")
        return False
    if cp.size in stream.roots:
        holds = stream.roots[cp.size] == cp.checkpoint.root
        if not holds:
            seq = blame(cp.size)
            report.add(
                seq,
                ProblemKind.ROOT,
                f"entries {seq}..{cp.size} are not those the checkpoint of size {cp.size} signed: "
                "the Merkle root of the entries differs from the signed root",
            )
    elif cp.consistency_from == stream.size and cp.proof is not None:
        try:
            verify_consistency(stream.size, cp.size, cp.proof, stream.root, cp.checkpoint.root)
            holds = True
        except ProofError:
            holds = False
            seq = blame(cp.size)
            report.add(
                seq,
                ProblemKind.INCONSISTENT,
                f"entries {seq}..{stream.size} are not a prefix of the log signed at size {cp.size}",
            )
    else:
        holds = False
        seq = blame(cp.size)
        report.add(
            seq,
            ProblemKind.INCONSISTENT,
            f"the checkpoint of size {cp.size} lies beyond the last entry ({stream.size}) without a "
            "consistency proof from there: entries are missing",
        )
    # Successive checkpoints: the proof from the previous one, between the two signed roots.
    earlier = by_size.get(cp.consistency_from) if cp.consistency_from is not None else None
    if earlier is not None and earlier is not cp and earlier.checkpoint is not None and cp.proof is not None:
        try:
            verify_consistency(earlier.size, cp.size, cp.proof, earlier.checkpoint.root, cp.checkpoint.root)
        except ProofError:
            holds = False
            seq = blame(cp.size)
            report.add(
                seq,
                ProblemKind.INCONSISTENT,
                f"the checkpoint of size {cp.size} is not consistent with the one of size {earlier.size}",
            )
    return holds


def _check_anchors(anchors: list[Anchor], stream: _Stream, report: VerifyReport) -> None:
    """Each outside checkpoint must be reproduced by the export's entries at its size."""
    for anchor in anchors:
        size = anchor.checkpoint.size
        if size in stream.roots:
            report.anchors_checked += 1
            if stream.roots[size] == anchor.checkpoint.root:
                continue
            report.add(
                max(report.start, 1),
                ProblemKind.FORK,
                f"entries up to {size} are not those {anchor.source} holds a checkpoint of: the log was "
                "rewritten, or shown differently to others",
            )
        elif size > stream.size:
            report.anchors_checked += 1
            report.add(
                stream.size + 1,
                ProblemKind.TRUNCATED,
                f"the export ends at entry {stream.size}, but {anchor.source} holds a checkpoint of size "
                f"{size}: entries were removed or the log was rolled back",
            )
        else:
            report.warnings.append(
                f"the checkpoint of size {size} from {anchor.source} lies before this export's range"
            )
            continue
        if anchor.witness is not None and anchor.witness in report.witnessed:
            report.witnessed[anchor.witness].agrees = False
