"""The gateway's connector links over an injected transport: each request signed as the connector checks
it, each answer verified against the pinned key and bound to its request, typed errors, one pooled
client per connector."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from decimal import Decimal

import httpx
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregation.planner import ExtractPlan
from aggregation.query import QuerySpec, Statistic, StatisticKind
from connectors.config import Unit
from connectors.protocol import (
    ARROW_STREAM,
    H_CONNECTOR,
    H_KEY,
    H_NONCE,
    H_PROTOCOL,
    H_QUERY,
    H_SIGNATURE,
    H_TIMESTAMP,
    ConnectorSchema,
    ErrorCode,
    ExtractRequest,
    PolicySchema,
    fingerprint,
    public_key_text,
    request_digest,
    request_message,
    sign_response,
)
from gateway.federation import (
    AnswerUnverified,
    ConnectorLink,
    ConnectorRefused,
    ConnectorUnreachable,
    Federation,
    extract_request,
    fetch_pinned_schema,
)

URL = "https://tax.example.internal:8443"
GATEWAY = Ed25519PrivateKey.generate()
CONNECTOR = Ed25519PrivateKey.generate()


def _verified_digest(request: httpx.Request) -> str:
    """What the connector service checks of a signed request; returns the digest an answer binds to."""
    h = request.headers
    assert h[H_KEY] == fingerprint(GATEWAY.public_key())
    message = request_message(
        method=request.method,
        url=str(request.url),
        connector=h[H_CONNECTOR],
        protocol=h[H_PROTOCOL],
        query_id=h[H_QUERY],
        body=request.content,
        timestamp=int(h[H_TIMESTAMP]),
        nonce=h[H_NONCE],
    )
    GATEWAY.public_key().verify(base64.b64decode(h[H_SIGNATURE]), message)
    return request_digest(message)


def _arrow() -> bytes:
    sink = io.BytesIO()
    table = pa.table({"token": [b"\x01" * 16, b"\x02" * 16]})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _answer(
    body: bytes, *, key: Ed25519PrivateKey = CONNECTOR, bind: Callable[[str], str] = lambda d: d
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        digest = bind(_verified_digest(request))
        headers = sign_response(key, request_digest=digest, connector="tax", body=body)
        return httpx.Response(200, content=body, headers={**headers, "content-type": ARROW_STREAM})

    return handler


def _link(handler: Callable[[httpx.Request], httpx.Response]) -> ConnectorLink:
    return ConnectorLink(
        URL,
        connector="tax",
        gateway_key=GATEWAY,
        connector_key=CONNECTOR.public_key(),
        transport=httpx.MockTransport(handler),
    )


def _query() -> QuerySpec:
    return QuerySpec(
        purpose="wages of persons, for the federation test",
        unit=Unit.PERSON,
        period_start="2025-01",
        period_end="2025-12",
        member_cap=2,
        statistics=(Statistic(kind=StatisticKind.COUNT),),
        epsilon=Decimal("0.5"),
    )


PART = ExtractPlan(connector="tax", department="tax", dataset="wages", measures=("wage",), dimensions=())


def _request() -> ExtractRequest:
    return PART.unsafe_unapproved_request(_query(), epoch=1)


def test_an_extract_is_signed_verified_and_announced_before_it_is_sent() -> None:
    announced: list[tuple[str, str]] = []
    with _link(_answer(_arrow())) as link:
        table, receipt = link.extract(_request(), before_send=lambda path, d: announced.append((path, d)))
    assert table.num_rows == 2
    assert announced == [("/v1/extract", receipt.request_digest)]
    assert len(receipt.response_digest) == 64 and receipt.connector_signature


def test_an_answer_for_another_request_or_from_another_key_is_unverified() -> None:
    for handler in (
        _answer(_arrow(), bind=lambda d: "0" * 64),
        _answer(_arrow(), key=Ed25519PrivateKey.generate()),
    ):
        with _link(handler) as link, pytest.raises(AnswerUnverified) as err:
            link.extract(_request())
        assert err.value.code == "bad_signature" and err.value.receipt["request_digest"]


def test_a_refusal_carries_the_wire_code_and_its_public_extras() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        _verified_digest(request)
        body = {"error": "checkpoint_stale", "message": "stale", "request_id": None, "witnessed_size": 17}
        return httpx.Response(409, json=body)

    with _link(refuse) as link, pytest.raises(ConnectorRefused) as err:
        link.extract(_request())
    assert err.value.status == 409 and err.value.wire_code is ErrorCode.CHECKPOINT_STALE
    assert err.value.extra == {"witnessed_size": 17} and err.value.receipt["request_digest"]


def test_an_unreachable_connector_is_unavailable_and_a_failed_announcement_sends_nothing() -> None:
    sent: list[httpx.Request] = []

    def down(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise httpx.ConnectError("refused")

    with _link(down) as link:
        with pytest.raises(ConnectorUnreachable) as err:
            link.extract(_request())
        assert err.value.code == "unreachable" and err.value.receipt["request_digest"]
        assert link.health() is None
        sent.clear()

        def audit_down(path: str, digest: str) -> None:
            raise RuntimeError("the audit log cannot be written")

        with pytest.raises(RuntimeError):
            link.extract(_request(), before_send=audit_down)
    assert sent == []


def _schema(key: Ed25519PrivateKey, connector: str = "tax") -> bytes:
    schema = ConnectorSchema(
        connector=connector,
        department="tax",
        description="tax",
        signing_key=public_key_text(key.public_key()),
        approval_key=public_key_text(key.public_key()),
        policy=PolicySchema(
            allowed_units=(Unit.PERSON,),
            max_epsilon_per_query=Decimal(1),
            max_epsilon_per_window=Decimal(5),
            budget_window="calendar_year",
        ),
        datasets=(),
    )
    return schema.model_dump_json().encode()


def test_a_schema_is_accepted_only_under_the_pinned_fingerprint() -> None:
    pinned = fingerprint(CONNECTOR.public_key())
    good = httpx.MockTransport(_answer(_schema(CONNECTOR)))
    schema = fetch_pinned_schema(
        URL, connector="tax", gateway_key=GATEWAY, fingerprint=pinned, transport=good
    )
    assert schema.connector == "tax"
    impostor = Ed25519PrivateKey.generate()
    cases = [
        (_answer(_schema(impostor), key=impostor), "bad_signature"),  # a consistent schema, other key
        (_answer(_schema(CONNECTOR), key=impostor), "bad_signature"),  # the pinned key, signed by another
        (_answer(_schema(CONNECTOR, connector="social")), "bad_schema"),
        (_answer(b"not json"), "bad_schema"),
    ]
    for handler, code in cases:
        with pytest.raises(AnswerUnverified) as err:
            fetch_pinned_schema(
                URL,
                connector="tax",
                gateway_key=GATEWAY,
                fingerprint=pinned,
                transport=httpx.MockTransport(handler),
            )
        assert err.value.code == code


def test_one_link_per_connector_until_its_endpoint_or_key_changes() -> None:
    federation = Federation(gateway_key=GATEWAY, transport=httpx.MockTransport(_answer(_arrow())))
    key = public_key_text(CONNECTOR.public_key())
    first = federation.link("tax", URL, key)
    assert federation.link("tax", URL, key) is first
    first.extract(_request())
    first.extract(_request())  # the same client, its pool and TLS session, serves every call
    moved = federation.link("tax", URL + "/v2", key)
    assert moved is not first and federation.link("tax", URL + "/v2", key) is moved
    federation.close()


def test_the_wire_request_carries_what_the_plan_asks_and_the_departments_cover() -> None:
    query = _query()
    unsigned = PART.unsafe_unapproved_request(query, epoch=3)
    assert unsigned.approval is not None
    request = extract_request(PART, query, unsigned.approval, epoch=3)
    assert request.model_dump() == unsigned.model_dump()
    assert request.query == query and request.rule is None and request.token.epoch == 3


def test_a_link_reuses_one_connection_for_its_calls() -> None:
    """One pooled connection per connector: over TLS, one handshake for many calls."""
    import http.server
    import threading

    connections: list[object] = []

    class Health(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def setup(self) -> None:
            connections.append(self.client_address)
            super().setup()

        def do_GET(self) -> None:
            body = b'{"status": "ok", "witnessed_size": 0}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    federation = Federation(gateway_key=GATEWAY)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        link = federation.link("tax", url, public_key_text(CONNECTOR.public_key()))
        answers = [
            federation.link("tax", url, public_key_text(CONNECTOR.public_key())).health() for _ in range(5)
        ]
        assert all(a == {"status": "ok", "witnessed_size": 0} for a in answers) and link is not None
        assert len(connections) == 1
    finally:
        federation.close()
        server.shutdown()
        server.server_close()
