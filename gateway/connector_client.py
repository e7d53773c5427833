"""The gateway's client for one department connector: signed requests, verified answers.

Every call signs the request with the gateway key and checks that the answer is signed by the pinned
connector key and bound to exactly that request, before a byte of it is used.
"""

from __future__ import annotations

import io

import httpx
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from connectors.protocol import (
    PROTOCOL_VERSION,
    ConnectorSchema,
    ExtractRequest,
    SignatureError,
    request_digest,
    request_message,
    sign_request,
    verify_response,
)


class ConnectorCallError(Exception):
    """A connector refused, failed or answered with something that does not verify."""

    def __init__(self, connector: str, status: int | None, code: str, message: str) -> None:
        self.connector = connector
        self.status = status
        self.code = code
        self.message = message
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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connector = connector
        self._key = gateway_key
        self._connector_key = connector_key
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConnectorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, query_id: str = "-", body: bytes = b"") -> httpx.Response:
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
        try:
            response = self._http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ConnectorCallError(self.connector, None, "unreachable", type(exc).__name__) from None
        if response.status_code != 200:
            try:
                err = response.json()
                code, text = str(err.get("error", "error")), str(err.get("message", ""))
            except ValueError:
                code, text = "error", "the connector answered without a JSON error body"
            raise ConnectorCallError(self.connector, response.status_code, code, text)
        try:
            verify_response(
                self._connector_key,
                dict(response.headers),
                request_digest=request_digest(message),
                connector=self.connector,
                body=response.content,
            )
        except SignatureError as exc:
            raise ConnectorCallError(
                self.connector, response.status_code, "bad_signature", str(exc)
            ) from None
        return response

    def health(self) -> bool:
        try:
            return self._http.get(self.base_url + "/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def schema(self) -> ConnectorSchema:
        return ConnectorSchema.model_validate_json(self._call("GET", "/v1/schema").content)

    def extract(self, request: ExtractRequest) -> pa.Table:
        response = self._call("POST", "/v1/extract", query_id=request.query_id, body=request.body())
        with pa.ipc.open_stream(io.BytesIO(response.content)) as reader:
            return reader.read_all()
