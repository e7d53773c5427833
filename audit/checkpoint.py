"""Signed checkpoints: the signed-note text format, Ed25519 note keys, the checkpointer and key rotation.

A checkpoint (transparency-dev/formats, C2SP tlog-checkpoint) is the note text

    <origin>\\n<tree size, decimal>\\n<base64 of the 32-byte Merkle root>\\n

signed as a C2SP signed note (golang.org/x/mod/sumdb/note): the text, one blank line, then one line per
signature, "— <key name> <base64(4-byte key ID || 64-byte Ed25519 signature)>\\n" (U+2014 em dash). The key
ID is the first four bytes of SHA-256(key name || "\\n" || 0x01 || 32-byte public key), 0x01 naming
Ed25519. Keys travel as the Go package writes them:

    verifier key:  <name>+<key ID, 8 hex digits>+<base64(0x01 || public key)>
    signer key:    PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || 32-byte seed)>

Parsing is strict: valid UTF-8, no control characters but newline, canonical base64, a decimal size
without leading zeros, a 32-byte root, no extension lines. Signatures from keys a verifier does not know
are ignored (as the spec requires); a note with no valid signature from a known key is refused, and so is
one where a known key's signature fails.

The audit key can be rotated: `rotate_key` seals the old key's era with a checkpoint, appends an
`audit.key_rotated` entry that names both verifier keys and carries a signature by each over the rotation
statement, switches the checkpointer to the new key and signs a checkpoint with it. Checkpoints of sizes
from the rotation entry's seq on must be signed by the new key; `audit.verify` enforces that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from audit.entries import ACTION_KEY_ROTATED
from audit.errors import AuditUnavailable, CheckpointError
from audit.store import AppendedEntry, AuditLog
from connectors.protocol import is_weak_public_key

__all__ = [
    "ALG_ED25519",
    "Checkpoint",
    "CheckpointPolicy",
    "Checkpointer",
    "NoteSigner",
    "NoteVerifier",
    "check_key_strength",
    "checkpoint_body",
    "key_id",
    "load_signer",
    "load_verifier",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint_body",
    "parse_note",
    "parse_signer",
    "parse_verifier",
    "rotate_key",
    "rotation_statement",
    "sign_note",
    "verify_rotation",
]


def _logger() -> Any:
    # Fetched per use: logs here are rare, and a logger cached on first use would keep writing to the
    # stream of whichever command first used it.
    return structlog.get_logger(__name__)


ALG_ED25519 = 0x01
EM_DASH = "\u2014"
MAX_SIGNATURES = 16
MAX_NOTE_BYTES = 64 * 1024
_SIGNATURE_LINE = re.compile(r"\u2014 (\S+) (\S+)\n")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_ROTATION_PURPOSE = "fedgate-audit-key-rotation/1"


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"the {what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise CheckpointError(f"the {what} is not canonical base64")
    return raw


def _check_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name) or not name.isprintable():
        raise CheckpointError("a key name must be non-empty, without spaces, '+' or control characters")


def check_key_strength(raw: bytes, what: str) -> None:
    """Refuse a small-order or low-entropy Ed25519 public key: forged signatures verify under the former,
    and the latter (a repeated byte pattern) is a placeholder, never a generated key."""
    if is_weak_public_key(raw):
        raise CheckpointError(f"the {what} is a small-order point: forged signatures would verify under it")
    if len(set(raw)) < 8:
        raise CheckpointError(f"the {what} has too few distinct bytes to be a generated key")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey | bytes) -> bytes:
    """SHA-256(name || "\\n" || 0x01 || public key)[:4], the note key ID of an Ed25519 key."""
    raw = public_key if isinstance(public_key, bytes) else _raw_public(public_key)
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + raw).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """An Ed25519 note key that checks signatures; `name` None matches any name whose key ID fits."""

    public_key: Ed25519PublicKey
    name: str | None = None

    @property
    def raw(self) -> bytes:
        return _raw_public(self.public_key)

    def matches(self, name: str, kid: bytes) -> bool:
        if self.name is not None and name != self.name:
            return False
        return key_id(name, self.public_key) == kid

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True

    def vkey(self, name: str | None = None) -> str:
        """The verifier key string, `<name>+<key ID hex>+<base64(0x01 || public key)>`."""
        label = name or self.name
        if label is None:
            raise CheckpointError("a verifier key string needs a key name")
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.raw).decode()
        return f"{label}+{key_id(label, self.public_key).hex()}+{encoded}"

    def same_key(self, other: NoteVerifier) -> bool:
        return self.raw == other.raw


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 note key that signs, under `name`."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.private_key.public_key())

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.private_key.public_key(), self.name)

    @property
    def vkey(self) -> str:
        return self.verifier.vkey()

    def skey(self) -> str:
        """The signer key string (a secret: store it like one)."""
        seed = self.private_key.private_bytes_raw()
        encoded = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{encoded}"

    def signature_line(self, text: str) -> str:
        signature = self.private_key.sign(text.encode())
        return f"{EM_DASH} {self.name} {base64.b64encode(self.key_id + signature).decode()}\n"


def _parse_key_fields(name: str, kid_hex: str, encoded: str) -> tuple[bytes, bytes]:
    _check_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", kid_hex):
        raise CheckpointError("a note key ID is 8 lowercase hex digits")
    raw = _b64decode(encoded, "key")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise CheckpointError("only Ed25519 note keys (algorithm 0x01, 32 bytes) are supported")
    check_key_strength(raw[1:], "audit key")
    return bytes.fromhex(kid_hex), raw[1:]


def parse_signer(skey: str) -> NoteSigner:
    """A signer from `PRIVATE+KEY+<name>+<id>+<base64>`; the key ID must match the key."""
    parts = skey.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise CheckpointError("a signer key has the form PRIVATE+KEY+<name>+<key id>+<base64 key>")
    name, kid_hex, encoded = parts[2], parts[3], parts[4]
    kid, seed = _parse_key_fields(name, kid_hex, encoded)
    signer = NoteSigner(name, Ed25519PrivateKey.from_private_bytes(seed))
    if signer.key_id != kid:
        raise CheckpointError("the signer key's ID does not match its key")
    return signer


def parse_verifier(vkey: str) -> NoteVerifier:
    """A verifier from `<name>+<id>+<base64>`; the key ID must match the key."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise CheckpointError("a verifier key has the form <name>+<key id>+<base64 key>")
    kid, raw = _parse_key_fields(*parts)
    verifier = NoteVerifier(Ed25519PublicKey.from_public_bytes(raw), parts[0])
    if key_id(parts[0], raw) != kid:
        raise CheckpointError("the verifier key's ID does not match its key")
    return verifier


def load_verifier(value: str | Path | NoteVerifier | Ed25519PublicKey) -> NoteVerifier:
    """A verifier from a verifier key string, a PEM key, the raw 32-byte key in base64 or hex, or a file.

    A PEM or raw key carries no name, so it matches signature lines of any name whose key ID fits the key.
    """
    if isinstance(value, NoteVerifier):
        check_key_strength(value.raw, "audit key")
        return value
    if isinstance(value, Ed25519PublicKey):
        check_key_strength(_raw_public(value), "audit key")
        return NoteVerifier(value)
    text = str(value).strip()
    path = Path(text)
    if isinstance(value, Path) or (len(text) < 4096 and "\n" not in text and path.is_file()):
        text = path.read_text(encoding="utf-8").strip()
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointError("the PEM public key is not an Ed25519 key")
        check_key_strength(_raw_public(key), "audit key")
        return NoteVerifier(key)
    if "+" in text and text.count("+") >= 2 and not text.startswith("PRIVATE+KEY+"):
        try:
            return parse_verifier(text)
        except CheckpointError:
            pass
    if text.startswith("PRIVATE+KEY+"):
        raise CheckpointError("that is a private signer key: give the verifier key (<name>+<id>+<base64>)")
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raw = bytes.fromhex(text)
    else:
        raw = _b64decode(text, "public key") if text else b""
    if len(raw) != 32:
        raise CheckpointError(
            "a public key is a verifier key (<name>+<id>+<base64>), a PEM Ed25519 key, or 32 bytes in "
            "base64 or hex"
        )
    check_key_strength(raw, "audit key")
    return NoteVerifier(Ed25519PublicKey.from_public_bytes(raw))


def load_signer(value: str | Path) -> NoteSigner:
    """A signer from a signer key string or a file holding one."""
    text = str(value).strip()
    if isinstance(value, Path) or not text.startswith("PRIVATE+KEY+"):
        text = Path(text).read_text(encoding="utf-8").strip()
    return parse_signer(text)


# --- signed notes


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class SignedNote:
    text: str
    signatures: tuple[NoteSignature, ...]


def parse_note(note: str) -> SignedNote:
    """Split a signed note into its text and signature lines, strictly, without checking signatures."""
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise CheckpointError(f"a signed note is limited to {MAX_NOTE_BYTES} bytes")
    if any(ord(c) < 0x20 and c != "\n" for c in note) or "\x7f" in note:
        raise CheckpointError("a signed note must not contain control characters other than newline")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise CheckpointError(
            "a signed note is text, a blank line, and signature lines, each ending in newline"
        )
    text, block = note[: split + 1], note[split + 2 :]
    signatures = []
    for match in re.finditer(r"[^\n]*\n", block):
        line = match.group(0)
        parsed = _SIGNATURE_LINE.fullmatch(line)
        if parsed is None:
            raise CheckpointError("a signature line is '— <key name> <base64 signature>'")
        name, encoded = parsed.groups()
        _check_name(name)
        raw = _b64decode(encoded, "signature")
        if len(raw) < 5:
            raise CheckpointError("a signature is a 4-byte key ID followed by the signature")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    if not signatures:
        raise CheckpointError("a signed note has at least one signature line")
    if len(signatures) > MAX_SIGNATURES:
        raise CheckpointError(f"a signed note carries at most {MAX_SIGNATURES} signatures")
    return SignedNote(text, tuple(signatures))


def open_note(note: str, verifiers: Iterable[NoteVerifier]) -> tuple[str, list[NoteVerifier]]:
    """Return the note's text and the known keys whose signatures verify; raise if none, or if one fails."""
    parsed = parse_note(note)
    known = list(verifiers)
    if not known:
        raise CheckpointError("no verifier keys were given: nothing can be trusted")
    text = parsed.text.encode()
    good: list[NoteVerifier] = []
    for sig in parsed.signatures:
        for verifier in known:
            if verifier.matches(sig.name, sig.key_id):
                if not verifier.verify(text, sig.signature):
                    raise CheckpointError(f"the signature by key {sig.name!r} does not verify")
                good.append(verifier)
    if not good:
        raise CheckpointError("the note carries no signature from a trusted key")
    return parsed.text, good


def sign_note(text: str, signers: Iterable[NoteSigner]) -> str:
    if not text.endswith("\n"):
        raise CheckpointError("a note text ends in newline")
    lines = [s.signature_line(text) for s in signers]
    if not lines:
        raise CheckpointError("a note needs at least one signer")
    return text + "\n" + "".join(lines)


# --- checkpoints


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    if not origin or "\n" in origin or not origin.isprintable():
        raise CheckpointError("a checkpoint origin is one non-empty printable line")
    if size < 0 or len(root) != 32:
        raise CheckpointError("a checkpoint has a non-negative size and a 32-byte root")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def parse_checkpoint_body(text: str) -> tuple[str, int, bytes]:
    """(origin, size, root) from a checkpoint body; no extension lines are accepted."""
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise CheckpointError("a checkpoint body is exactly three lines: origin, size, base64 root")
    origin, size_text, root_text = lines[:3]
    if not origin or not origin.isprintable():
        raise CheckpointError("a checkpoint origin is one non-empty printable line")
    if not _DECIMAL.fullmatch(size_text):
        raise CheckpointError("a checkpoint size is a decimal number without leading zeros")
    root = _b64decode(root_text, "checkpoint root")
    if len(root) != 32:
        raise CheckpointError("a checkpoint root is 32 bytes")
    return origin, int(size_text), root


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint and the signed note it came from."""

    origin: str
    size: int
    root: bytes
    note: str

    @property
    def body(self) -> str:
        return checkpoint_body(self.origin, self.size, self.root)

    @classmethod
    def parse_unverified(cls, note: str) -> Checkpoint:
        """Parse without checking any signature (for tools that check them later, or only compare roots)."""
        origin, size, root = parse_checkpoint_body(parse_note(note).text)
        return cls(origin, size, root, note)

    @classmethod
    def sign(cls, origin: str, size: int, root: bytes, signer: NoteSigner) -> Checkpoint:
        return cls(origin, size, root, sign_note(checkpoint_body(origin, size, root), [signer]))


def open_checkpoint(note: str, verifiers: Iterable[NoteVerifier], *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint against trusted keys (and an expected origin); raise `CheckpointError`."""
    text, _ = open_note(note, verifiers)
    found_origin, size, root = parse_checkpoint_body(text)
    if origin is not None and found_origin != origin:
        raise CheckpointError(f"the checkpoint is for origin {found_origin!r}, not {origin!r}")
    return Checkpoint(found_origin, size, root, note)


# --- the checkpointer


@dataclass(frozen=True)
class CheckpointPolicy:
    """Sign a checkpoint once `every_entries` entries are unsigned, or `every_seconds` after the last one."""

    every_entries: int = 1000
    every_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.every_entries < 1 or self.every_seconds <= 0:
            raise ValueError("a checkpoint policy needs every_entries >= 1 and every_seconds > 0")


class Checkpointer:
    """Signs and stores checkpoints of one log with the current audit key: by policy, and on demand.

    `maybe_checkpoint()` applies the policy; `start()` runs it in a daemon thread that wakes when enough
    entries have been appended (through `AuditLog.subscribe`) or when the period has passed.
    """

    def __init__(
        self,
        log: AuditLog,
        signer: NoteSigner,
        *,
        origin: str | None = None,
        policy: CheckpointPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self._signer = signer
        self.origin = origin or signer.name
        # Reject an unusable origin now rather than at the first checkpoint.
        checkpoint_body(self.origin, 0, bytes(32))
        self.policy = policy or CheckpointPolicy()
        self._clock = clock
        self._lock = threading.RLock()
        latest = log.latest_checkpoint()
        self._last_size = latest.size if latest else 0
        self._last_time = clock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        log.subscribe(self._on_append)

    @property
    def signer(self) -> NoteSigner:
        return self._signer

    @property
    def verifier(self) -> NoteVerifier:
        return self._signer.verifier

    def checkpoint(self) -> Checkpoint:
        """Sign and store a checkpoint of the current head now."""
        with self._lock:
            size, root = self.log.head()
            cp = Checkpoint.sign(self.origin, size, root, self._signer)
            self.log.add_checkpoint(size=size, key_id=self._signer.key_id.hex(), root=root, note=cp.note)
            self._last_size, self._last_time = size, self._clock()
            _logger().info("audit.checkpoint", size=size, key_id=self._signer.key_id.hex())
            return cp

    def due(self, size: int | None = None) -> bool:
        size = self.log.head().size if size is None else size
        unsigned = size - self._last_size
        if unsigned >= self.policy.every_entries:
            return True
        return unsigned > 0 and self._clock() - self._last_time >= self.policy.every_seconds

    def maybe_checkpoint(self) -> Checkpoint | None:
        with self._lock:
            return self.checkpoint() if self.due() else None

    def _on_append(self, size: int) -> None:
        if size - self._last_size >= self.policy.every_entries:
            self._wake.set()

    def start(self) -> None:
        """Apply the policy in a background thread until `stop()`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=min(self.policy.every_seconds, 1.0))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.maybe_checkpoint()
            except AuditUnavailable as exc:
                # The next append fails closed anyway; keep trying so checkpoints resume with the store.
                _logger().error("audit.checkpoint_failed", error=str(exc))

    def rotate(self, new_signer: NoteSigner, *, actor: str, reason: str | None = None) -> AppendedEntry:
        """See `rotate_key`. Holding the lock throughout keeps every checkpoint of a size from the rotation
        entry on signed by the new key, and every earlier one by the old key."""
        with self._lock:
            old = self._signer
            if old.verifier.same_key(new_signer.verifier):
                raise CheckpointError("the new audit key is the current one")
            self.checkpoint()
            statement = rotation_statement(self.origin, old.vkey, new_signer.vkey)
            event: dict[str, Any] = {
                "action": ACTION_KEY_ROTATED,
                "actor": actor,
                "outcome": "ok",
                "origin": self.origin,
                "old_key": old.vkey,
                "new_key": new_signer.vkey,
                "old_signature": base64.b64encode(old.private_key.sign(statement)).decode(),
                "new_signature": base64.b64encode(new_signer.private_key.sign(statement)).decode(),
            }
            if reason is not None:
                event["reason"] = reason
            appended = self.log._append_reserved(event)
            self._signer = new_signer
            self.checkpoint()
            _logger().info("audit.key_rotated", seq=appended.seq, new_key_id=new_signer.key_id.hex())
            return appended


# --- key rotation


def rotation_statement(origin: str, old_vkey: str, new_vkey: str) -> bytes:
    """What both keys sign when the audit key is rotated."""
    return f"{_ROTATION_PURPOSE}\n{origin}\n{old_vkey}\n{new_vkey}\n".encode()


def rotate_key(
    checkpointer: Checkpointer, new_signer: NoteSigner, *, actor: str, reason: str | None = None
) -> AppendedEntry:
    """Rotate the audit key: seal the old era, log the rotation (signed by both keys), sign with the new key.

    The entry names the old and new verifier keys; `old_signature` proves the old key's holder handed over,
    `new_signature` that the new key's holder exists (so nobody can rotate to a key they do not hold).
    """
    return checkpointer.rotate(new_signer, actor=actor, reason=reason)


@dataclass(frozen=True)
class Rotation:
    origin: str
    old: NoteVerifier
    new: NoteVerifier


def verify_rotation(event: dict[str, Any]) -> Rotation:
    """Check a rotation event's two signatures; return the keys it names, or raise `CheckpointError`."""
    try:
        origin, old_vkey, new_vkey = event["origin"], event["old_key"], event["new_key"]
        old_sig, new_sig = event["old_signature"], event["new_signature"]
    except (KeyError, TypeError):
        raise CheckpointError("a key rotation entry lacks origin, keys or signatures") from None
    if not all(isinstance(v, str) for v in (origin, old_vkey, new_vkey, old_sig, new_sig)):
        raise CheckpointError("a key rotation entry's fields are strings")
    old, new = parse_verifier(old_vkey), parse_verifier(new_vkey)
    statement = rotation_statement(origin, old_vkey, new_vkey)
    if not old.verify(statement, _b64decode(old_sig, "old key's rotation signature")):
        raise CheckpointError("the old key's signature on the rotation does not verify")
    if not new.verify(statement, _b64decode(new_sig, "new key's rotation signature")):
        raise CheckpointError("the new key's signature on the rotation does not verify")
    return Rotation(origin, old, new)
