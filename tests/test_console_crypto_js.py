"""Known answers for the console's in-page cryptography, run in Chromium against the Python implementation.

The department admin's page signs approvals with WebCrypto Ed25519 (`approval-sign.js`); the auditor's page
re-hashes entries and checks RFC 9162 inclusion proofs and signed-note checkpoints (`merkle-verify.js`,
`signed-note.js`). Each is checked here against connectors/protocol.py, audit/merkle.py and
audit/checkpoint.py: the same signature byte for byte (Ed25519 is deterministic), the same roots, and the
same refusals of tampered proofs, notes and keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import Checkpoint, NoteSigner
from audit.merkle import MerkleTree, leaf_hash
from audit.store import AuditLog
from connectors.protocol import (
    Approval,
    ApprovedDataset,
    fingerprint,
    private_key_pem,
    sign_approval,
    verify_approval,
)
from tests.console_browser import StaticSite, browser_page


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with StaticSite() as site, browser_page() as page:
        page.goto(site.url + "/")
        yield page


def run(page: Any, module: str, body: str, arg: Any) -> Any:
    """Evaluate `body` (an async function body seeing `m`, the imported module, and `arg`) in the page."""
    script = f"async (arg) => {{ const m = await import('/js/{module}'); {body} }}"
    return page.evaluate(script, arg)


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"kat-{seed}".encode()).digest())


def _approval(**changes: Any) -> Approval:
    fields: dict[str, Any] = {
        "department": "tax",
        "query_id": "q-" + "a" * 16,
        "query_digest": "b" * 64,
        "unit": "household",
        "period_start": "2025-01",
        "period_end": "2025-12",
        "datasets": (ApprovedDataset(dataset="wages", measures=("amount",), dimensions=("village",)),),
        "epsilon": Decimal("0.5"),
        # A fixed issue time keeps the signed bytes (and so the known answer) the same on every run.
        "issued_at": 1_899_000_000,
        "expires_at": 1_900_000_000,
    }
    fields.update(changes)
    return Approval(**fields)


@pytest.mark.parametrize("seed", range(3))
def test_page_signature_equals_python_and_verifies(page: Any, seed: int) -> None:
    key = _key(seed)
    approval = _approval(department=f"dept{seed}", epsilon=Decimal(seed + 1) / 4)
    message = approval.signing_bytes()
    out = run(
        page,
        "approval-sign.js",
        "const bytes = Uint8Array.from(atob(arg.message), (c) => c.charCodeAt(0));"
        "return { signature: await m.signApproval(arg.pem, bytes), digest: await m.signingDigest(bytes),"
        " fingerprint: await m.keyFingerprint(arg.pem) };",
        {"pem": private_key_pem(key).decode(), "message": base64.b64encode(message).decode()},
    )
    expected = sign_approval(key, approval)
    assert out["signature"] == expected.signature
    assert out["digest"] == hashlib.sha256(message).hexdigest()
    assert out["fingerprint"] == fingerprint(key.public_key()) == expected.key_fingerprint
    signed = expected.model_copy(update={"signature": out["signature"]})
    assert verify_approval(key.public_key(), signed) == approval


def test_page_refuses_a_key_file_that_is_not_ed25519(page: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    for pem in (ec_pem, "not a key at all"):
        out = run(
            page,
            "approval-sign.js",
            "try { await m.signApproval(arg, new Uint8Array(3)); return 'signed'; }"
            " catch (e) { return e instanceof m.KeyFileError ? e.message : 'other: ' + e; }",
            pem,
        )
        assert out in ("not an Ed25519 private key", "not a PEM private key")


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(n)]


VERIFY = (
    "const b = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));"
    "try { const root = await m.rootFromInclusionProof(arg.index, arg.size, b(arg.leaf), arg.proof.map(b));"
    " return m.hexFromBytes(root); }"
    " catch (e) { return e instanceof m.ProofError ? 'refused' : 'other: ' + e; }"
)


def _b64(items: list[bytes]) -> list[str]:
    return [base64.b64encode(i).decode() for i in items]


def test_inclusion_roots_equal_python_for_every_leaf_of_small_trees(page: Any) -> None:
    tree = MerkleTree(_leaves(33))
    cases = [(i, n) for n in (1, 2, 3, 5, 7, 8, 13, 16, 17, 33) for i in range(n)]
    args = [
        {"index": i, "size": n, "leaf": _b64([tree.leaf(i)])[0], "proof": _b64(tree.inclusion_proof(i, n))}
        for i, n in cases
    ]
    found = page.evaluate(
        "async (all) => { const m = await import('/js/merkle-verify.js');"
        f" const one = async (arg) => {{ {VERIFY} }}; const out = [];"
        " for (const a of all) out.push(await one(a)); return out; }",
        args,
    )
    assert found == [tree.root(n).hex() for _, n in cases]


def test_tampered_or_misplaced_inclusion_proofs_are_refused_or_miss_the_root(page: Any) -> None:
    tree = MerkleTree(_leaves(13))
    proof = tree.inclusion_proof(5, 13)
    flipped = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    root = tree.root(13).hex()
    base = {"index": 5, "size": 13, "leaf": _b64([tree.leaf(5)])[0]}
    assert run(page, "merkle-verify.js", VERIFY, {**base, "proof": _b64(proof)}) == root
    assert run(page, "merkle-verify.js", VERIFY, {**base, "proof": _b64(flipped)}) != root
    assert run(page, "merkle-verify.js", VERIFY, {**base, "index": 6, "proof": _b64(proof)}) != root
    assert run(page, "merkle-verify.js", VERIFY, {**base, "proof": _b64(proof[:-1])}) == "refused"
    assert run(page, "merkle-verify.js", VERIFY, {**base, "proof": _b64([*proof, proof[0]])}) == "refused"
    assert run(page, "merkle-verify.js", VERIFY, {**base, "index": 13, "proof": _b64(proof)}) == "refused"
    short = [p[:31] for p in proof]
    assert run(page, "merkle-verify.js", VERIFY, {**base, "proof": _b64(short)}) == "refused"


def test_entry_hash_and_proof_of_a_real_audit_log(page: Any, tmp_path: Any) -> None:
    log = AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")
    for i in range(6):
        log.append({"action": "http.request", "actor": f"analyst:a{i}", "outcome": "ok", "note": "村 社区"})
    size, root = log.head()
    entry = log.entry(4)
    assert entry is not None
    out = run(
        page,
        "merkle-verify.js",
        "const b = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));"
        "const h = await m.entryHash(m.bytesFromHex(arg.prev), b(arg.entry));"
        "const root = await m.rootFromInclusionProof(3, arg.size, await m.leafHash(h), arg.proof.map(b));"
        "return [m.hexFromBytes(h), m.hexFromBytes(root)];",
        {
            "prev": entry.prev_hash,
            "entry": base64.b64encode(entry.canonical).decode(),
            "size": size,
            "proof": _b64(log.inclusion_proof(4, size)),
        },
    )
    assert out == [entry.hash, root.hex()]
    assert json.loads(entry.canonical)["event"]["note"] == "村 社区"


OPEN = (
    "try { const v = await m.parseVerifierKey(arg.vkey); const c = await m.openCheckpoint(arg.note, v);"
    " return [c.origin, c.size, btoa(String.fromCharCode(...c.root))]; }"
    " catch (e) { return e.constructor.name === 'ProofError' ? 'refused: ' + e.message : 'other: ' + e; }"
)


def test_checkpoint_signature_verifies_in_the_page_against_the_pinned_key(page: Any) -> None:
    signer = NoteSigner("county-audit", _key(7))
    other = NoteSigner("county-audit", _key(8))
    root = hashlib.sha256(b"root").digest()
    cp = Checkpoint.sign("fedgate.example/audit", 42, root, signer)
    good = run(page, "signed-note.js", OPEN, {"vkey": signer.vkey, "note": cp.note})
    assert good == ["fedgate.example/audit", 42, base64.b64encode(root).decode()]
    # A cosignature by a key the auditor did not pin is ignored, as the signed-note spec requires.
    witness = NoteSigner("tax-witness", _key(9))
    cosigned = cp.note + witness.signature_line(cp.body)
    assert run(page, "signed-note.js", OPEN, {"vkey": signer.vkey, "note": cosigned}) == good

    tampered = cp.note.replace("\n42\n", "\n43\n")
    assert run(page, "signed-note.js", OPEN, {"vkey": signer.vkey, "note": tampered}).startswith("refused")
    # Same name, another key: the key ID differs, so the note carries nothing from the pinned key.
    refused = run(page, "signed-note.js", OPEN, {"vkey": other.vkey, "note": cp.note})
    assert refused == "refused: the checkpoint carries no signature from the pinned audit key"
    wrong_id = signer.vkey.split("+")
    wrong_id[1] = "00000000"
    assert run(page, "signed-note.js", OPEN, {"vkey": "+".join(wrong_id), "note": cp.note}).startswith(
        "refused"
    )
