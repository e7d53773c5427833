"""The wire contract: canonical bytes, request/answer/approval signatures and their tamper evidence."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from connectors.protocol import (
    PROTOCOL_VERSION,
    Approval,
    ApprovedDataset,
    ExtractRequest,
    SignatureError,
    TokenSpec,
    canonical_json,
    fingerprint,
    parse_public_key,
    public_key_text,
    request_digest,
    request_message,
    sha256_hex,
    sign_approval,
    sign_request,
    sign_response,
    verify_approval,
    verify_response,
)

KEY = Ed25519PrivateKey.generate()


def _approval(**changes: object) -> Approval:
    fields: dict[str, object] = {
        "department": "tax",
        "query_id": "q-proto-0001",
        "query_digest": "a" * 64,
        "unit": "household",
        "period_start": "2025-01",
        "period_end": "2025-12",
        "datasets": (ApprovedDataset(dataset="wages", measures=("wage_income",)),),
        "epsilon": Decimal("0.25"),
    }
    fields.update(changes)
    return Approval.model_validate(fields)


def test_canonical_json_is_rfc8785() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    assert canonical_json({"x": 1e21}) == b'{"x":1e+21}'


def test_public_key_text_round_trips_and_fingerprints_are_stable() -> None:
    text = public_key_text(KEY.public_key())
    assert fingerprint(parse_public_key(text)) == fingerprint(text) == fingerprint(KEY.public_key())
    with pytest.raises(SignatureError):
        parse_public_key("ed25519:AAAA")


def test_approval_signature_covers_every_field() -> None:
    signed = sign_approval(KEY, _approval())
    assert verify_approval(KEY.public_key(), signed) == signed.approval
    for change in (
        {"epsilon": Decimal("0.5")},
        {"query_digest": "b" * 64},
        {"datasets": (ApprovedDataset(dataset="wages", measures=("wage_income", "x")),)},
        {"unit": "person"},
    ):
        tampered = signed.model_copy(update={"approval": _approval(**change)})
        with pytest.raises(SignatureError):
            verify_approval(KEY.public_key(), tampered)
    with pytest.raises(SignatureError, match="does not hold"):
        verify_approval(Ed25519PrivateKey.generate().public_key(), signed)


def test_request_signature_binds_url_body_and_nonce() -> None:
    signed = sign_request(
        KEY, method="POST", url="http://c/v1/extract", connector="tax", query_id="q1", body=b"{}"
    )
    assert signed.protocol == PROTOCOL_VERSION and len(signed.nonce) == 32
    base = {
        "method": "POST",
        "url": "http://c/v1/extract",
        "connector": "tax",
        "protocol": PROTOCOL_VERSION,
        "query_id": "q1",
        "body": b"{}",
        "timestamp": signed.timestamp,
        "nonce": signed.nonce,
    }
    import base64

    sig = base64.b64decode(signed.signature)
    KEY.public_key().verify(sig, request_message(**base))  # type: ignore[arg-type]
    from cryptography.exceptions import InvalidSignature

    for field, value in (
        ("url", "http://d/v1/extract"),
        ("body", b"{ }"),
        ("nonce", "x" * 32),
        ("connector", "civil"),
    ):
        with pytest.raises(InvalidSignature):
            KEY.public_key().verify(sig, request_message(**{**base, field: value}))  # type: ignore[arg-type]
    with pytest.raises(SignatureError):
        request_message(**{**base, "query_id": "q1\nforged"})  # type: ignore[arg-type]


def test_answers_are_bound_to_their_request() -> None:
    digest = request_digest(b"request one")
    headers = sign_response(KEY, request_digest=digest, connector="tax", body=b"payload")
    verify_response(KEY.public_key(), headers, request_digest=digest, connector="tax", body=b"payload")
    with pytest.raises(SignatureError):
        verify_response(
            KEY.public_key(), headers, request_digest=request_digest(b"two"), connector="tax", body=b"payload"
        )
    with pytest.raises(SignatureError):
        verify_response(KEY.public_key(), headers, request_digest=digest, connector="tax", body=b"payl0ad")
    with pytest.raises(SignatureError):
        verify_response(KEY.public_key(), headers, request_digest=digest, connector="civil", body=b"payload")


def test_extract_request_validation() -> None:
    signed = sign_approval(KEY, _approval())
    ok = {
        "connector": "tax",
        "query_id": "q-proto-0001",
        "query_digest": sha256_hex(b"q"),
        "dataset": "wages",
        "unit": "person",
        "token": TokenSpec(epoch=1),
        "approval": signed,
        "epsilon": Decimal("0.25"),
    }
    ExtractRequest.model_validate(ok)
    for bad in (
        {"period_start": "2025-01"},
        {"period_start": "2025-13", "period_end": "2025-12"},
        {"period_start": "2025-06", "period_end": "2025-01"},
        {"measures": ("a", "a")},
        {"query_id": "../../etc"},
        {"surprise": 1},
        {"epsilon": Decimal("0.3")},  # differs from the approved epsilon
        {"approval": None},  # neither approval nor rule
    ):
        with pytest.raises(ValidationError):
            ExtractRequest.model_validate({**ok, **bad})


@pytest.mark.parametrize("hex_key", ["00" * 32, "01" + "00" * 31, "ec" + "ff" * 30 + "7f", "00" * 31 + "80"])
def test_small_order_public_keys_are_refused(hex_key: str) -> None:
    import base64

    text = "ed25519:" + base64.b64encode(bytes.fromhex(hex_key)).decode()
    with pytest.raises(SignatureError, match="small-order"):
        parse_public_key(text)
    from connectors.config import _check_public_key

    with pytest.raises(ValueError, match="small-order"):
        _check_public_key(text)
