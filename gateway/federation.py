"""The gateway's one way to talk to department connectors: one long-lived client per connector.

    Federation(gateway_key, ...)          the links of one gateway process, one per registered connector
      .link(name, endpoint, signing_key)  its pooled `httpx.Client` (the mutual-TLS handshake is made once
                                          and the connection reused), created on first use
    ConnectorLink                         health, schema, extract over that client
      SignedExchange (httpx.Auth)         signs each request with the gateway key (full URL, connector,
                                          protocol, query id, body digest, timestamp, nonce), tells the
                                          caller the request digest before it is sent, and verifies the
                                          answer against the pinned connector key, bound to that request
    fetch_pinned_schema(...)              registration: a schema accepted only under a pinned fingerprint
    extract_request(part, query, cover)   the wire request for one planned extract, with the department's
                                          approval or rule

Errors, one class per way a call can fail (`code` is what the audit entry records):

    ConnectorCallError(connector, status, code, message, receipt)
     ├── ConnectorUnreachable   disabled, or not answering (connect, timeout, TLS): code "disabled" /
     │                          "unreachable"
     ├── ConnectorRefused       the connector answered with an error: its status and wire code
     │                          (`connectors.protocol.ErrorCode`), public extras such as witnessed_size
     └── AnswerUnverified       the answer is not signed by the pinned key, not bound to the request, or
                                not a fedgate/2 schema: code "bad_signature" / "bad_schema"

The transport is injectable (`httpx.MockTransport` in tests), like everything else in `httpx`.
"""

from __future__ import annotations

import io
import ssl
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aggregation.planner import ExtractPlan
from aggregation.query import QuerySpec
from connectors.protocol import (
    H_COSIGNATURE,
    H_SIGNATURE,
    PROTOCOL_VERSION,
    ConnectorSchema,
    ErrorCode,
    ExtractRequest,
    PreflightAnswer,
    PreflightRequest,
    SignatureError,
    SignedApproval,
    SignedRule,
    TokenSpec,
    parse_public_key,
    request_digest,
    request_message,
    sha256_hex,
    sign_request,
    verify_response,
)
from connectors.protocol import fingerprint as key_fingerprint
from gateway.analyst_keys import QuerySignature

__all__ = [
    "AnswerUnverified",
    "ConnectorCallError",
    "ConnectorLink",
    "ConnectorRefused",
    "ConnectorUnreachable",
    "Federation",
    "SignedExchange",
    "extract_request",
    "fetch_pinned_schema",
]

BeforeSend = Callable[[str, str], None]
"""Called with (path, request digest) after signing and before sending; raising stops the send."""

_ERROR_CODES = frozenset(c.value for c in ErrorCode)

# Per-request settings travel in the request's extensions, so one client (and its pool) serves all.
_QUERY_ID = "fedgate.query_id"
_BEFORE_SEND = "fedgate.before_send"
_VERIFY_WITH = "fedgate.verify_with"
_DIGEST = "fedgate.request_digest"


class ConnectorCallError(Exception):
    """A call to a connector did not give a verified answer."""

    def __init__(
        self,
        connector: str,
        status: int | None,
        code: str,
        message: str,
        receipt: dict[str, str] | None = None,
    ) -> None:
        self.connector = connector
        self.status = status
        self.code = code
        self.message = message
        # The digest of the signed request, so the failure can be matched against the connector's log.
        self.receipt = receipt or {}
        # Public numbers a refusal may carry (the audit size a connector last witnessed).
        self.extra: dict[str, int] = {}
        super().__init__(f"connector {connector}: {status or '-'} {code}: {message}")


class ConnectorUnreachable(ConnectorCallError):
    """The connector is disabled or did not answer; nothing came back."""


class ConnectorRefused(ConnectorCallError):
    """The connector answered with an error status and one of its wire codes."""

    @property
    def wire_code(self) -> ErrorCode | None:
        """The code as the protocol's enum; None for a body that is not a fedgate/2 error."""
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


class AnswerUnverified(ConnectorCallError):
    """An answer came back but cannot be trusted: wrong key, another request's, or malformed."""


@dataclass(frozen=True)
class Receipt:
    """What the audit log records of one verified answer."""

    request_digest: str
    response_digest: str
    connector_signature: str
    cosignature: str | None = None
    """the connector's cosignature of the checkpoint it witnessed; the caller checks it before logging it"""

    def as_dict(self) -> dict[str, str]:
        receipt = {
            "request_digest": self.request_digest,
            "response_digest": self.response_digest,
            "connector_signature": self.connector_signature,
        }
        if self.cosignature:
            receipt["cosignature"] = self.cosignature
        return receipt


class SignedExchange(httpx.Auth):
    """Signs every request of one connector's client and verifies every successful answer.

    A request's extensions say what else to do: the query id it is for, a `before_send` hook (the audit
    entry written before anything leaves), and which key verifies the answer (the pinned one by
    default; None when the key is only known from the answer itself, at registration).
    """

    requires_response_body = True

    def __init__(self, connector: str, gateway_key: Ed25519PrivateKey, connector_key: Ed25519PublicKey):
        self.connector = connector
        self._key = gateway_key
        self._connector_key = connector_key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        query_id = str(request.extensions.get(_QUERY_ID, "-"))
        body = request.content
        url = str(request.url)
        signed = sign_request(
            self._key, method=request.method, url=url, connector=self.connector, query_id=query_id, body=body
        )
        digest = request_digest(
            request_message(
                method=request.method,
                url=url,
                connector=self.connector,
                protocol=PROTOCOL_VERSION,
                query_id=query_id,
                body=body,
                timestamp=signed.timestamp,
                nonce=signed.nonce,
            )
        )
        request.headers.update(signed.as_headers())
        request.extensions[_DIGEST] = digest
        before_send: BeforeSend | None = request.extensions.get(_BEFORE_SEND)
        if before_send is not None:
            # The caller records what it is about to send first; if it cannot, nothing is sent.
            before_send(request.url.path, digest)
        response = yield request
        if response.status_code != 200:
            return
        key = request.extensions.get(_VERIFY_WITH, self._connector_key)
        if key is not None:
            self.verify(response, key, digest)

    def verify(self, response: httpx.Response, key: Ed25519PublicKey, digest: str) -> None:
        try:
            verify_response(
                key,
                dict(response.headers),
                request_digest=digest,
                connector=self.connector,
                body=response.content,
            )
        except SignatureError as exc:
            raise AnswerUnverified(
                self.connector, response.status_code, "bad_signature", str(exc), {"request_digest": digest}
            ) from None


class ConnectorLink:
    """One connector, one pooled client: every call is signed and every answer verified."""

    def __init__(
        self,
        base_url: str,
        *,
        connector: str,
        gateway_key: Ed25519PrivateKey,
        connector_key: Ed25519PublicKey,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.connector = connector
        self.base_url = base_url.rstrip("/")
        self._auth = SignedExchange(connector, gateway_key, connector_key)
        # `verify` carries the mutual-TLS context (the federation CA and the gateway's client certificate).
        self._http = httpx.Client(
            base_url=self.base_url, auth=self._auth, timeout=timeout, transport=transport, verify=verify
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConnectorLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        query_id: str = "-",
        body: bytes = b"",
        before_send: BeforeSend | None = None,
        pinned: bool = True,
        timeout: float | None = None,
    ) -> tuple[httpx.Response, str]:
        """Send one signed request; `pinned=False` leaves verifying the answer to the caller."""
        extensions: dict[str, Any] = {_QUERY_ID: query_id}
        if before_send is not None:
            extensions[_BEFORE_SEND] = before_send
        if not pinned:
            extensions[_VERIFY_WITH] = None
        headers = {"content-type": "application/json"} if body else {}
        request = self._http.build_request(
            method,
            path,
            content=body,
            headers=headers,
            extensions=extensions,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
        )
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            receipt = {"request_digest": request.extensions[_DIGEST]} if _DIGEST in request.extensions else {}
            raise ConnectorUnreachable(
                self.connector, None, "unreachable", type(exc).__name__, receipt
            ) from None
        digest = str(response.request.extensions.get(_DIGEST, ""))
        if response.status_code != 200:
            raise _refusal(self.connector, response, digest)
        return response, digest

    def health(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The connector's health answer (public: status and the audit size it last witnessed), or None."""
        try:
            response = self._http.get("/v1/health", auth=None, timeout=timeout or httpx.USE_CLIENT_DEFAULT)
            if response.status_code != 200:
                return None
            info = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def schema(self) -> ConnectorSchema:
        response, _ = self._call("GET", "/v1/schema")
        try:
            return ConnectorSchema.model_validate_json(response.content)
        except ValueError:
            raise AnswerUnverified(
                self.connector, 200, "bad_schema", "the schema is not a fedgate/2 schema"
            ) from None

    def preflight(self, request: PreflightRequest) -> tuple[PreflightAnswer, dict[str, str]]:
        """Ask whether the connector could serve this extract now; it serves and counts nothing.

        Returns the answer and the receipt of this verified response (safe from several threads)."""
        response, digest = self._call("POST", "/v1/preflight", query_id=request.query_id, body=request.body())
        receipt = Receipt(
            request_digest=digest,
            response_digest=sha256_hex(response.content),
            connector_signature=response.headers.get(H_SIGNATURE, ""),
        ).as_dict()
        try:
            answer = PreflightAnswer.model_validate_json(response.content)
        except ValueError:
            raise AnswerUnverified(
                self.connector, 200, "bad_schema", "the preflight answer is not fedgate/2", receipt
            ) from None
        if (answer.connector, answer.query_id) != (self.connector, request.query_id):
            raise AnswerUnverified(
                self.connector, 200, "bad_schema", "the preflight answer is for another query", receipt
            )
        return answer, receipt

    def extract(
        self, request: ExtractRequest, *, before_send: BeforeSend | None = None
    ) -> tuple[pa.Table, Receipt]:
        """One extract as an Arrow table, with the receipt of its verified answer."""
        response, digest = self._call(
            "POST", "/v1/extract", query_id=request.query_id, body=request.body(), before_send=before_send
        )
        receipt = Receipt(
            request_digest=digest,
            response_digest=sha256_hex(response.content),
            connector_signature=response.headers.get(H_SIGNATURE, ""),
            cosignature=response.headers.get(H_COSIGNATURE) or None,
        )
        try:
            with pa.ipc.open_stream(io.BytesIO(response.content)) as reader:
                return reader.read_all(), receipt
        except (pa.ArrowInvalid, OSError):
            raise AnswerUnverified(
                self.connector,
                200,
                "bad_extract",
                "the extract is not an Arrow IPC stream",
                receipt.as_dict(),
            ) from None


def _refusal(connector: str, response: httpx.Response, digest: str) -> ConnectorRefused:
    receipt = {"request_digest": digest} if digest else {}
    try:
        err = response.json()
        code, text = str(err.get("error", "error")), str(err.get("message", ""))
    except (ValueError, AttributeError):
        err, code, text = {}, "error", "the connector answered without a JSON error body"
    # Only the protocol's own codes travel on (into audit entries and refusals): a target's arbitrary
    # text never does.
    if code not in _ERROR_CODES:
        code, text = "error", "the connector answered with an unknown error code"
    failure = ConnectorRefused(connector, response.status_code, code, text, receipt)
    size = err.get("witnessed_size") if isinstance(err, dict) else None
    if isinstance(size, int) and not isinstance(size, bool):
        failure.extra["witnessed_size"] = size
    return failure


def fetch_pinned_schema(
    base_url: str,
    *,
    connector: str,
    gateway_key: Ed25519PrivateKey,
    fingerprint: str,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
    verify: ssl.SSLContext | bool = True,
) -> ConnectorSchema:
    """Fetch a schema knowing only the connector key's fingerprint (confirmed out of band).

    The schema names the connector's public key; it is accepted only if that key has the pinned
    fingerprint and the answer verifies under it.
    """
    with ConnectorLink(
        base_url,
        connector=connector,
        gateway_key=gateway_key,
        connector_key=gateway_key.public_key(),  # unused: this answer is verified by the key it names
        timeout=timeout,
        transport=transport,
        verify=verify,
    ) as probe:
        response, digest = probe._call("GET", "/v1/schema", pinned=False)
        try:
            schema = ConnectorSchema.model_validate_json(response.content)
            key = parse_public_key(schema.signing_key)
        except (ValueError, SignatureError):
            raise AnswerUnverified(
                connector, 200, "bad_schema", "the schema is not a fedgate/2 schema"
            ) from None
        if key_fingerprint(key) != fingerprint:
            raise AnswerUnverified(
                connector,
                200,
                "bad_signature",
                f"the connector presents key fingerprint {key_fingerprint(key)}, not the pinned "
                f"{fingerprint}: confirm the right one with the department out of band",
            )
        if schema.connector != connector:
            raise AnswerUnverified(connector, 200, "bad_schema", "the schema names another connector")
        probe._auth.verify(response, key, digest)
        return schema


def extract_request(
    part: ExtractPlan,
    query: QuerySpec,
    cover: SignedApproval | SignedRule,
    *,
    epoch: int,
    signed_by: QuerySignature | None = None,
) -> ExtractRequest:
    """The extract request for one planned part of `query`, carrying the department's approval or rule
    and the analyst's own signature of the query (which the connector verifies)."""
    return ExtractRequest(
        **part.asks(query),
        token=TokenSpec(epoch=epoch),
        analyst_key=None if signed_by is None else signed_by.public_key,
        analyst_signature=None if signed_by is None else signed_by.signature,
        approval=cover if isinstance(cover, SignedApproval) else None,
        rule=cover if isinstance(cover, SignedRule) else None,
    )


@dataclass
class Federation:
    """The connector links of one gateway process, keyed by what they trust.

    A link is made on first use and kept: its connections (and TLS sessions) are reused by every later
    call. Re-registering a connector under another endpoint or key makes a new link; the old one is
    closed with the federation, since a run may still be using it.
    """

    gateway_key: Ed25519PrivateKey
    timeout: float = 60.0
    transport: httpx.BaseTransport | None = None
    verify: ssl.SSLContext | bool = True
    _links: dict[str, tuple[tuple[str, str], ConnectorLink]] = field(default_factory=dict)
    _replaced: list[ConnectorLink] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def link(self, name: str, endpoint: str, signing_key: str) -> ConnectorLink:
        identity = (endpoint, signing_key)
        with self._lock:
            known = self._links.get(name)
            if known is not None and known[0] == identity:
                return known[1]
            link = ConnectorLink(
                endpoint,
                connector=name,
                gateway_key=self.gateway_key,
                connector_key=parse_public_key(signing_key),
                timeout=self.timeout,
                transport=self.transport,
                verify=self.verify,
            )
            self._links[name] = (identity, link)
            if known is not None:
                self._replaced.append(known[1])
        return link

    def close(self) -> None:
        with self._lock:
            links = [link for _, link in self._links.values()] + self._replaced
            self._links.clear()
            self._replaced.clear()
        for link in links:
            link.close()
