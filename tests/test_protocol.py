"""The wire contract: canonical bytes, request/answer/approval signatures and their tamper evidence."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from connectors.protocol import (
    EPSILON_DECIMALS,
    MIN_EPSILON,
    PROTOCOL_VERSION,
    Approval,
    ApprovalRule,
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
from connectors.query import Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.vocabulary import Unit

KEY = Ed25519PrivateKey.generate()


_QUERY = QuerySpec(
    purpose="wages of persons by district for the protocol tests",
    unit=Unit.PERSON,
    period_start="2025-01",
    period_end="2025-12",
    measure=Measure(terms=(Term(dataset="tax.wages", measure="wage_income"),), lower=0, upper=10**6),
    statistics=(Statistic(kind=StatisticKind.SUM),),
    epsilon=Decimal("0.25"),
    member_cap=1,
)


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
        "query": _QUERY,
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
        {"query": None},  # fedgate/2: the query travels with the request
        {"protocol": "fedgate/1"},  # no older version is spoken
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


@pytest.mark.parametrize("epsilon", ["0.0009", "1E-18", "0.000000001", "0.2500000000", "-1", "1001"])
def test_epsilon_has_a_public_floor_and_a_fixed_precision_in_every_signed_document(epsilon: str) -> None:
    """Below MIN_EPSILON, or with more than EPSILON_DECIMALS places as written, no approval, rule or
    request can even be built, so no connector can be asked to count one."""
    with pytest.raises(ValidationError, match="epsilon"):
        _approval(epsilon=Decimal(epsilon))
    rule = {
        "department": "tax",
        "rule_id": "rule-0001",
        "datasets": [{"dataset": "wages"}],
        "units": ["person"],
        "max_epsilon_per_query": epsilon,
        "analysts": ["*"],
        "window": {"max_queries": 10, "max_epsilon": "5"},
    }
    with pytest.raises(ValidationError, match="epsilon"):
        ApprovalRule.model_validate(rule)
    with pytest.raises(ValidationError, match="epsilon"):
        ApprovalRule.model_validate(
            {**rule, "max_epsilon_per_query": "0.5", "window": {"max_queries": 1, "max_epsilon": epsilon}}
        )
    with pytest.raises(ValidationError, match="epsilon"):
        QuerySpec.model_validate({**_QUERY.model_dump(mode="json"), "epsilon": epsilon})
    assert Decimal("0.001") == MIN_EPSILON and EPSILON_DECIMALS == 9
    _approval(epsilon=MIN_EPSILON)  # the floor itself is allowed


def test_a_rule_states_its_window_limits_and_per_analyst_limits_when_it_names_analysts() -> None:
    rule = {
        "department": "tax",
        "rule_id": "rule-0001",
        "datasets": [{"dataset": "wages"}],
        "units": ["person"],
        "max_epsilon_per_query": "0.5",
        "analysts": ["a" * 64],
    }
    with pytest.raises(ValidationError, match="window"):
        ApprovalRule.model_validate(rule)
    with pytest.raises(ValidationError, match="per_analyst"):
        ApprovalRule.model_validate({**rule, "window": {"max_queries": 10, "max_epsilon": "5"}})
    with pytest.raises(ValidationError, match="above the window"):
        ApprovalRule.model_validate(
            {**rule, "analysts": ["*"], "window": {"max_queries": 10, "max_epsilon": "0.4"}}
        )
    ok = ApprovalRule.model_validate(
        {
            **rule,
            "window": {"max_queries": 10, "max_epsilon": "5"},
            "per_analyst": {"max_queries": 2, "max_epsilon": "1"},
        }
    )
    assert ok.signing_bytes().startswith(b"fedgate-rule/2\n") and ok.version == "fedgate-rule/2"
