"""Cosignatures: a connector's signed statement that it witnessed one checkpoint of the gateway's log.

The format is C2SP tlog-cosignature/v1 over Ed25519. The witness signs

    cosignature/v1\\ntime <seconds since the epoch>\\n<checkpoint body>

and the cosignature is one more signed-note signature line on the checkpoint,

    — <witness name> base64(key ID (4) || timestamp (8, big-endian) || Ed25519 signature (64))

with key ID = SHA-256(name || "\\n" || 0x04 || public key)[:4] (0x04 names a timestamped Ed25519
cosignature, so a cosignature can never be mistaken for the gateway's own checkpoint signature). A
connector cosigns with its connector key under its connector name: what it cosigned is the history it
was shown, so an auditor holding cosignatures from every department sees a split view or a rewrite that
no single party could, whoever holds the gateway's audit key.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.checkpoint import EM_DASH, Checkpoint, check_key_strength, parse_note
from audit.errors import CheckpointError

__all__ = [
    "ALG_COSIGNATURE_V1",
    "Cosignature",
    "CosignatureVerifier",
    "Cosigner",
    "cosigned_note",
    "open_cosignature",
]

ALG_COSIGNATURE_V1 = 0x04
_LABEL = b"cosignature/v1\n"


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def cosigner_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + _raw(public_key)).digest()[:4]


def _message(body: str, timestamp: int) -> bytes:
    return _LABEL + f"time {timestamp}\n".encode() + body.encode()


@dataclass(frozen=True)
class Cosignature:
    """One verified cosignature: who witnessed which checkpoint, and when (by the witness's clock)."""

    witness: str
    timestamp: int
    checkpoint: Checkpoint
    line: str


@dataclass(frozen=True)
class Cosigner:
    """A witness key: the connector's Ed25519 key under the connector's name."""

    name: str
    private_key: Ed25519PrivateKey

    def cosign(self, checkpoint: Checkpoint, timestamp: int) -> str:
        """The cosignature line for `checkpoint` at `timestamp`."""
        signature = self.private_key.sign(_message(checkpoint.body, timestamp))
        kid = cosigner_key_id(self.name, self.private_key.public_key())
        blob = kid + struct.pack(">Q", timestamp) + signature
        return f"{EM_DASH} {self.name} {base64.b64encode(blob).decode()}\n"

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.private_key.public_key())


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's public key, as an auditor pins it (given by the department, out of band)."""

    name: str
    public_key: Ed25519PublicKey

    def __post_init__(self) -> None:
        check_key_strength(_raw(self.public_key), f"witness key {self.name!r}")

    @property
    def vkey(self) -> str:
        """`<name>+<key ID hex>+<base64(0x04 || public key)>`, the C2SP verifier key string."""
        encoded = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + _raw(self.public_key)).decode()
        return f"{self.name}+{cosigner_key_id(self.name, self.public_key).hex()}+{encoded}"

    @classmethod
    def parse(cls, vkey: str) -> CosignatureVerifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise CheckpointError("a witness key has the form <name>+<key id>+<base64 key>")
        name, kid_hex, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise CheckpointError("the witness key is not valid base64") from None
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
            raise CheckpointError("a witness key is a cosignature/v1 key (algorithm 0x04, 32 bytes)")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if cosigner_key_id(name, verifier.public_key).hex() != kid_hex:
            raise CheckpointError("the witness key's ID does not match its key")
        return verifier


def open_cosignature(checkpoint: Checkpoint, line: str, verifier: CosignatureVerifier) -> Cosignature:
    """Check one cosignature line on `checkpoint` under a pinned witness key; raise `CheckpointError`."""
    parsed = parse_note(checkpoint.body + "\n" + line)
    sig = parsed.signatures[0]
    if len(parsed.signatures) != 1 or sig.name != verifier.name:
        raise CheckpointError(f"the cosignature is not one line by witness {verifier.name!r}")
    if sig.key_id != cosigner_key_id(verifier.name, verifier.public_key) or len(sig.signature) != 72:
        raise CheckpointError(f"the cosignature is not by the pinned key of witness {verifier.name!r}")
    (timestamp,) = struct.unpack(">Q", sig.signature[:8])
    try:
        verifier.public_key.verify(sig.signature[8:], _message(checkpoint.body, timestamp))
    except InvalidSignature:
        raise CheckpointError(f"the cosignature by witness {verifier.name!r} does not verify") from None
    return Cosignature(verifier.name, timestamp, checkpoint, line)


def cosigned_note(checkpoint: Checkpoint, line: str) -> str:
    """The checkpoint's signed note with the cosignature appended (what a witness hands an auditor)."""
    return checkpoint.note + line
