"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Hashing (RFC 9162 §2.1.1): a leaf hash is SHA-256(0x00 || leaf data), an interior node is
SHA-256(0x01 || left || right), the empty tree hashes to SHA-256(""). A tree of n > 1 leaves splits at k,
the largest power of two smaller than n: the left subtree holds leaves [0, k), the right one [k, n). So the
tree is left-balanced and a lone node on the right is carried up unchanged, never paired with itself.

In the audit log the leaf data is an entry's 32-byte chain hash (see `audit.entries`), so a leaf hash here
is SHA-256(0x00 || entry hash). Indices in this module are 0-based leaf indices; the log's sequence number
`seq` is `index + 1`.

Three tools:

* `CompactRange`: the frontier of a tree (the hashes of its maximal perfect subtrees, at most one per bit of
  the size). Appending is amortised one node hash, the root is O(log n): what the appender keeps in the
  head row and what the offline verifier streams through.
* `MerkleTree`: every perfect, aligned subtree hash, kept level by level in flat `bytearray`s (about 64 bytes
  per leaf), so the root of any prefix and any proof costs O(log² n) hashes even at millions of leaves.
* `verify_inclusion` / `verify_consistency`: the RFC 9162 §2.1.3.2 and §2.1.4.2 algorithms. They return
  None or raise `ProofError`, never a bool a caller could forget to test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from audit.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "MerkleTree",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The root of the tree whose leaves have these leaf hashes (the RFC's MTH, by definition)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


class CompactRange:
    """The frontier of a `size`-leaf tree: one perfect-subtree hash per set bit of `size`, largest first."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if size < 0 or len(self.hashes) != size.bit_count():
            raise ProofError(
                f"a frontier of size {size} has {size.bit_count()} hashes, not {len(self.hashes)}"
            )
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise ProofError("a frontier hash is not 32 bytes")

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash; each trailing 1 bit of the old size merges one pair of subtrees."""
        n = self.size
        node = leaf
        hashes = self.hashes
        while n & 1:
            node = _sha256(_NODE + hashes.pop() + node).digest()
            n >>= 1
        hashes.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        node = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            node = _sha256(_NODE + h + node).digest()
        return node

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def to_hex(self) -> str:
        return "".join(h.hex() for h in self.hashes)

    @classmethod
    def from_hex(cls, size: int, text: str) -> CompactRange:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ProofError("a frontier is not hexadecimal") from None
        if len(raw) % HASH_SIZE:
            raise ProofError("a frontier is not a whole number of 32-byte hashes")
        return cls(size, (raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)))


class MerkleTree:
    """An append-only tree keeping every perfect, aligned subtree hash, for roots and proofs of any size.

    Level k holds the hashes of the subtrees covering leaves [i * 2**k, (i + 1) * 2**k), concatenated.
    Not thread-safe: callers that share one serialise access.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self.size = 0
        self.extend(leaf_hashes)

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise ProofError("a leaf hash is not 32 bytes")
        levels = self._levels
        levels[0] += leaf
        index = self.size
        level = 0
        node = leaf
        while index & 1:
            left = levels[level][(index - 1) * HASH_SIZE : index * HASH_SIZE]
            node = _sha256(_NODE + left + node).digest()
            level += 1
            index >>= 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += node
        self.size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for leaf in leaf_hashes:
            self.append(leaf)

    def leaf(self, index: int) -> bytes:
        self._check_index(index, self.size)
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _perfect(self, start: int, level: int) -> bytes:
        i = start >> level
        return bytes(self._levels[level][i * HASH_SIZE : (i + 1) * HASH_SIZE])

    def _subtree(self, start: int, n: int) -> bytes:
        """The hash of leaves [start, start + n); `start` is aligned as the RFC recursion aligns it."""
        if n & (n - 1) == 0:
            return self._perfect(start, n.bit_length() - 1)
        k = _split(n)
        return node_hash(self._perfect(start, k.bit_length() - 1), self._subtree(start + k, n - k))

    def root(self, size: int | None = None) -> bytes:
        """The root of the first `size` leaves (default: all)."""
        size = self.size if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def frontier(self, size: int | None = None) -> CompactRange:
        """The compact range of the first `size` leaves, from which a streaming verifier can continue."""
        size = self.size if size is None else size
        self._check_size(size)
        hashes = []
        start = 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                hashes.append(self._perfect(start, level))
                start += 1 << level
        return CompactRange(size, hashes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1: the audit path of leaf `index` in the tree of the first `size` leaves."""
        size = self.size if size is None else size
        self._check_size(size)
        self._check_index(index, size)
        proof: list[bytes] = []
        start, n, m = 0, size, index
        # The recursion PATH(m, D[start:start+n]) appends the sibling after descending, so collect top-down
        # and reverse at the end.
        while n > 1:
            k = _split(n)
            if m < k:
                proof.append(self._subtree(start + k, n - k))
                n = k
            else:
                proof.append(self._subtree(start, k))
                start, n, m = start + k, n - k, m - k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1: the proof that the tree of `size1` leaves is a prefix of the one of `size2`."""
        size2 = self.size if size2 is None else size2
        self._check_size(size2)
        if not 0 <= size1 <= size2:
            raise ProofError(f"a consistency proof needs 0 <= size1 <= size2, got {size1} and {size2}")
        if size1 == 0 or size1 == size2:
            return []
        proof: list[bytes] = []
        start, n, m, complete = 0, size2, size1, True
        while m != n:
            k = _split(n)
            if m <= k:
                proof.append(self._subtree(start + k, n - k))
                n = k
            else:
                proof.append(self._subtree(start, k))
                start, n, m, complete = start + k, n - k, m - k, False
        if not complete:
            proof.append(self._subtree(start, n))
        proof.reverse()
        return proof

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ProofError(f"the tree has {self.size} leaves; size {size} is out of range")

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"the {what} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2 steps 1-6: the root that `proof` leads to from leaf `index` of a `size`-leaf tree."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    _check_hash(leaf, "leaf hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash(p, "proof element")
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(_NODE + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Return None if `proof` puts leaf hash `leaf` at `index` of the `size`-leaf tree with `root`."""
    _check_hash(root, "root")
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(f"leaf {index} is not included in the tree of size {size} with this root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """RFC 9162 §2.1.4.2: return None if the `size1` tree (root1) is a prefix of the `size2` tree (root2)."""
    _check_hash(root1, "first root")
    _check_hash(root2, "second root")
    if not 0 <= size1 <= size2:
        raise ProofError(f"a consistency proof needs 0 <= size1 <= size2, got {size1} and {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if root1 != root2:
            raise ProofError(f"two different roots for the same size {size1}")
        return
    if size1 == 0:
        # Every tree extends the empty one; a non-empty proof here is malformed, not merely redundant.
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError(f"an empty proof cannot show size {size1} is a prefix of size {size2}")
    for p in proof:
        _check_hash(p, "proof element")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE + c + fr).digest()
            sr = _sha256(_NODE + c + sr).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(_NODE + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than needed")
    if fr != root1:
        raise ProofError(f"the proof does not lead to the root of size {size1}")
    if sr != root2:
        raise ProofError(f"the proof does not lead to the root of size {size2}")
