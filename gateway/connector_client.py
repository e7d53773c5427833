"""The gateway's client for one department connector: signed requests, verified answers.

Every call signs the request with the gateway key and checks that the answer is signed by the pinned
connector key and bound to exactly that request, before a byte of it is used.
"""

from __future__ import annotations

import io
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from connectors.protocol import (
    H_COSIGNATURE,
    H_SIGNATURE,
    PROTOCOL_VERSION,
    ConnectorSchema,
    ErrorCode,
    ExtractRequest,
    SignatureError,
    parse_public_key,
    request_digest,
    request_message,
    sha256_hex,
    sign_request,
    verify_response,
)
from connectors.protocol import (
    fingerprint as key_fingerprint,
)

_ERROR_CODES = frozenset(c.value for c in ErrorCode)


class ConnectorCallError(Exception):
    """A connector refused, failed or answered with something that does not verify."""

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
        # The digest of the signed request, so the refusal can be matched against the connector's log.
        self.receipt = receipt or {}
        # Public numbers a refusal may carry (the audit size a connector last witnessed).
        self.extra: dict[str, int] = {}
        super().__init__(f"connector {connector}: {status or '-'} {code}: {message}")


class ConnectorClient:
    """Talks to one connector; the HTTP transport can be injected (httpx.MockTransport in tests)."""

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
        self.base_url = base_url.rstrip("/")
        self.connector = connector
        self._key = gateway_key
        self._connector_key = connector_key
        # `verify` carries the mutual-TLS context (the federation CA and the gateway's client certificate).
        self._http = httpx.Client(timeout=timeout, transport=transport, verify=verify)
        # Digests and signature of the last verified answer, for the audit log.
        self.last_receipt: dict[str, str] = {}
        self.before_send: Callable[[str, str], None] | None = None
        """Called with (path, request digest) after signing and before sending."""

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConnectorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: str, path: str, *, query_id: str = "-", body: bytes = b"", verify: bool = True
    ) -> httpx.Response:
        url = self.base_url + path
        signed = sign_request(
            self._key, method=method, url=url, connector=self.connector, query_id=query_id, body=body
        )
        message = request_message(
            method=method,
            url=url,
            connector=self.connector,
            protocol=PROTOCOL_VERSION,
            query_id=query_id,
            body=body,
            timestamp=signed.timestamp,
            nonce=signed.nonce,
        )
        headers = signed.as_headers()
        if body:
            headers["content-type"] = "application/json"
        digest = request_digest(message)
        receipt = {"request_digest": digest}
        if self.before_send is not None:
            # The caller records what it is about to send first; if it cannot, nothing is sent.
            self.before_send(path, digest)
        try:
            response = self._http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ConnectorCallError(
                self.connector, None, "unreachable", type(exc).__name__, receipt
            ) from None
        if response.status_code != 200:
            try:
                err = response.json()
                code, text = str(err.get("error", "error")), str(err.get("message", ""))
            except (ValueError, AttributeError):
                err, code, text = {}, "error", "the connector answered without a JSON error body"
            # Only the protocol's own codes travel on (into audit entries and refusals): a target's
            # arbitrary text never does.
            if code not in _ERROR_CODES:
                code, text = "error", "the connector answered with an unknown error code"
            failure = ConnectorCallError(self.connector, response.status_code, code, text, receipt)
            size = err.get("witnessed_size") if isinstance(err, dict) else None
            if isinstance(size, int):
                failure.extra["witnessed_size"] = size
            raise failure
        response.request.extensions["fedgate_digest"] = digest
        if not verify:
            return response
        try:
            verify_response(
                self._connector_key,
                dict(response.headers),
                request_digest=digest,
                connector=self.connector,
                body=response.content,
            )
        except SignatureError as exc:
            raise ConnectorCallError(
                self.connector, response.status_code, "bad_signature", str(exc)
            ) from None
        self.last_receipt = {
            "request_digest": digest,
            "response_digest": sha256_hex(response.content),
            "connector_signature": response.headers.get(H_SIGNATURE, ""),
        }
        cosignature = response.headers.get(H_COSIGNATURE)
        if cosignature:
            # Checked against the connector's key by the caller before it is logged.
            self.last_receipt["cosignature"] = cosignature
        return response

    def health(self) -> bool:
        return self.health_info() is not None

    def health_info(self) -> dict[str, Any] | None:
        """The connector's health answer (public: status and the audit size it last witnessed), or None."""
        try:
            response = self._http.get(self.base_url + "/v1/health")
            if response.status_code != 200:
                return None
            info = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def schema(self) -> ConnectorSchema:
        return ConnectorSchema.model_validate_json(self._call("GET", "/v1/schema").content)

    @classmethod
    def fetch_pinned_schema(
        cls,
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
        probe = cls(
            base_url,
            connector=connector,
            gateway_key=gateway_key,
            connector_key=gateway_key.public_key(),
            timeout=timeout,
            transport=transport,
            verify=verify,
        )
        try:
            response = probe._call("GET", "/v1/schema", verify=False)
            try:
                schema = ConnectorSchema.model_validate_json(response.content)
                key = parse_public_key(schema.signing_key)
            except (ValueError, SignatureError):
                raise ConnectorCallError(
                    connector, 200, "bad_schema", "the schema is not a fedgate/1 schema"
                ) from None
            if key_fingerprint(key) != fingerprint:
                raise ConnectorCallError(
                    connector,
                    200,
                    "bad_signature",
                    "the connector's key does not have the pinned fingerprint",
                )
            if schema.connector != connector:
                raise ConnectorCallError(connector, 200, "bad_schema", "the schema names another connector")
            try:
                verify_response(
                    key,
                    dict(response.headers),
                    request_digest=response.request.extensions["fedgate_digest"],
                    connector=connector,
                    body=response.content,
                )
            except SignatureError as exc:
                raise ConnectorCallError(connector, 200, "bad_signature", str(exc)) from None
            return schema
        finally:
            probe.close()

    def extract(self, request: ExtractRequest) -> pa.Table:
        response = self._call("POST", "/v1/extract", query_id=request.query_id, body=request.body())
        with pa.ipc.open_stream(io.BytesIO(response.content)) as reader:
            return reader.read_all()
