"""Demo keys for the synthetic county: never for production.

Fresh keys are drawn on every run (they are not derived from the seed, so knowing a seed gives away no
key). A marker file, DEMO-KEYS-DO-NOT-USE-IN-PRODUCTION, sits beside them so production mode can refuse
them. Private files are readable by their owner only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["DEMO_MARKER", "FEDERATION_ID", "DemoKeys", "public_key_text", "write_demo_keys"]

DEMO_MARKER = "DEMO-KEYS-DO-NOT-USE-IN-PRODUCTION"
FEDERATION_ID = "demo-county"


@dataclass(frozen=True)
class DemoKeys:
    """Where the demo keys are and the public halves the configurations pin."""

    directory: Path
    gateway_public: str
    audit_public: str
    """the gateway's audit note verifier key, pinned by connectors that witness its log"""
    connector_public: dict[str, str]
    approval_public: dict[str, str]
    admin_sha256: dict[str, str]
    keyring: Path


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The configuration form of a public key: 'ed25519:' + base64 of its 32 raw bytes."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode("ascii")


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 before anything is written, and tightened if the file already existed.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)


def _signing_key(path: Path) -> str:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(path, pem)
    return public_key_text(key)


def write_demo_keys(directory: Path, connectors: list[str], departments: list[str]) -> DemoKeys:
    """Gateway, connector and department approval keys, admin API keys and the federation keyring."""
    # Imported here, not at module level: the gateway's demo command imports this package, and the
    # gateway must never load the keyring module when it is imported (tests/test_tokens.py scans for it).
    from connectors.federation_keys import generate_keyring, write_keyring

    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    _write_private(
        directory / DEMO_MARKER,
        b"These keys were generated for the synthetic demo county. Never use them in production.\n",
    )
    gateway = _signing_key(directory / "gateway.key")
    from audit.checkpoint import NoteSigner

    audit_signer = NoteSigner.generate("fedgate-gateway")
    _write_private(directory / "audit.key", audit_signer.skey().encode("ascii"))
    connector_public = {c: _signing_key(directory / f"{c}-connector.key") for c in connectors}
    approval_public = {d: _signing_key(directory / f"{d}-approval.key") for d in departments}
    admin_sha256: dict[str, str] = {}
    for d in departments:
        token = secrets.token_urlsafe(32)
        _write_private(directory / f"{d}-admin.key", token.encode("ascii"))
        admin_sha256[d] = hashlib.sha256(token.encode("ascii")).hexdigest()
    keyring = directory / "federation-keyring.json"
    write_keyring(generate_keyring(FEDERATION_ID), keyring)
    os.chmod(keyring, 0o600)
    public = {
        "demo": True,
        "gateway": gateway,
        "audit": audit_signer.vkey,
        "connectors": connector_public,
        "approvals": approval_public,
    }
    (directory / "public-keys.json").write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
    return DemoKeys(
        directory=directory,
        gateway_public=gateway,
        audit_public=audit_signer.vkey,
        connector_public=connector_public,
        approval_public=approval_public,
        admin_sha256=admin_sha256,
        keyring=keyring,
    )
