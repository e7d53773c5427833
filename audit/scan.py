"""The scan of an export's entry lines: parse, re-hash, check order and links, one chunk at a time.

This is the hot loop of `audit.verify`, kept in a module with no heavy imports so that worker processes
start fast. The file is cut into chunks that each begin after a well-formed entry line; because what the
scan needs from the line before (its seq and recorded hash) depends on that line alone, chunks scanned
separately, each from the state its preceding line leaves, find exactly what one sequential pass finds.
Each chunk returns its problems (with the sequence number they blame), the Merkle leaf hashes of its
entries in order, and the key-rotation entries it saw.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from audit.entries import ACTION_KEY_ROTATED

__all__ = [
    "CHUNK_BYTES",
    "ENTRY_HEAD",
    "Chunk",
    "ChunkResult",
    "ProblemKind",
    "ScanState",
    "is_hex",
    "parse_entry_line",
    "plan_chunks",
    "scan_chunk",
    "scan_lines",
]

# The rotation event is written by audit.checkpoint with "action" as its first key in RFC 8785 order.
ROTATION_HEAD = b'{"event":{"action":"' + ACTION_KEY_ROTATED.encode() + b'"'
_HEX_BYTES = re.compile(rb"[0-9a-f]{64}")


def is_hex(value: bytes) -> bool:
    """64 lowercase hex digits, as the exporter writes every hash."""
    return _HEX_BYTES.fullmatch(value) is not None


class ProblemKind(StrEnum):
    FORMAT = "format"  # a line does not follow the export format
    MISSING = "missing"  # sequence numbers skip: entries were deleted
    ORDER = "order"  # a sequence number repeats or goes back: entries inserted or swapped
    MISPLACED = "misplaced"  # the seq inside the hashed entry is not the line's: moved or renumbered
    HASH = "hash"  # the entry's bytes do not hash to its recorded hash: its content changed
    CHAIN = "chain"  # an entry's prev_hash is not the previous entry's hash
    TRUNCATED = "truncated"  # the file ends before the range the header announces
    ROOT = "root"  # the entries do not hash to a signed checkpoint's root
    SIGNATURE = "signature"  # a checkpoint is not signed by the key active at its size
    INCONSISTENT = "inconsistent"  # a checkpoint is not consistent with an earlier one
    FORK = "fork"  # two signed checkpoints of one size disagree
    ROTATION = "rotation"  # a key rotation entry does not verify or does not chain
    UNSIGNED = "unsigned"  # no trusted checkpoint covers the entries


ENTRY_HEAD = b'{"kind":"entry","seq":'


def parse_entry_line(line: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
    """(seq, prev_hash, hash, entry, inner seq) of an entry line (without its newline), or None.

    The layout is fixed (see audit.export), so the line is sliced rather than parsed: a regular expression
    over the whole entry would cost as much as everything else the scan does. The hashes are checked for
    hex digits only where they are used.
    """
    comma = line.find(b",", 22)
    seq_b = line[22:comma]
    entry = line[comma + 162 : -1]
    cut = entry.rfind(b',"seq":')
    time_at = entry.find(b',"time":"', cut)
    inner_b = entry[cut + 7 : time_at]
    if (
        line[:22] != ENTRY_HEAD
        or not seq_b.isdigit()
        or (seq_b[0] == 48 and len(seq_b) > 1)  # b"0": no leading zeros
        or line[comma : comma + 14] != b',"prev_hash":"'
        or line[comma + 78 : comma + 88] != b'","hash":"'
        or line[comma + 152 : comma + 162] != b'","entry":'
        or line[-1:] != b"}"
        or entry[:9] != b'{"event":'
        or cut < 0
        or time_at < 0
        or entry[-3:] != b'Z"}'
        or not inner_b.isdigit()
    ):
        return None
    return seq_b, line[comma + 14 : comma + 78], line[comma + 88 : comma + 152], entry, inner_b


CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class ScanState:
    """What checking an entry line needs from the line before it."""

    expect: int  # the seq the next line should have
    prev_seq: int
    claimed_prev: bytes  # the previous line's recorded hash (hex), b"" after a malformed line
    prev_digest: bytes  # bytes.fromhex(claimed_prev), kept to spare the common case a hex decoding


@dataclass(frozen=True)
class Chunk:
    begin: int  # byte offsets in the file, at line starts
    end: int
    state: ScanState


@dataclass
class ChunkResult:
    lines: int = 0
    leaves: bytearray = field(default_factory=bytearray)  # SHA-256(0x00 || hash) per well-formed entry line
    # (seq, kind, message, line within the chunk or 0); "{line}" in a message becomes the file's line number
    problems: list[tuple[int, ProblemKind, str, int]] = field(default_factory=list)
    rotations: list[tuple[int, bytes]] = field(default_factory=list)


def state_after(line: bytes) -> ScanState | None:
    """The scan state after a well-formed line, which depends on that line alone; None if it is not one."""
    parsed = parse_entry_line(line.rstrip(b"\n"))
    # `scan_lines` treats a line whose hashes are not hex as malformed, whatever else it holds.
    if parsed is None or not is_hex(parsed[1]) or not is_hex(parsed[2]):
        return None
    seq = int(parsed[0])
    return ScanState(
        expect=seq + 1, prev_seq=seq, claimed_prev=parsed[2], prev_digest=bytes.fromhex(parsed[2].decode())
    )


def plan_chunks(f: Any, begin: int, state: ScanState) -> list[Chunk]:
    """Split the entry lines into chunks of about `CHUNK_BYTES`, each after a well-formed line.

    Because the state after a well-formed line depends on that line only, scanning the chunks separately,
    each from the state its preceding line leaves, finds exactly what one sequential scan would.
    """
    f.seek(0, 2)
    size = f.tell()
    chunks: list[Chunk] = []
    while begin < size:
        target = begin + CHUNK_BYTES
        end = size
        next_state = None
        if target < size:
            f.seek(target)
            f.readline()  # the rest of a line that started before the target
            for _ in range(64):
                line = f.readline()
                if not line:
                    break
                next_state = state_after(line)
                if next_state is not None:
                    end = f.tell()
                    break
        if next_state is None:
            end = size
        chunks.append(Chunk(begin, end, state))
        if next_state is None:
            break
        begin, state = end, next_state
    return chunks


def scan_chunk(path: str, chunk: Chunk) -> ChunkResult:
    """Check every entry line of one chunk on its own; runs in a worker process for large files."""
    with open(path, "rb") as f:
        f.seek(chunk.begin)
        data = f.read(chunk.end - chunk.begin)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return scan_lines(lines, chunk.state)


def scan_lines(lines: list[bytes], state: ScanState) -> ChunkResult:
    """The hot loop: re-hash each entry and check its seq, its inner seq and its link to the previous one."""
    result = ChunkResult()
    add = result.problems.append
    leaves = result.leaves
    parse = parse_entry_line
    sha256 = hashlib.sha256
    fromhex = bytes.fromhex
    hexlify = binascii.hexlify
    expect, prev_seq = state.expect, state.prev_seq
    claimed_prev, prev_digest = state.claimed_prev, state.prev_digest
    number = 0
    for line in lines:
        number += 1
        parsed = parse(line)
        if parsed is None:
            add((expect, ProblemKind.FORMAT, "line {line} is not an entry line of the export format", number))
            claimed_prev = b""
            prev_seq = expect
            expect += 1
            continue
        seq_b, prev_b, hash_b, entry, inner_b = parsed
        seq = int(seq_b)
        blamed = False
        if seq != expect:
            blamed = True
            if seq > expect:
                add((expect, ProblemKind.MISSING, f"entries {expect}..{seq - 1} are missing", 0))
            else:
                add((seq, ProblemKind.ORDER, f"entry {seq} appears again after entry {expect - 1}", 0))
        if inner_b != seq_b:
            blamed = True
            inner = int(inner_b)
            moved = f"the entry at seq {seq} was written as entry {inner}: entries were moved or renumbered"
            add((min(inner, seq), ProblemKind.MISPLACED, moved, 0))
        if prev_b == claimed_prev:
            digest = sha256(prev_digest + entry).digest()
        elif not is_hex(prev_b) or not is_hex(hash_b):
            add((seq, ProblemKind.FORMAT, "line {line}: a hash is not 64 lowercase hex digits", number))
            claimed_prev = b""
            prev_seq = seq
            expect = seq + 1
            continue
        else:
            if claimed_prev and not blamed:
                # Nothing in this line is out of place, so the previous entry is the one that changed.
                broken = f"entry {seq} does not chain to entry {prev_seq}: it was altered or inserted"
                add((prev_seq, ProblemKind.CHAIN, broken, 0))
            digest = sha256(fromhex(prev_b.decode()) + entry).digest()
        if hexlify(digest) != hash_b:
            if not is_hex(hash_b):
                add((seq, ProblemKind.FORMAT, "line {line}: the hash is not 64 lowercase hex digits", number))
                claimed_prev = b""
                prev_seq = seq
                expect = seq + 1
                continue
            add((seq, ProblemKind.HASH, f"entry {seq} does not hash to its recorded hash: it was changed", 0))
            # The tree is built from the recorded hashes, so one changed entry is blamed once, here,
            # rather than again by every checkpoint above it.
            digest = fromhex(hash_b.decode())
        if entry.startswith(ROTATION_HEAD):
            result.rotations.append((seq, entry))
        leaves += sha256(b"\x00" + digest).digest()  # the Merkle leaf hash, done here to share the work
        claimed_prev = hash_b
        prev_digest = digest
        prev_seq = seq
        expect = seq + 1
    result.lines = len(lines)
    return result
