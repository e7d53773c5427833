"""Witnessing the gateway's log: what a connector checks before it serves a request.

Each extract request carries a signed checkpoint, a consistency proof from the size the connector last
witnessed, and an inclusion proof of the request's own entry (`connector.extract_planned`, written before
the checkpoint was signed). The connector checks, in order:

* the checkpoint is signed by a pinned audit key;
* it is consistent with the last one accepted: equal sizes with different roots, or a proof that does not
  hold, is a rewritten or forked history (`ForkDetected`: refuse everything and keep both as evidence);
  a rewrite re-signed with the gateway's own key is caught, because the key signs whatever it is given but
  cannot make two different trees consistent;
* it is not smaller than the last one accepted (`CheckpointStale`): a gateway cannot show an older view;
* the request's own entry is in it (`check_inclusion`), so the gateway cannot later drop or edit the
  record of what it asked for without contradicting a checkpoint this connector cosigned.

The first checkpoint is trusted on first use; the connector's cosignature of it and of every later one
(`audit.cosignature`) lets an auditor compare what each department was shown.

These are pure functions: storing the last checkpoint and fetching proofs belong to the connector.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import rfc8785

from audit.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from audit.errors import CheckpointStale, ForkDetected, ProofError
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion

__all__ = ["check_consistent", "check_inclusion", "witness"]


def check_consistent(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> Checkpoint:
    """Return the later of two verified checkpoints of one log if `proof` shows one extends the other.

    `proof` is the consistency proof from the smaller size to the larger (empty for equal sizes).
    Raises `ForkDetected` when they cannot both be views of one append-only log.
    """
    if old.origin != new.origin:
        raise ForkDetected(
            f"the checkpoints are for different logs ({old.origin!r}, {new.origin!r})",
            old_size=old.size,
            new_size=new.size,
        )
    if old.size == new.size:
        if old.root != new.root:
            raise ForkDetected(
                f"two signed checkpoints of size {old.size} have different roots: the log was rewritten",
                old_size=old.size,
                new_size=new.size,
            )
        return new
    small, large = (old, new) if old.size < new.size else (new, old)
    try:
        verify_consistency(small.size, large.size, proof, small.root, large.root)
    except ProofError as exc:
        raise ForkDetected(
            f"the checkpoint of size {large.size} does not extend the one of size {small.size}: {exc}",
            old_size=old.size,
            new_size=new.size,
        ) from exc
    return large


def witness(
    last_seen: str | None,
    new_note: str,
    proof: Sequence[bytes],
    verifiers: Iterable[NoteVerifier],
    *,
    origin: str | None = None,
) -> Checkpoint:
    """Verify a new signed checkpoint against the last one this witness accepted; return what to keep.

    `last_seen` is the signed note last returned by this function (None the first time: trust on first
    use), `new_note` the one the request carries, `proof` the consistency proof between their sizes, and
    `verifiers` the gateway's audit keys the connector pins. Returns the new checkpoint, to remember.
    Raises `CheckpointError` if the new note is not signed by a pinned key, `ForkDetected` if the
    histories diverge, `CheckpointStale` if the new one is consistent but smaller than the last.
    """
    keys = list(verifiers)
    new = open_checkpoint(new_note, keys, origin=origin)
    if last_seen is None:
        return new
    # Verified when it was accepted; re-checking it would fail after a key rotation for no benefit.
    old = Checkpoint.parse_unverified(last_seen)
    check_consistent(old, new, proof)
    if new.size < old.size:
        raise CheckpointStale(witnessed_size=old.size, presented_size=new.size)
    return new


def check_inclusion(
    checkpoint: Checkpoint, seq: int, prev_hash: bytes, entry: bytes, proof: Sequence[bytes]
) -> dict[str, Any]:
    """Return the event of entry `seq` if `proof` shows that entry inside `checkpoint`; else `ProofError`.

    The leaf is SHA-256(prev_hash || entry) (see `audit.entries`), so the entry's exact canonical bytes
    are what the checkpoint vouches for; the caller then checks the event names what it was asked.
    """
    if len(prev_hash) != 32:
        raise ProofError("the previous entry hash is 32 bytes")
    if not 1 <= seq <= checkpoint.size:
        raise ProofError(f"entry {seq} is not in a checkpoint of size {checkpoint.size}")
    leaf = leaf_hash(hashlib.sha256(prev_hash + entry).digest())
    verify_inclusion(seq - 1, checkpoint.size, leaf, proof, checkpoint.root)
    try:
        parsed = json.loads(entry)
    except ValueError:
        raise ProofError("the entry is not JSON") from None
    if not isinstance(parsed, dict) or rfc8785.dumps(parsed) != entry or parsed.get("seq") != seq:
        raise ProofError(f"the bytes are not the canonical entry {seq}")
    event = parsed.get("event")
    if not isinstance(event, dict):
        raise ProofError(f"entry {seq} holds no event")
    return event
