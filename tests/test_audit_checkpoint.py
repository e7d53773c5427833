"""Signed notes and checkpoints: the Go sumdb/note vectors, strict parsing, the checkpointer, key rotation."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.checkpoint import (
    Checkpoint,
    Checkpointer,
    CheckpointPolicy,
    NoteSigner,
    checkpoint_body,
    key_id,
    load_signer,
    load_verifier,
    open_checkpoint,
    open_note,
    parse_checkpoint_body,
    parse_note,
    parse_signer,
    parse_verifier,
    rotate_key,
    sign_note,
    verify_rotation,
)
from audit.entries import ACTION_KEY_ROTATED
from audit.errors import CheckpointError, UnsafeEntry
from audit.store import AuditLog

# golang.org/x/mod/sumdb/note: the documented example key and note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_SIGNATURE = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
GO_NOTE = f"{GO_TEXT}\n— PeterNeumann {GO_SIGNATURE}\n"
ORIGIN = "audit.fedgate.example/test"


def _log(tmp_path: Path) -> AuditLog:
    return AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")


def test_go_note_vector_signs_byte_for_byte() -> None:
    signer = parse_signer(GO_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.vkey == GO_VKEY
    assert signer.skey() == GO_SKEY
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE
    text, good = open_note(GO_NOTE, [parse_verifier(GO_VKEY)])
    assert text == GO_TEXT
    assert [v.name for v in good] == ["PeterNeumann"]


def test_key_id_is_the_note_key_hash() -> None:
    verifier = parse_verifier(GO_VKEY)
    raw = verifier.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + raw).digest()[:4]
    assert key_id("PeterNeumann", raw) == expected == bytes.fromhex("c74f20a3")


def test_unknown_and_bad_signatures() -> None:
    other = NoteSigner.generate("PeterNeumann")
    # Same name, other key: its line is ignored, so nothing trusted signed the note.
    with pytest.raises(CheckpointError, match="no signature from a trusted key"):
        open_note(GO_NOTE, [other.verifier])
    # A known key whose signature does not verify rejects the whole note.
    tampered = GO_NOTE.replace("then you", "than you")
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(tampered, [parse_verifier(GO_VKEY)])
    # A second signature by an unknown key does not matter.
    both = sign_note(GO_TEXT, [parse_signer(GO_SKEY), NoteSigner.generate("someone.else")])
    open_note(both, [parse_verifier(GO_VKEY)])
    with pytest.raises(CheckpointError):
        open_note(GO_NOTE, [])


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT + "— PeterNeumann abc=\n",  # no blank line
        GO_NOTE[:-1],  # no final newline
        GO_NOTE.replace("— ", "- "),  # hyphen, not em dash
        GO_NOTE.replace("PeterNeumann x08", "Peter+Neumann x08"),  # '+' in a key name
        GO_NOTE.replace("=\n", "\n"),  # non-canonical base64
        GO_NOTE.replace("problem,\n", "problem,\r\n"),  # control character
        GO_TEXT + "\n",  # no signature at all
        GO_TEXT + "\n— PeterNeumann AAAA\n",  # shorter than a key ID
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(CheckpointError):
        parse_note(note)


def test_too_many_signatures_are_refused() -> None:
    signers = [NoteSigner.generate(f"k{i}") for i in range(17)]
    with pytest.raises(CheckpointError, match="at most 16"):
        parse_note(sign_note("x\n", signers))


def test_checkpoint_body_is_strict() -> None:
    root = bytes(range(32))
    body = checkpoint_body(ORIGIN, 12, root)
    assert body == f"{ORIGIN}\n12\n{base64.b64encode(root).decode()}\n"
    assert parse_checkpoint_body(body) == (ORIGIN, 12, root)
    b64 = base64.b64encode(root).decode()
    for bad in [
        f"{ORIGIN}\n012\n{b64}\n",  # leading zero
        f"{ORIGIN}\n-1\n{b64}\n",
        f"{ORIGIN}\n12\n{base64.b64encode(root[:31]).decode()}\n",  # 31-byte root
        f"{ORIGIN}\n12\n{b64}\nextension line\n",
        f"{ORIGIN}\n12\n{b64}",  # no final newline
        f"\n12\n{b64}\n",  # empty origin
    ]:
        with pytest.raises(CheckpointError):
            parse_checkpoint_body(bad)


def test_sign_and_open_a_checkpoint() -> None:
    signer = NoteSigner.generate(ORIGIN)
    cp = Checkpoint.sign(ORIGIN, 7, bytes(32), signer)
    opened = open_checkpoint(cp.note, [signer.verifier], origin=ORIGIN)
    assert (opened.origin, opened.size, opened.root) == (ORIGIN, 7, bytes(32))
    with pytest.raises(CheckpointError, match="origin"):
        open_checkpoint(cp.note, [signer.verifier], origin="another.origin")
    with pytest.raises(CheckpointError):
        open_checkpoint(cp.note.replace("\n7\n", "\n8\n"), [signer.verifier])


def test_verifier_keys_load_from_every_form(tmp_path: Path) -> None:
    signer = NoteSigner.generate(ORIGIN)
    pub = signer.private_key.public_key()
    pem = pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    raw = base64.b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    (tmp_path / "vkey").write_text(signer.vkey + "\n")
    (tmp_path / "pem").write_text(pem)
    note = Checkpoint.sign(ORIGIN, 1, bytes(32), signer).note
    hexed = pub.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    for form in (signer.vkey, pem, raw, hexed, str(tmp_path / "vkey"), tmp_path / "pem", pub):
        open_checkpoint(note, [load_verifier(form)])
    with pytest.raises(CheckpointError):
        load_verifier("not a key")
    with pytest.raises(CheckpointError, match="private"):
        load_verifier(signer.skey())
    (tmp_path / "skey").write_text(signer.skey())
    assert load_signer(tmp_path / "skey").vkey == signer.vkey
    with pytest.raises(CheckpointError, match="ID does not match"):
        parse_verifier(signer.vkey.replace(signer.key_id.hex(), "00000000"))


def test_checkpointer_applies_its_policy(tmp_path: Path) -> None:
    log = _log(tmp_path)
    now = [1000.0]
    signer = NoteSigner.generate(ORIGIN)
    cp = Checkpointer(
        log, signer, policy=CheckpointPolicy(every_entries=5, every_seconds=30), clock=lambda: now[0]
    )
    assert cp.maybe_checkpoint() is None  # nothing to sign
    log.append_many({"action": "t", "i": i} for i in range(4))
    assert cp.maybe_checkpoint() is None  # 4 unsigned entries, no time passed
    log.append({"action": "t"})
    first = cp.maybe_checkpoint()
    assert first is not None and first.size == 5
    log.append({"action": "t"})
    assert cp.maybe_checkpoint() is None
    now[0] += 31
    second = cp.maybe_checkpoint()
    assert second is not None and second.size == 6
    on_demand = cp.checkpoint()
    assert on_demand.size == 6
    stored = log.checkpoints()
    assert [c.size for c in stored] == [5, 6]  # the same (size, key) twice is stored once
    assert open_checkpoint(stored[-1].note, [signer.verifier]).root == log.head().root
    # A new checkpointer resumes from the stored checkpoints, not from zero.
    again = Checkpointer(log, signer, policy=CheckpointPolicy(every_entries=5), clock=lambda: now[0])
    assert not again.due()


def test_background_checkpointer_wakes_on_appends(tmp_path: Path) -> None:
    log = _log(tmp_path)
    cp = Checkpointer(
        log, NoteSigner.generate(ORIGIN), policy=CheckpointPolicy(every_entries=10, every_seconds=3600)
    )
    cp.start()
    try:
        log.append_many({"action": "t", "i": i} for i in range(10))
        deadline = time.monotonic() + 10
        while not log.checkpoints() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [c.size for c in log.checkpoints()] == [10]
    finally:
        cp.stop()
    assert not any(t.name == "audit-checkpointer" for t in threading.enumerate())


def test_rotate_key_logs_both_keys_and_switches(tmp_path: Path) -> None:
    log = _log(tmp_path)
    old, new = NoteSigner.generate(ORIGIN), NoteSigner.generate(ORIGIN)
    cp = Checkpointer(log, old)
    log.append_many({"action": "t", "i": i} for i in range(3))
    entry = rotate_key(cp, new, actor="operator:ops", reason="scheduled")
    assert entry.seq == 4
    stored = log.entry(4)
    assert stored is not None
    event = stored.event
    assert event["action"] == ACTION_KEY_ROTATED
    assert (event["old_key"], event["new_key"]) == (old.vkey, new.vkey)
    rotation = verify_rotation(event)
    assert rotation.old.same_key(old.verifier) and rotation.new.same_key(new.verifier)
    # The old era is sealed with the old key, the new one starts with the new key.
    by_size = {c.size: c for c in log.checkpoints()}
    open_checkpoint(by_size[3].note, [old.verifier])
    open_checkpoint(by_size[4].note, [new.verifier])
    with pytest.raises(CheckpointError):
        open_checkpoint(by_size[4].note, [old.verifier])
    assert cp.signer is new
    with pytest.raises(CheckpointError):
        rotate_key(cp, new, actor="operator:ops")
    # A rotation with a forged signature is refused.
    forged = {**event, "new_signature": base64.b64encode(Ed25519PrivateKey.generate().sign(b"x")).decode()}
    with pytest.raises(CheckpointError, match="new key"):
        verify_rotation(forged)


def test_callers_cannot_write_rotation_entries(tmp_path: Path) -> None:
    log = _log(tmp_path)
    with pytest.raises(UnsafeEntry, match="audit package"):
        log.append({"action": ACTION_KEY_ROTATED, "old_key": "x", "new_key": "y"})
    assert log.head().size == 0
