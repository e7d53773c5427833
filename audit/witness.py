"""Witnessing the gateway's log: what a connector checks before it serves a request.

Each extract request carries the gateway's latest signed checkpoint. The connector keeps the last one it
accepted and, for a new one, asks the gateway for a consistency proof between the two sizes. If the new
checkpoint extends the old one (or is an older one the old one extends), the log has only grown; if the
sizes are equal with different roots, or the proof does not hold, the gateway has shown a rewritten or
forked history and `ForkDetected` is raised: the connector must refuse to serve and keep both checkpoints
as evidence. A rewrite re-signed with the gateway's own key is caught here, because the key signs whatever
it is given but cannot make two different trees consistent.

These are pure functions: storing the last checkpoint and fetching proofs belong to the connector.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from audit.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from audit.errors import ForkDetected, ProofError
from audit.merkle import verify_consistency

__all__ = ["check_consistent", "witness"]


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
    `verifiers` the gateway's audit keys the connector pins. Returns the checkpoint to remember (the larger
    of the two). Raises `CheckpointError` if the new note is not signed by a pinned key, `ForkDetected` if
    the histories diverge.
    """
    keys = list(verifiers)
    new = open_checkpoint(new_note, keys, origin=origin)
    if last_seen is None:
        return new
    # Verified when it was accepted; re-checking it would fail after a key rotation for no benefit.
    old = Checkpoint.parse_unverified(last_seen)
    return check_consistent(old, new, proof)
