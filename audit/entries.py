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
    "contains_identifier",
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
# PEM and signed-note private keys (as `audit.checkpoint` writes them): unmistakable in any field.
_PRIVATE_KEY_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|^PRIVATE\+KEY\+")
# An HTTP credential is recognised only where credentials live: in a field named like a header. In free
# text ("Basic needs of fishing households") the same words are ordinary prose.
_HTTP_CREDENTIAL = re.compile(r"^\s*(?:bearer|basic|digest) +\S", re.IGNORECASE)
_HEADER_KEY = re.compile(r"header", re.IGNORECASE)
_RESIDENT_ID = re.compile(r"\d{17}[\dXx]|\d{15}")
_CREDIT_CODE = re.compile(r"[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}")
# The same shapes as whole words inside free text (not digits inside a longer hash or number).
_ID_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z])(?:\d{17}[\dXx]|\d{15}|[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10})(?![0-9A-Za-z])"
)


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


def contains_identifier(text: str) -> bool:
    """True if `text` holds a valid resident ID number or credit code as a whole word anywhere in it.

    For free text (a query's purpose, a rejection reason) that is refused before anything is stored:
    checked here, by the rule the audit log itself applies, so what a service accepts the log accepts.
    """
    return any(_looks_like_identifier(m.group(0)) for m in _ID_IN_TEXT.finditer(text))


def _check_value(value: str, path: str, *, in_header: bool) -> None:
    if _PRIVATE_KEY_VALUE.search(value):
        raise UnsafeEntry(
            f"audit events must not hold secrets: field {path!r} looks like a private key", field=path
        )
    if in_header and _HTTP_CREDENTIAL.search(value):
        raise UnsafeEntry(
            f"audit events must not hold credentials: header field {path!r} carries one", field=path
        )
    text = value.strip()
    if len(text) in (15, 18) and _looks_like_identifier(text):
        raise UnsafeEntry(
            f"audit events must not hold raw identity numbers: field {path!r} holds one", field=path
        )


def _walk(value: Any, path: str, in_header: bool = False) -> None:
    if isinstance(value, str):
        _check_value(value, path, in_header=in_header)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsafeEntry(
                    f"audit event keys must be strings: {path!r} has a {type(key).__name__} key", field=path
                )
            child = f"{path}.{key}" if path else key
            problem = _key_problem(key)
            if problem is not None:
                raise UnsafeEntry(problem.format(path=child), field=child)
            _walk(item, child, in_header or bool(_HEADER_KEY.search(key)))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", in_header)


def check_event(event: Mapping[str, Any], *, allow_reserved: bool = False) -> None:
    """Return None if `event` may be logged; raise `UnsafeEntry` naming the first offending field.

    Rejects: keys named like secrets, credentials or tokens (api_key, token, secret, password, authorization,
    private_key, ...); keys named like exact data-dependent counts (rows, matches, invalid_ids, ...); values
    that are private keys, HTTP credentials inside header-named fields ("Bearer ..." in free text is prose),
    or valid resident ID numbers and credit codes; and the actions that only this package may write.
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
