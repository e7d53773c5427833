"""What an audit entry is, byte for byte, and what it must never hold.

The caller hands `AuditLog.append` an *event*: a JSON object such as

    {"action": "http.request", "actor": "analyst:alice", "outcome": "ok", "status": 200, ...}

The log stores and hashes the *entry*, the RFC 8785 canonical JSON of

    {"event": <event>, "seq": <sequence number, from 1>, "time": "<UTC, RFC 3339, microseconds>Z"}

and chains it: with prev_hash the 32 raw bytes of the previous entry's hash (32 zero bytes before seq 1),

    hash = SHA-256(prev_hash || canonical entry bytes)

The Merkle leaf of entry `seq` (index seq - 1) is that 32-byte hash, so its leaf hash is
SHA-256(0x00 || hash). Because "event" < "seq" < "time" in RFC 8785 key order, the entry's canonical bytes
are the event's canonical bytes with a fixed prefix and suffix, which lets callers canonicalise their own
event outside the append lock.

Top-level event fields `actor`, `action`, `query_id`, `connector` and `outcome` (strings) are indexed for
the auditor's filters. Events must never hold raw identity numbers, tokens, API keys, secrets or exact
data-dependent counts: `check_event` rejects the obvious cases loudly, as a safety net under the caller's
own duty, not instead of it.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from typing import Any

import rfc8785

from audit.errors import UnsafeEntry

__all__ = [
    "ACTION_CONNECTOR_CALL",
    "ACTION_CONNECTOR_REQUEST",
    "ACTION_COSIGNED",
    "ACTION_EXTRACT_PLANNED",
    "ACTION_KEY_ROTATED",
    "FILTER_FIELDS",
    "GENESIS_HASH",
    "MAX_EVENT_BYTES",
    "canonical_event",
    "check_event",
    "connector_call_event",
    "entry_bytes",
    "format_time",
    "scrub",
]

GENESIS_HASH = bytes(32)
MAX_EVENT_BYTES = 1 << 20
FILTER_FIELDS = ("actor", "action", "query_id", "connector", "outcome")

# Written only by `audit.checkpoint.rotate_key`; the verifier follows the key history through it.
ACTION_KEY_ROTATED = "audit.key_rotated"
# One call from the gateway to a connector; `audit.reconcile` matches these against the connector's log.
ACTION_CONNECTOR_CALL = "connector.call"
# Logged before a request to a connector is sent, so a gateway that dies mid-call still shows what it sent.
ACTION_CONNECTOR_REQUEST = "connector.request"
# Logged for every planned extract before the checkpoint that the extract carries is signed, naming its
# extract digest: the connector checks an inclusion proof of this entry before it serves.
ACTION_EXTRACT_PLANNED = "connector.extract_planned"
# A connector's cosignature of the checkpoint it witnessed (`audit.cosignature`), as it returned it.
ACTION_COSIGNED = "checkpoint.cosigned"
_RESERVED_ACTIONS = frozenset({ACTION_KEY_ROTATED})

# Key names are compared with case and separators removed, so "API-Key", "apiKey" and "x_api_key" all match.
# A "token" in a federation is a pseudonymous join key (or a credential): never logged, under any spelling.
_SECRET_KEY_PARTS = (
    "token",
    "bearer",
    "apikey",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "authorization",
    "privatekey",
    "signingkey",
    "cookie",
    "credential",
)
# Exact data-dependent counts (rows, matches, invalid IDs, extract sizes) leak through audit entries
# that analysts may later see summarised; they belong in the department's own quality report.
_COUNT_KEYS = frozenset(
    {
        "rows",
        "rowcount",
        "nrows",
        "numrows",
        "matches",
        "matched",
        "matchcount",
        "invalidids",
        "invalidcount",
        "records",
        "recordcount",
        "extractbytes",
        "bytes",
    }
)
# PEM private keys, HTTP credentials, and signed-note private keys (as `audit.checkpoint` writes them).
_SECRET_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|^(?:[Bb]earer|[Bb]asic) +\S|^PRIVATE\+KEY\+")
_RESIDENT_ID = re.compile(r"\d{17}[\dXx]|\d{15}")
_CREDIT_CODE = re.compile(r"[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}")


@functools.lru_cache(maxsize=4096)
def _key_problem(key: str) -> str | None:
    """Why a field name is refused, or None; cached because events reuse a small set of names."""
    compact = re.sub(r"[^a-z0-9]", "", key.lower())
    if any(part in compact for part in _SECRET_KEY_PARTS):
        return "audit events must not hold secrets or tokens: field {path!r} is named like one"
    if compact in _COUNT_KEYS:
        return "audit events must not hold exact data-dependent counts: field {path!r} is named like one"
    return None


def _looks_like_identifier(text: str) -> bool:
    from connectors.errors import InvalidIdentifier
    from connectors.ids import IdKind, normalize

    for kind, pattern in ((IdKind.RESIDENT_ID, _RESIDENT_ID), (IdKind.CREDIT_CODE, _CREDIT_CODE)):
        if pattern.fullmatch(text):
            try:
                normalize(kind, text)
            except InvalidIdentifier:
                continue
            return True
    return False


def _check_value(value: str, path: str) -> None:
    if _SECRET_VALUE.search(value):
        raise UnsafeEntry(
            f"audit events must not hold secrets: field {path!r} looks like a key or credential"
        )
    text = value.strip()
    if len(text) in (15, 18) and _looks_like_identifier(text):
        raise UnsafeEntry(f"audit events must not hold raw identity numbers: field {path!r} holds one")


def _walk(value: Any, path: str) -> None:
    if isinstance(value, str):
        _check_value(value, path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsafeEntry(
                    f"audit event keys must be strings: {path!r} has a {type(key).__name__} key"
                )
            child = f"{path}.{key}" if path else key
            problem = _key_problem(key)
            if problem is not None:
                raise UnsafeEntry(problem.format(path=child))
            _walk(item, child)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]")


def check_event(event: Mapping[str, Any], *, allow_reserved: bool = False) -> None:
    """Return None if `event` may be logged; raise `UnsafeEntry` naming the first offending field.

    Rejects: keys named like secrets, credentials or tokens (api_key, token, secret, password, authorization,
    private_key, ...); keys named like exact data-dependent counts (rows, matches, invalid_ids, ...); values
    that look like private keys, bearer credentials or valid resident ID numbers and credit codes; and the
    actions that only this package may write.
    """
    if not isinstance(event, Mapping):
        raise UnsafeEntry(f"an audit event is a JSON object, not a {type(event).__name__}")
    if not allow_reserved and event.get("action") in _RESERVED_ACTIONS:
        raise UnsafeEntry(f"the action {event['action']!r} is written only by the audit package itself")
    _walk(event, "")


def scrub(event: Mapping[str, Any]) -> dict[str, Any]:
    """Return `event` (as a dict) if it may be logged, so it can be checked inline; else raise `UnsafeEntry`.

    Nothing is removed or masked: a secret in an audit event is a bug to fix where the event is built,
    and silently dropping a field would leave an entry that says less than its author thinks.
    """
    check_event(event)
    return dict(event)


def canonical_event(event: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of `event`, or `UnsafeEntry` if it has no canonical form or is too large."""
    try:
        data = rfc8785.dumps(event)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise UnsafeEntry(f"the audit event has no RFC 8785 form: {type(exc).__name__}") from None
    if len(data) > MAX_EVENT_BYTES:
        raise UnsafeEntry(f"the audit event is {len(data)} bytes; the limit is {MAX_EVENT_BYTES}")
    return data


def format_time(micros: int) -> str:
    """UTC time with microseconds, e.g. 2025-01-02T03:04:05.000006Z."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_bytes(event_bytes: bytes, seq: int, time: str) -> bytes:
    """The canonical entry: exactly `rfc8785.dumps({"event": event, "seq": seq, "time": time})`."""
    return b'{"event":' + event_bytes + b',"seq":' + str(seq).encode() + b',"time":"' + time.encode() + b'"}'


def connector_call_event(
    *,
    connector: str,
    path: str,
    request_digest: str,
    response_digest: str | None,
    connector_signature: str | None,
    checkpoint: str | None,
    outcome: str,
    query_id: str | None = None,
    dataset: str | None = None,
    actor: str = "gateway",
    status: int | None = None,
) -> dict[str, Any]:
    """The event the gateway logs for each connector call, in the shape `audit.reconcile` expects.

    `request_digest` is the digest bound into the signed request (the connector logs the same value),
    `response_digest` the SHA-256 hex of the answer body, `connector_signature` the answer's signature
    header, and `checkpoint` the signed checkpoint note the request carried.
    """
    event: dict[str, Any] = {
        "action": ACTION_CONNECTOR_CALL,
        "actor": actor,
        "connector": connector,
        "path": path,
        "request_digest": request_digest,
        "response_digest": response_digest,
        "connector_signature": connector_signature,
        "checkpoint": checkpoint,
        "outcome": outcome,
    }
    if query_id is not None:
        event["query_id"] = query_id
    if dataset is not None:
        event["dataset"] = dataset
    if status is not None:
        event["status"] = status
    return event
