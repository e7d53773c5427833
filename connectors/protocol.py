"""The wire contract between the gateway and department connectors (version `fedgate/2`).

Both sides import this one module: the pydantic models of every message, the canonical bytes that are
signed, and the Ed25519 signing and verification of requests, answers and department approvals.

`fedgate/2` binds an extract to one query: the request carries the canonical query (`connectors.query`),
whose digest the connector recomputes and whose part for its own department it plans again
(`connectors.query_scope`), serving no field that plan does not need. Epsilon has a public floor
(`MIN_EPSILON`) and a fixed precision (`EPSILON_DECIMALS`) in every signed document; scopes name the
household mapping explicitly; rules (`fedgate-rule/2`) carry window limits the connector counts. A
`fedgate/2` connector refuses `fedgate/1` requests (no silent downgrade).

Requests are signed by the gateway over the method, the full URL, the connector id, the protocol
version, the query id, the body digest, a timestamp and a nonce. Answers are signed by the connector over
the request digest, its id, a timestamp and the body digest, so an answer cannot be replayed for another
request. Approvals are signed by the department's own key over the query digest and what it covers;
rules and approvals always carry a signed expiry, and a department revokes a rule at its own connector
with a signed revocation. Queries are signed by the analyst's own key, which a rule names by fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.canonical import canonical_json, sha256_hex
from connectors.query import QuerySpec
from connectors.vocabulary import EntityKind, Period, Rollup, Suite, Unit

PROTOCOL_VERSION = "fedgate/2"
PREVIOUS_PROTOCOLS = frozenset({"fedgate/1"})
"""Versions a connector recognises only to refuse them with the version to upgrade to."""
APPROVAL_VERSION: Literal["fedgate-approval/2"] = "fedgate-approval/2"
RULE_VERSION: Literal["fedgate-rule/2"] = "fedgate-rule/2"
ARROW_STREAM = "application/vnd.apache.arrow.stream"

# Header names; lower-case because HTTP header names are case-insensitive.
H_CONNECTOR = "x-fedgate-connector"
H_PROTOCOL = "x-fedgate-protocol"
H_QUERY = "x-fedgate-query"
H_TIMESTAMP = "x-fedgate-timestamp"
H_NONCE = "x-fedgate-nonce"
H_KEY = "x-fedgate-key"
H_SIGNATURE = "x-fedgate-signature"
H_REQUEST_DIGEST = "x-fedgate-request-digest"
# A connector's cosignature (C2SP tlog-cosignature/v1 line) of the audit checkpoint it witnessed.
H_COSIGNATURE = "x-fedgate-cosignature"

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lower-case hex")]
QueryId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,80}$")]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
# Bounds on the numbers a signed document may carry: what a database column and the ledger's integer
# nano-epsilon can hold, so a malformed document is refused as invalid rather than failing later.
MAX_EPSILON = Decimal(1_000)
EPSILON_DECIMALS = 9
MIN_EPSILON = Decimal("0.001")
"""The public floor of one query's epsilon in every signed document: below it a release is nearly all
noise, and a gateway could otherwise pull many extracts for almost nothing against a window cap."""
UnixSeconds = Annotated[int, Field(ge=0, le=2**63 - 1, description="unix seconds")]
KeyFingerprint = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of a raw Ed25519 key")]

# Every approval and rule expires; the department picks how soon, up to a maximum, and the signing tools
# default to the short end. Enforced wherever a signature is checked (gateway and connector).
DAY = 86_400
DEFAULT_APPROVAL_SECONDS = 14 * DAY
MAX_APPROVAL_SECONDS = 30 * DAY
DEFAULT_RULE_SECONDS = 90 * DAY
MAX_RULE_SECONDS = 365 * DAY
# A document issued this far in the future is refused: clocks differ by less, and a far-future issue
# date would let an expiry outlive the maximum.
MAX_ISSUE_SKEW_SECONDS = 300
ANY_ANALYST = "*"
"""a rule's analyst list entry that admits every analyst, signed or not (see docs/security.md)"""

# An extract with a baseline carries, beside each measure `m` over the query period, the column
# `m + BASELINE_SUFFIX`: the same measure over the baseline period, for the same tokens.
BASELINE_SUFFIX = "__baseline"
_BASELINE_FIELDS = ("baseline_start", "baseline_end")


class SignatureError(Exception):
    """A signature, key or signed message does not verify."""


def _epsilon_precision(value: Decimal) -> Decimal:
    # As written, not after normalisation: "0.5000000000" and "0.5" would sign different bytes.
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -EPSILON_DECIMALS:
        raise ValueError(f"epsilon has at most {EPSILON_DECIMALS} decimal places")
    return value


Epsilon = Annotated[
    Decimal,
    Field(
        ge=MIN_EPSILON,
        le=MAX_EPSILON,
        description=f"at least {MIN_EPSILON}, at most {EPSILON_DECIMALS} places",
    ),
    AfterValidator(_epsilon_precision),
]
"""One query's epsilon on the wire: public floor, ceiling and precision, the same in every document."""


def _check_baseline(
    period_start: str | None,
    period_end: str | None,
    baseline_start: str | None,
    baseline_end: str | None,
) -> None:
    """The baseline, when there is one, is a whole range that ends before the query period starts.

    Tokens of two queries never link, so a comparison of two periods must come from one query whose
    extract carries both; the baseline may not overlap the query period, or a month would count twice.
    """
    if (baseline_start is None) != (baseline_end is None):
        raise ValueError("give both baseline_start and baseline_end, or neither")
    if baseline_start is None or baseline_end is None:
        return
    if baseline_start > baseline_end:
        raise ValueError("baseline_start is after baseline_end")
    if period_start is None:
        raise ValueError("a baseline needs a period range: give period_start and period_end too")
    if baseline_end >= period_start:
        raise ValueError("baseline_end must be before period_start: the baseline may not overlap the period")


def _absent_baseline(model: BaseModel) -> set[str]:
    """The baseline fields a message leaves unset, which its canonical form omits."""
    return {f for f in _BASELINE_FIELDS if getattr(model, f) is None}


# --- keys ------------------------------------------------------------------------------------------


def public_key_text(key: Ed25519PublicKey) -> str:
    """The `ed25519:BASE64` form used in configurations and schemas."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode()


# Encodings of the small-order points of Curve25519 (libsodium's blocklist), compared with the sign bit
# cleared: under such a "public key" forged signatures verify, so none may ever be trusted.
_SMALL_ORDER = frozenset(
    bytes.fromhex(h)
    for h in (
        "00" * 32,
        "01" + "00" * 31,
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ec" + "ff" * 30 + "7f",
        "ed" + "ff" * 30 + "7f",
        "ee" + "ff" * 30 + "7f",
    )
)


def is_weak_public_key(raw: bytes) -> bool:
    """True for an encoding of a small-order point (or of a non-canonical form of one)."""
    return len(raw) == 32 and raw[:31] + bytes([raw[31] & 0x7F]) in _SMALL_ORDER


def parse_public_key(text: str) -> Ed25519PublicKey:
    if not text.startswith("ed25519:"):
        raise SignatureError("a public key is written 'ed25519:' followed by base64")
    try:
        raw = base64.b64decode(text.removeprefix("ed25519:"), validate=True)
    except ValueError:
        raise SignatureError("not a valid Ed25519 public key") from None
    if is_weak_public_key(raw):
        raise SignatureError("a small-order point is not a usable public key")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SignatureError("not a valid Ed25519 public key") from None


def fingerprint(key: Ed25519PublicKey | str) -> str:
    """SHA-256 of the raw public key, hex: what an admin confirms out of band."""
    if isinstance(key, str):
        key = parse_public_key(key)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("expected an Ed25519 private key")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _verify(key: Ed25519PublicKey, signature_b64: str, message: bytes, what: str) -> None:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, message)
    except (InvalidSignature, ValueError):
        raise SignatureError(f"the {what} signature does not verify") from None


# --- requests and answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedHeaders:
    """What a signed request carries besides its body."""

    connector: str
    query_id: str
    timestamp: int
    nonce: str
    key_fingerprint: str
    signature: str
    protocol: str = PROTOCOL_VERSION

    def as_headers(self) -> dict[str, str]:
        return {
            H_CONNECTOR: self.connector,
            H_PROTOCOL: self.protocol,
            H_QUERY: self.query_id,
            H_TIMESTAMP: str(self.timestamp),
            H_NONCE: self.nonce,
            H_KEY: self.key_fingerprint,
            H_SIGNATURE: self.signature,
        }


def request_message(
    *,
    method: str,
    url: str,
    connector: str,
    protocol: str,
    query_id: str,
    body: bytes,
    timestamp: int,
    nonce: str,
) -> bytes:
    """The exact bytes the gateway signs for one request."""
    fields = ["fedgate-request/1", method.upper(), url, connector, protocol, query_id, sha256_hex(body)]
    fields += [str(timestamp), nonce]
    for f in fields:
        if "\n" in f:
            raise SignatureError("a signed request field may not contain a line break")
    return "\n".join(fields).encode()


def sign_request(
    key: Ed25519PrivateKey,
    *,
    method: str,
    url: str,
    connector: str,
    query_id: str = "-",
    body: bytes = b"",
    timestamp: int | None = None,
    nonce: str | None = None,
    protocol: str = PROTOCOL_VERSION,
) -> SignedHeaders:
    """Sign one request; `protocol` is for tests that play an older gateway."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = secrets.token_hex(16) if nonce is None else nonce
    message = request_message(
        method=method,
        url=url,
        connector=connector,
        protocol=protocol,
        query_id=query_id,
        body=body,
        timestamp=timestamp,
        nonce=nonce,
    )
    return SignedHeaders(
        connector=connector,
        query_id=query_id,
        timestamp=timestamp,
        nonce=nonce,
        key_fingerprint=fingerprint(key.public_key()),
        signature=base64.b64encode(key.sign(message)).decode(),
        protocol=protocol,
    )


def request_digest(message: bytes) -> str:
    """Binds an answer to the request it answers."""
    return sha256_hex(message)


def response_message(*, request_digest: str, connector: str, timestamp: int, body: bytes) -> bytes:
    return "\n".join(
        ["fedgate-response/1", request_digest, connector, str(timestamp), sha256_hex(body)]
    ).encode()


def sign_response(
    key: Ed25519PrivateKey, *, request_digest: str, connector: str, body: bytes
) -> dict[str, str]:
    timestamp = int(time.time())
    message = response_message(
        request_digest=request_digest, connector=connector, timestamp=timestamp, body=body
    )
    return {
        H_CONNECTOR: connector,
        H_PROTOCOL: PROTOCOL_VERSION,
        H_TIMESTAMP: str(timestamp),
        H_REQUEST_DIGEST: request_digest,
        H_KEY: fingerprint(key.public_key()),
        H_SIGNATURE: base64.b64encode(key.sign(message)).decode(),
    }


def verify_response(
    key: Ed25519PublicKey, headers: dict[str, str], *, request_digest: str, connector: str, body: bytes
) -> None:
    """Raise `SignatureError` unless the answer is signed by `key` for exactly this request."""
    h = {k.lower(): v for k, v in headers.items()}
    if h.get(H_REQUEST_DIGEST) != request_digest:
        raise SignatureError("the answer is bound to another request")
    if h.get(H_CONNECTOR) != connector:
        raise SignatureError("the answer comes from another connector")
    try:
        timestamp = int(h.get(H_TIMESTAMP, ""))
    except ValueError:
        raise SignatureError("the answer has no valid timestamp") from None
    message = response_message(
        request_digest=request_digest, connector=connector, timestamp=timestamp, body=body
    )
    _verify(key, h.get(H_SIGNATURE, ""), message, "answer")


# --- schema -----------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeasureSchema(_Model):
    """One numeric column with the public bounds every value is clamped to."""

    name: str = Field(description="the measure's name within its dataset")
    unit: str = Field(description="the unit of its values, e.g. yuan")
    rollup: Rollup = Field(description="how a person's rows over the period combine: sum, max or last")
    lower: int = Field(description="public lower bound per row (values below are clamped to it)")
    upper: int = Field(description="public upper bound per row (values above are clamped to it)")
    description: str = Field("", description="what the measure means")


class DimensionSchema(_Model):
    """One categorical column: its public domain of codes and their names, from a published code list."""

    name: str = Field(description="the dimension's name within its dataset")
    domain: tuple[str, ...] = Field(description="the public domain of codes (from a published code list)")
    names: dict[str, str] = Field(
        default_factory=dict,
        description="code -> name from the same published code list (village names); empty if it has none",
    )
    derived_from_id: bool = Field(
        False, description="true when derived from the ID number (sex, birth-year band) rather than stored"
    )
    household_level: bool = Field(
        False,
        description="true when the value is the household's (e.g. its village), the same for every member",
    )
    description: str = Field("", description="what the dimension means")


class DatasetSchema(_Model):
    """One dataset a connector offers: its measures with public bounds and its dimensions with public
    domains."""

    name: str = Field(description="the dataset's name within its connector")
    description: str = Field(description="what one row of the dataset is")
    entity_kind: EntityKind = Field(
        description="what a row belongs to: a person (by ID number) or a household"
    )
    period_grain: Literal["month"] | None = Field(
        description="month for monthly records; null for undated datasets"
    )
    measures: tuple[MeasureSchema, ...] = Field(
        description="the numeric columns, each with the public bounds it is clamped to"
    )
    dimensions: tuple[DimensionSchema, ...] = Field(
        description="the categorical columns, each with its public domain of codes"
    )
    household_mapping: bool = Field(
        False, description="true for the dataset that maps persons to households (the household register)"
    )
    data_as_of: str | None = Field(
        None,
        description="the day (UTC, YYYY-MM-DD) the connector last took this dataset from its source (its "
        "snapshot); none before the first extract or when the connector reads the source every time",
    )


class PolicySchema(_Model):
    """A department's own limits, enforced again at its connector."""

    allowed_units: tuple[Unit, ...] = Field(description="the units its data may be counted in")
    max_epsilon_per_query: Decimal = Field(description="the largest epsilon one query may spend on its data")
    max_epsilon_per_window: Decimal = Field(description="the epsilon its data may lose in one budget window")
    budget_window: str = Field(description="the window that epsilon is counted over, e.g. data year")


class ConnectorSchema(_Model):
    """What a connector declares it can answer: public policy only, never a data-dependent number."""

    protocol: str = Field(PROTOCOL_VERSION, description="the connector protocol version; fedgate/1")
    connector: str = Field(description="the connector's name, also the first part of every dataset reference")
    department: str = Field(description="the department that runs the connector")
    description: str = Field(description="what the department's data is, for analysts")
    signing_key: str = Field(description="the connector's Ed25519 public key (base64) that signs its answers")
    approval_key: str = Field(
        description="the department's Ed25519 public key (base64) that approvals and rules are checked with"
    )
    policy: PolicySchema = Field(
        description="the department's limits: units, epsilon per query and per window"
    )
    datasets: tuple[DatasetSchema, ...] = Field(
        description="the datasets the connector offers, with their public bounds and domains"
    )


# --- approvals ----------------------------------------------------------------------------------------


class ApprovedDataset(_Model):
    """One dataset a department lets a query read, with the measures and dimensions it may use."""

    dataset: Name = Field(description="connector.dataset")
    measures: tuple[Name, ...] = Field(
        (), description="measure names of the dataset the query may sum or bin"
    )
    dimensions: tuple[Name, ...] = Field(
        (), description="dimension names of the dataset the query may group or filter by"
    )
    household: bool = Field(
        False,
        description="the household mapping (the register's household token): served only when covered "
        "explicitly, and only for a query whose plan needs it",
    )


def _now() -> int:
    return int(time.time())


def _unset_times(data: Any) -> Any:
    """`issued_at`/`expires_at` given as None mean "the default", as if left out."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if not (k in ("issued_at", "expires_at") and v is None)}
    return data


def _expiry_after(seconds: int) -> Any:
    """A default expiry `seconds` after the document's own issue time (always present once signed)."""

    def default(data: dict[str, Any]) -> int:
        return int(data["issued_at"]) + seconds

    return default


def _check_lifetime(issued_at: int, expires_at: int, maximum: int, what: str) -> None:
    if expires_at <= issued_at:
        raise ValueError(f"the {what} expires before it is issued")
    if expires_at - issued_at > maximum:
        raise ValueError(f"the {what} may last at most {maximum // DAY} days: choose an earlier expires_at")


def check_current(issued_at: int, expires_at: int, what: str, *, now: float | None = None) -> str | None:
    """Why a signed document is not in force now (issued in the future, or expired); None if it is."""
    moment = time.time() if now is None else now
    if issued_at > moment + MAX_ISSUE_SKEW_SECONDS:
        return f"the {what} is issued in the future"
    if expires_at < moment:
        return f"the {what} has expired"
    return None


class Approval(_Model):
    """A department's consent to one query, signed with the department's own key (not the gateway's)."""

    version: Literal["fedgate-approval/2"] = Field(
        APPROVAL_VERSION, description="the approval format; a connector refuses any other"
    )
    department: Name = Field(
        description="the approving department; its connector checks the signature with this "
        "department's approval key"
    )
    query_id: QueryId = Field(description="the query approved (q- and 32 hex digits)")
    query_digest: Digest
    unit: Unit = Field(description="household or person: the unit the query counts")
    period_start: Period | None = Field(
        None, description="first month the department serves data for (YYYY-MM); null for undated datasets"
    )
    period_end: Period | None = Field(
        None, description="last month the department serves data for (YYYY-MM); null for undated datasets"
    )
    datasets: tuple[ApprovedDataset, ...] = Field(
        description="exactly the datasets, measures and dimensions the department lets the query read",
        min_length=1,
    )
    epsilon: Epsilon = Field(description="the privacy loss the query may spend, counted once per query")
    issued_at: UnixSeconds = Field(
        default_factory=_now, description="unix seconds when the department signed it"
    )
    expires_at: UnixSeconds = Field(
        default_factory=_expiry_after(DEFAULT_APPROVAL_SECONDS),
        description="unix seconds after which the approval is void (default "
        f"{DEFAULT_APPROVAL_SECONDS // DAY} days after issue, at most {MAX_APPROVAL_SECONDS // DAY})",
    )
    baseline_start: Period | None = Field(None, description="first month of the approved baseline period")
    baseline_end: Period | None = Field(None, description="last month of the approved baseline period")

    @model_validator(mode="before")
    @classmethod
    def _times(cls, data: Any) -> Any:
        return _unset_times(data)

    @model_validator(mode="after")
    def _baseline(self) -> Approval:
        _check_baseline(self.period_start, self.period_end, self.baseline_start, self.baseline_end)
        _check_lifetime(self.issued_at, self.expires_at, MAX_APPROVAL_SECONDS, "approval")
        return self

    def signing_bytes(self) -> bytes:
        # Unset baseline fields are left out, so an approval without a baseline signs the bytes it would
        # have signed before they existed.
        body = self.model_dump(mode="json", exclude=_absent_baseline(self))
        return APPROVAL_VERSION.encode() + b"\n" + canonical_json(body)

    def covers(self, dataset: str) -> ApprovedDataset | None:
        return next((d for d in self.datasets if d.dataset == dataset), None)


class SignedApproval(_Model):
    """An approval with the department's Ed25519 signature over its canonical JSON, made on the
    department's own machine."""

    approval: Approval = Field(description="what the department approves")
    key_fingerprint: Digest
    signature: str = Field(
        description="Ed25519 signature (base64) over the approval's canonical JSON (RFC 8785)"
    )


MAX_QUERIES_PER_WINDOW = 100_000
"""A bound on what a rule may state, so a malformed rule is refused as invalid rather than failing later."""


class WindowLimits(_Model):
    """How much a rule opens in one of the connector's budget windows: queries served, epsilon spent."""

    max_queries: int = Field(ge=1, le=MAX_QUERIES_PER_WINDOW, description="queries served per window")
    max_epsilon: Epsilon = Field(description="sum of those queries' epsilon per window")


class ApprovalRule(_Model):
    """A department's pre-approval: any query inside these limits, by these analysts, may be served.

    Analysts are named by the fingerprint of their own Ed25519 key, which signs each query they submit,
    so a gateway cannot make up an analyst a rule admits; `"*"` admits every analyst, signed or not, and a
    connector accepts it only where its department opted in (`policy.accept_any_analyst_rules`).
    `window` bounds every query the rule opens in one budget window of the connector; `per_analyst`,
    required when the rule names analysts, bounds each named analyst's share. The connector counts both.
    """

    version: Literal["fedgate-rule/2"] = Field(
        RULE_VERSION, description="the rule format; a connector refuses any other"
    )
    department: Name = Field(description="the department that pre-approves queries with this rule")
    rule_id: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9_-]{4,80}$", description="the rule's name, unique within the department"),
    ]
    datasets: tuple[ApprovedDataset, ...] = Field(
        description="the datasets, measures and dimensions a covered query may read", min_length=1
    )
    units: tuple[Unit, ...] = Field(
        description="the units (household, person) a covered query may count", min_length=1
    )
    max_epsilon_per_query: Epsilon = Field(description="the largest epsilon of a query the rule covers")
    analysts: tuple[str, ...] = Field(
        min_length=1, max_length=64, description='analyst key fingerprints, or "*" for every analyst'
    )
    window: WindowLimits = Field(description="what the rule opens per budget window, for everyone")
    per_analyst: WindowLimits | None = Field(
        None, description="what the rule opens per budget window to each named analyst (required then)"
    )
    issued_at: UnixSeconds = Field(
        default_factory=_now, description="unix seconds when the department signed it"
    )
    expires_at: UnixSeconds = Field(
        default_factory=_expiry_after(DEFAULT_RULE_SECONDS),
        description=f"unix seconds after which the rule is void (default {DEFAULT_RULE_SECONDS // DAY} days "
        f"after issue, at most {MAX_RULE_SECONDS // DAY})",
    )
    replaces: Digest | None = Field(
        None, description="SHA-256 (`digest()`) of the department's rule of the same id this one replaces"
    )

    @field_validator("analysts")
    @classmethod
    def _analysts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for a in value:
            if a != ANY_ANALYST and re.fullmatch(r"[0-9a-f]{64}", a) is None:
                raise ValueError(
                    'name analysts by their key fingerprint (64 hex digits, `fedgate analysts keys`) or "*"'
                )
        if len(set(value)) != len(value):
            raise ValueError("analysts must not repeat")
        return value

    @model_validator(mode="before")
    @classmethod
    def _times(cls, data: Any) -> Any:
        return _unset_times(data)

    @model_validator(mode="after")
    def _lifetime(self) -> ApprovalRule:
        _check_lifetime(self.issued_at, self.expires_at, MAX_RULE_SECONDS, "rule")
        return self

    @model_validator(mode="after")
    def _limits(self) -> ApprovalRule:
        named = "*" not in self.analysts
        if named and self.per_analyst is None:
            raise ValueError(
                "a rule naming analysts states per_analyst limits (queries and epsilon per window)"
            )
        if self.max_epsilon_per_query > self.window.max_epsilon:
            raise ValueError("max_epsilon_per_query is above the window's max_epsilon")
        return self

    def signing_bytes(self) -> bytes:
        return RULE_VERSION.encode() + b"\n" + canonical_json(self.model_dump(mode="json"))

    def digest(self) -> str:
        """SHA-256 of the signed bytes: how a revocation or a replacement names this version."""
        return sha256_hex(self.signing_bytes())

    def covers(self, dataset: str) -> ApprovedDataset | None:
        return next((d for d in self.datasets if d.dataset == dataset), None)

    @property
    def any_analyst(self) -> bool:
        return ANY_ANALYST in self.analysts

    def admits(self, analyst_key: str | None) -> bool:
        """Whether the analyst whose key fingerprint is given (None: no verified analyst) may use it."""
        return self.any_analyst or (analyst_key is not None and analyst_key in self.analysts)


class SignedRule(_Model):
    """A pre-approval rule with the department's Ed25519 signature over its canonical JSON."""

    rule: ApprovalRule = Field(description="what the rule pre-approves")
    key_fingerprint: Digest
    signature: str = Field(description="Ed25519 signature (base64) over the rule's canonical JSON (RFC 8785)")


def sign_rule(key: Ed25519PrivateKey, rule: ApprovalRule) -> SignedRule:
    return SignedRule(
        rule=rule,
        key_fingerprint=fingerprint(key.public_key()),
        signature=base64.b64encode(key.sign(rule.signing_bytes())).decode(),
    )


def verify_rule(key: Ed25519PublicKey, signed: SignedRule) -> ApprovalRule:
    """Return the rule if `key` signed it; raise `SignatureError` otherwise."""
    if signed.key_fingerprint != fingerprint(key):
        raise SignatureError("the rule is signed with a key this department does not hold")
    _verify(key, signed.signature, signed.rule.signing_bytes(), "rule")
    return signed.rule


def sign_approval(key: Ed25519PrivateKey, approval: Approval) -> SignedApproval:
    return SignedApproval(
        approval=approval,
        key_fingerprint=fingerprint(key.public_key()),
        signature=base64.b64encode(key.sign(approval.signing_bytes())).decode(),
    )


def verify_approval(key: Ed25519PublicKey, signed: SignedApproval) -> Approval:
    """Return the approval if `key` signed it; raise `SignatureError` otherwise."""
    if signed.key_fingerprint != fingerprint(key):
        raise SignatureError("the approval is signed with a key this department does not hold")
    _verify(key, signed.signature, signed.approval.signing_bytes(), "approval")
    return signed.approval


# --- revocations ---------------------------------------------------------------------------------------


class Revocation(_Model):
    """A department's revocation of its own rule, held by its own connector (not only the gateway).

    Without `rule_digest` it revokes every version of the rule issued at or before `issued_at` (a
    replacement signed later stays in force); with it, only that one version.
    """

    version: Literal["fedgate-revocation/2"] = "fedgate-revocation/2"
    department: Name
    rule_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{4,80}$")]
    rule_digest: Digest | None = None
    issued_at: UnixSeconds
    reason: str = Field("", max_length=200)

    def signing_bytes(self) -> bytes:
        return b"fedgate-revocation/2\n" + canonical_json(self.model_dump(mode="json"))

    def revokes(self, rule: ApprovalRule) -> bool:
        if rule.department != self.department or rule.rule_id != self.rule_id:
            return False
        if self.rule_digest is not None:
            return rule.digest() == self.rule_digest
        return rule.issued_at <= self.issued_at


class SignedRevocation(_Model):
    revocation: Revocation
    key_fingerprint: Digest
    signature: str


def sign_revocation(key: Ed25519PrivateKey, revocation: Revocation) -> SignedRevocation:
    return SignedRevocation(
        revocation=revocation,
        key_fingerprint=fingerprint(key.public_key()),
        signature=base64.b64encode(key.sign(revocation.signing_bytes())).decode(),
    )


def verify_revocation(key: Ed25519PublicKey, signed: SignedRevocation) -> Revocation:
    """Return the revocation if `key` signed it; raise `SignatureError` otherwise."""
    if signed.key_fingerprint != fingerprint(key):
        raise SignatureError("the revocation is signed with a key this department does not hold")
    _verify(key, signed.signature, signed.revocation.signing_bytes(), "revocation")
    return signed.revocation


# --- analysts' query signatures ----------------------------------------------------------------------


def query_signing_bytes(query_id: str, query_digest: str) -> bytes:
    """What an analyst's key signs for one query: its id and the digest of its canonical form (which
    names the analyst's key fingerprint, so the signature and the key cannot be swapped)."""
    return f"fedgate-query/2\n{query_id}\n{query_digest}".encode()


def sign_query(key: Ed25519PrivateKey, query_id: str, query_digest: str) -> str:
    return base64.b64encode(key.sign(query_signing_bytes(query_id, query_digest))).decode()


def verify_query_signature(key: Ed25519PublicKey, signature: str, query_id: str, query_digest: str) -> None:
    """Raise `SignatureError` unless `key` signed this query."""
    _verify(key, signature, query_signing_bytes(query_id, query_digest), "analyst's query")


# --- extracts -----------------------------------------------------------------------------------------


class TokenSpec(_Model):
    suite: Suite = Suite.HMAC_SHA256
    epoch: int = Field(ge=0, le=2**31 - 1)


class ExtractRequest(_Model):
    """Ask one connector for one dataset's per-entity, clipped, tokenised roll-up for one query."""

    protocol: Literal["fedgate/2"] = "fedgate/2"
    connector: Name
    query_id: QueryId
    query_digest: Digest
    query: QuerySpec = Field(
        description="the whole canonical query: the connector recomputes query_digest from it and plans its "
        "own part of it, serving nothing that plan does not need"
    )
    dataset: str = Field(max_length=64)
    unit: Unit
    period_start: Period | None = None
    period_end: Period | None = None
    baseline_start: Period | None = Field(
        None, description="first month of a baseline period, before period_start (with baseline_end)"
    )
    baseline_end: Period | None = Field(
        None,
        description=f"last month of the baseline period; each measure m also comes as m{BASELINE_SUFFIX}",
    )
    measures: tuple[str, ...] = Field((), max_length=64)
    dimensions: tuple[str, ...] = Field((), max_length=64)
    household: bool = Field(False, description="add the household token column (register only)")
    token: TokenSpec
    epsilon: Epsilon = Field(description="the query's epsilon, counted once per query by the connector")
    analyst_key: str | None = Field(
        None,
        max_length=128,
        description="the public key (ed25519:BASE64) of the analyst who signed the query; rules name "
        "analysts by its fingerprint",
    )
    analyst_signature: str | None = Field(
        None, max_length=128, description="that key's signature (base64) of `query_signing_bytes`"
    )
    approval: SignedApproval | None = None
    rule: SignedRule | None = None
    checkpoint: str | None = Field(None, max_length=4096, description="the gateway's latest audit checkpoint")
    checkpoint_proof: tuple[str, ...] = Field(
        (),
        max_length=64,
        description="base64 consistency proof between `checkpoint_against` and the checkpoint",
    )
    checkpoint_against: int = Field(
        0,
        ge=0,
        le=2**63 - 1,
        description="the audit size this connector last witnessed, which the proof starts (or ends) at",
    )
    witness_seq: int | None = Field(
        None, ge=1, description="the sequence number of this extract's own entry in the gateway's audit log"
    )
    witness_entry: str | None = Field(
        None,
        max_length=4096,
        description="that entry's canonical JSON, naming this connector, query, dataset and extract digest",
    )
    witness_prev_hash: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="the hash of the entry before it (hex)"
    )
    witness_inclusion: tuple[str, ...] = Field(
        (), max_length=64, description="base64 RFC 9162 inclusion proof of that entry in the checkpoint"
    )

    @field_validator("measures", "dimensions")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("names must not repeat")
        return value

    @model_validator(mode="after")
    def _period(self) -> ExtractRequest:
        if (self.approval is None) == (self.rule is None):
            raise ValueError("carry exactly one of approval (for this query) or rule (a pre-approval)")
        if (self.analyst_key is None) != (self.analyst_signature is None):
            raise ValueError("give both analyst_key and analyst_signature, or neither")
        if self.approval is not None and self.approval.approval.epsilon != self.epsilon:
            raise ValueError("epsilon differs from the approved epsilon")
        if (self.period_start is None) != (self.period_end is None):
            raise ValueError("give both period_start and period_end, or neither")
        if (
            self.period_start is not None
            and self.period_end is not None
            and self.period_start > self.period_end
        ):
            raise ValueError("period_start is after period_end")
        _check_baseline(self.period_start, self.period_end, self.baseline_start, self.baseline_end)
        return self

    def body(self) -> bytes:
        # Unset baseline fields are left out (here and in the carried approval), so a request without a
        # baseline is the same bytes as before they existed and a connector that predates them still
        # accepts it.
        exclude: dict[str, Any] = dict.fromkeys(_absent_baseline(self), True)
        if self.approval is not None:
            exclude["approval"] = {"approval": _absent_baseline(self.approval.approval)}
        return canonical_json(self.model_dump(mode="json", exclude=exclude))


class PreflightRequest(ExtractRequest):
    """Ask one connector whether it could serve an extract now, without serving or counting anything.

    It carries exactly the extract the gateway would send next (same protocol version, same approval or
    rule), so the connector checks the same things: the department's signature covers it, the key epoch
    is held, the dataset's caps leave room, and a cheap probe reads the period and columns from the
    source. `kind` keeps a preflight body from ever being accepted as an extract (extracts forbid it).
    """

    kind: Literal["preflight"] = "preflight"
    audit_key: str | None = Field(
        None,
        max_length=512,
        description="the verifier key the gateway's audit checkpoints are signed with (none without one): a "
        "connector that witnesses the log checks it pins that key, or the extract's checkpoint would fail",
    )

    def as_extract(self) -> ExtractRequest:
        return ExtractRequest.model_validate(self.model_dump(exclude={"kind", "audit_key"}))


class PreflightAnswer(_Model):
    """A connector's signed "ready": nothing was served, counted or reserved."""

    protocol: Literal["fedgate/2"] = "fedgate/2"
    connector: Name
    query_id: QueryId
    dataset: str
    ready: Literal[True] = True


TOKEN_COLUMN = "token"  # noqa: S105 (a column name)
HOUSEHOLD_TOKEN_COLUMN = "household_token"  # noqa: S105


# --- errors ---------------------------------------------------------------------------------------------


class ErrorCode(StrEnum):
    """The fixed set of error codes a connector answers with; messages carry no data-dependent detail."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_APPROVED = "not_approved"
    BUDGET_EXCEEDED = "budget_exceeded"
    ALREADY_SERVED = "already_served"
    UNKNOWN_DATASET = "unknown_dataset"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_KEY_EPOCH = "unknown_key_epoch"
    SOURCE_UNAVAILABLE = "source_unavailable"
    QUERY_MISMATCH = "query_mismatch"
    NOT_IN_PLAN = "not_in_plan"
    QUOTA_EXCEEDED = "quota_exceeded"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    FORK_DETECTED = "fork_detected"
    CHECKPOINT_STALE = "checkpoint_stale"
    INTERNAL = "internal"


class ErrorBody(_Model):
    error: ErrorCode
    message: str
    request_id: str | None = None


def is_safe_identifier(value: str) -> bool:
    return re.fullmatch(r"[a-z][a-z0-9_]{0,62}", value) is not None


# What changes between retries of one extract: the audit checkpoint and the proofs that go with it.
WITNESS_FIELDS = frozenset(
    {
        "checkpoint",
        "checkpoint_proof",
        "checkpoint_against",
        "witness_seq",
        "witness_entry",
        "witness_prev_hash",
        "witness_inclusion",
    }
)


def extract_digest(request: ExtractRequest) -> str:
    """SHA-256 (hex) of the request body without its witness fields: what identifies one extract.

    The gateway logs it before signing the checkpoint the request carries (the signed request's own digest
    covers that checkpoint, so it cannot be inside it); the connector recomputes it, finds it in the entry
    the inclusion proof vouches for, and matches a retry to its stored answer by it. Taken from the body's
    form, which leaves unset fields out, so it is stable across versions that add optional fields.
    """
    body = json.loads(request.body())
    return sha256_hex(canonical_json({k: v for k, v in body.items() if k not in WITNESS_FIELDS}))
