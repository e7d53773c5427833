"""The canonical bytes both sides hash and sign: RFC 8785 JSON and SHA-256 hex.

A leaf beside the vocabulary: the wire protocol and the canonical query model (`connectors.query`) both
take these from here, so neither has to import the other for them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

__all__ = ["canonical_json", "sha256_hex"]


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON: the bytes that are hashed and signed."""
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
