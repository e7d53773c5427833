"""RFC 6962/9162 Merkle hashing and proofs: the transparency-dev/merkle test vectors, then properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import ProofError
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# github.com/transparency-dev/merkle testonly/constants.go: LeafInputs() and RootHashes().
LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# testonly/constants.go NodeHashes(): level 1 (pairs) of the same tree.
LEVEL_1 = [
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
]
# proof/verify_test.go inclusionProofs (leaf numbers there are 1-based; here 0-based indices).
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# proof/verify_test.go consistencyProofs.
CONSISTENCY = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _tree() -> MerkleTree:
    return MerkleTree(leaf_hash(x) for x in LEAF_INPUTS)


def _flip(value: bytes, index: int = 0, mask: int = 8) -> bytes:
    return value[:index] + bytes([value[index] ^ mask]) + value[index + 1 :]


def test_hashers_match_the_rfc6962_vectors() -> None:
    # rfc6962/rfc6962_test.go
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert leaf_hash(b"L123456").hex() == "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    assert (
        node_hash(b"N123", b"N456").hex()
        == "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    # Second-preimage resistance: a node is not the leaf of its children's concatenation.
    left, right = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert node_hash(left, right) != leaf_hash(left + right)
    assert node_hash(left, right) != node_hash(right, left)


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_roots_of_the_standard_leaves(size: int) -> None:
    leaves = [leaf_hash(x) for x in LEAF_INPUTS[:size]]
    expected = ROOTS[size]
    assert root_of(leaves).hex() == expected
    assert _tree().root(size).hex() == expected
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    assert compact.root().hex() == expected
    assert _tree().frontier(size).root().hex() == expected
    assert CompactRange.from_hex(size, compact.to_hex()).root().hex() == expected


def test_empty_tree_and_the_interior_nodes() -> None:
    assert MerkleTree().root() == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    tree = _tree()
    assert [tree._perfect(2 * i, 1).hex() for i in range(4)] == LEVEL_1


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proof_vectors(index: int, size: int, proof: list[str]) -> None:
    tree = _tree()
    expected = [bytes.fromhex(h) for h in proof]
    assert tree.inclusion_proof(index, size) == expected
    leaf, root = tree.leaf(index), bytes.fromhex(ROOTS[size])
    assert root_from_inclusion_proof(index, size, leaf, expected) == root
    verify_inclusion(index, size, leaf, expected, root)

    # The corruptions proof/verify_test.go tries; each must fail.
    bad = [
        (index - 1, size, leaf, expected, root),
        (index + 1, size, leaf, expected, root),
        (index ^ 2, size, leaf, expected, root),
        (index, size * 2, leaf, expected, root),
        (index, size // 2, leaf, expected, root),
        (index, size, leaf_hash(b"WrongLeaf"), expected, root),
        (index, size, leaf, expected, EMPTY_ROOT),
        (index, size, leaf, expected, SOME_HASH),
        (index, size, leaf, [*expected, root], root),
        (index, size, leaf, [root, *expected], root),
        (index, size, leaf, expected[:-1], root),
        (index, size, leaf, [*expected, b""], root),
    ]
    bad += [
        (index, size, leaf, [*expected[:i], _flip(p), *expected[i + 1 :]], root)
        for i, p in enumerate(expected)
    ]
    for args in bad:
        with pytest.raises(ProofError):
            verify_inclusion(*args)


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_consistency_proof_vectors(size1: int, size2: int, proof: list[str]) -> None:
    tree = _tree()
    expected = [bytes.fromhex(h) for h in proof]
    assert tree.consistency_proof(size1, size2) == expected
    root1, root2 = bytes.fromhex(ROOTS[size1]), bytes.fromhex(ROOTS[size2])
    verify_consistency(size1, size2, expected, root1, root2)

    bad = [
        (size1 - 1, size2, expected, root1, root2),
        (size1 + 1, size2, expected, root1, root2),
        (size1 ^ 2, size2, expected, root1, root2),
        (size1, size2 * 2, expected, root1, root2),
        (size1, size2 // 2, expected, root1, root2),
        (size1, size2, expected, SOME_HASH, root2),
        (size1, size2, expected, root1, SOME_HASH),
        (size1, size2, expected, root2, root1),
        (size1, size2, [], root1, root2),
        (size1, size2, [*expected, root1], root1, root2),
        (size1, size2, [*expected, root2], root1, root2),
        (size1, size2, [root1, *expected], root1, root2),
        (size1, size2, [expected[0], *expected], root1, root2),
        (size1, size2, expected[:-1], root1, root2),
    ]
    bad += [
        (size1, size2, [*expected[:i], _flip(p, 0, 16), *expected[i + 1 :]], root1, root2)
        for i, p in enumerate(expected)
    ]
    for args in bad:
        with pytest.raises(ProofError):
            verify_consistency(*args)


def test_trivial_consistency_cases() -> None:
    # proof/verify_test.go TestVerifyConsistency, with real 32-byte roots.
    r1, r2 = hashlib.sha256(b"1").digest(), hashlib.sha256(b"2").digest()
    verify_consistency(0, 0, [], r1, r1)
    verify_consistency(0, 1, [], r1, r2)
    verify_consistency(1, 1, [], r2, r2)
    for args in [
        (0, 0, [], r1, r2),
        (1, 1, [], r1, r2),
        (1, 0, [], r1, r2),
        (2, 1, [], r1, r2),
        (1, 2, [], r1, r2),
        (0, 0, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
        (0, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
        (1, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
    ]:
        with pytest.raises(ProofError):
            verify_consistency(*args)


def test_out_of_range_requests_raise() -> None:
    tree = _tree()
    for index, size in [(0, 0), (8, 8), (-1, 8), (0, 9)]:
        with pytest.raises(ProofError):
            tree.inclusion_proof(index, size)
    with pytest.raises(ProofError):
        tree.consistency_proof(5, 4)
    with pytest.raises(ProofError):
        CompactRange(3, [EMPTY_ROOT])  # size 3 needs two subtree hashes


def _leaves(n: int, salt: int) -> list[bytes]:
    return [leaf_hash(salt.to_bytes(4, "big") + i.to_bytes(4, "big")) for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 200), st.data())
def test_every_inclusion_proof_verifies_and_any_flipped_byte_fails(size: int, data: st.DataObject) -> None:
    tree = MerkleTree(_leaves(size, size))
    tree_size = data.draw(st.integers(1, size), label="tree size")
    index = data.draw(st.integers(0, tree_size - 1), label="index")
    proof = tree.inclusion_proof(index, tree_size)
    root, leaf = tree.root(tree_size), tree.leaf(index)
    assert root == root_of([tree.leaf(i) for i in range(tree_size)])
    verify_inclusion(index, tree_size, leaf, proof, root)

    byte = data.draw(st.integers(0, 31), label="byte")
    mask = data.draw(st.integers(1, 255), label="mask")
    with pytest.raises(ProofError):
        verify_inclusion(index, tree_size, _flip(leaf, byte, mask), proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(index, tree_size, leaf, proof, _flip(root, byte, mask))
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        broken = [*proof[:i], _flip(proof[i], byte, mask), *proof[i + 1 :]]
        with pytest.raises(ProofError):
            verify_inclusion(index, tree_size, leaf, broken, root)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 200), st.data())
def test_every_consistency_proof_verifies_and_any_flipped_byte_fails(size: int, data: st.DataObject) -> None:
    tree = MerkleTree(_leaves(size, size + 1000))
    size2 = data.draw(st.integers(1, size), label="size2")
    size1 = data.draw(st.integers(0, size2), label="size1")
    proof = tree.consistency_proof(size1, size2)
    root1, root2 = tree.root(size1), tree.root(size2)
    verify_consistency(size1, size2, proof, root1, root2)

    byte = data.draw(st.integers(0, 31), label="byte")
    mask = data.draw(st.integers(1, 255), label="mask")
    if 0 < size1 < size2:
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, _flip(root1, byte, mask), root2)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, root1, _flip(root2, byte, mask))
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        broken = [*proof[:i], _flip(proof[i], byte, mask), *proof[i + 1 :]]
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, broken, root1, root2)
    # A tree that differs in any leaf below size1 is not consistent with this one.
    if size1 > 0:
        changed = data.draw(st.integers(0, size1 - 1), label="changed leaf")
        other = MerkleTree(_leaves(size, size + 1000))
        other_leaves = [other.leaf(i) for i in range(size2)]
        other_leaves[changed] = _flip(other_leaves[changed], byte, mask)
        forked = MerkleTree(other_leaves)
        if size1 < size2:
            with pytest.raises(ProofError):
                verify_consistency(
                    size1, size2, forked.consistency_proof(size1, size2), root1, forked.root(size2)
                )


def test_large_tree_roots_and_proofs_agree_with_the_definition() -> None:
    # 2**17 + 3 leaves: deep enough to exercise every level, quick enough for the suite.
    n = (1 << 17) + 3
    leaves = _leaves(n, 7)
    tree = MerkleTree(leaves)
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    assert tree.root() == compact.root() == root_of(leaves)
    for index in (0, 1, 65_535, 65_536, n - 3, n - 1):
        verify_inclusion(index, n, leaves[index], tree.inclusion_proof(index, n), tree.root())
    for size1 in (1, 2, 1 << 16, (1 << 16) + 1, n - 1):
        verify_consistency(size1, n, tree.consistency_proof(size1, n), tree.root(size1), tree.root())
