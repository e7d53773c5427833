"""The connector service a department runs beside its own database (FastAPI under uvicorn).

    GET  /v1/health    liveness, unsigned, no data
    GET  /v1/schema    the declared datasets (public policy only); gateway-signed request, signed answer
    POST /v1/extract   one approved, tokenised, clipped per-entity roll-up as an Arrow IPC stream
    POST /v1/preflight could this connector serve that extract now? (checks and a one-row probe;
                       serves, counts and reserves nothing)
    GET  /v1/admin/schema  the same schema for the department's own admin key (what `fedgate approve`
                       plans a query against, so it never signs the scope the gateway reports blind)
    GET  /v1/quality   invalid/legacy/duplicate ID counts and recent failures with the database's own
                       (scrubbed) error, for the department's own admin key only
    POST /v1/admin/revocations  hold a department-signed revocation of one of its rules (admin key; in
                       the local log): the rule opens nothing here afterwards, whatever the gateway sends
    GET  /v1/admin/revocations  the revocations held (admin key)

Deny by default: every /v1 route but health needs a request signed by a trusted gateway key (401 if
unsigned, badly signed, stale or replayed), addressed to this connector (403 otherwise) in this protocol
version (a `fedgate/1` request is refused with the version to upgrade to). An extract carries its whole
query: the connector recomputes the query's digest and id, plans its own part of the query against its own
schema (`connectors.query_scope`) and refuses anything that plan does not need; it also needs the
department's own signed approval or rule covering exactly what is asked, within the rule's window limits
(403 otherwise). Every request, allowed or refused, is appended to the connector's local log.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from audit.checkpoint import parse_verifier
from audit.cosignature import Cosigner
from audit.entries import ACTION_EXTRACT_PLANNED
from audit.errors import CheckpointError, CheckpointStale, ForkDetected, ProofError
from audit.witness import check_inclusion, witness
from connectors.body_limit import BodySizeLimit
from connectors.config import DatasetSpec, LoadedConfig
from connectors.coverage import Asked, NotCovered, check_cover
from connectors.errors import ConfigError, RequestRefused, SourceError, UnknownKeyEpoch
from connectors.extract import Extractor, rollup_spec
from connectors.federation_keys import FederationKeyring
from connectors.protocol import (
    ARROW_STREAM,
    BASELINE_SUFFIX,
    H_CONNECTOR,
    H_COSIGNATURE,
    H_KEY,
    H_NONCE,
    H_PROTOCOL,
    H_QUERY,
    H_SIGNATURE,
    H_TIMESTAMP,
    PREVIOUS_PROTOCOLS,
    PROTOCOL_VERSION,
    Approval,
    ApprovalRule,
    ConnectorSchema,
    DatasetSchema,
    DimensionSchema,
    ErrorCode,
    ExtractRequest,
    MeasureSchema,
    PolicySchema,
    PreflightAnswer,
    PreflightRequest,
    Revocation,
    SignatureError,
    SignedRevocation,
    canonical_json,
    extract_digest,
    fingerprint,
    load_private_key,
    parse_public_key,
    public_key_text,
    request_digest,
    request_message,
    sha256_hex,
    sign_response,
    verify_approval,
    verify_query_signature,
    verify_revocation,
    verify_rule,
)
from connectors.query_scope import DatasetNeed, ScopeError, plan_connector
from connectors.snapshot import SnapshotStore, snapshot_summary
from connectors.sources import Source
from connectors.sources.diagnose import SourceFailure, scrub
from connectors.state import AlreadyServed, BudgetExhausted, ConnectorState, QuotaExhausted, RuleQuota
from connectors.vocabulary import EntityKind, Unit

log = structlog.get_logger("fedgate.connector")

_Handler = Callable[[Request], Awaitable[Response]]


def _refuse(status: int, code: ErrorCode, message: str) -> RequestRefused:
    return RequestRefused(status, code.value, message)


def _error(
    status: int, code: str, message: str, request_id: str | None, extra: dict[str, int] | None = None
) -> JSONResponse:
    body = {"error": code, "message": message, "request_id": request_id, **(extra or {})}
    return JSONResponse(body, status_code=status)


def _connector_413(scope: Scope, limit: int) -> bytes:
    body = {
        "error": ErrorCode.INVALID_REQUEST.value,
        "message": f"the request body exceeds this connector's limit of {limit} bytes",
        "request_id": scope.get("state", {}).get("request_id"),
    }
    return json.dumps(body).encode()


def budget_window(now: float | None = None) -> str:
    """The calendar-year budget window a moment falls in."""
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, tz=datetime.UTC)
    return str(moment.year)


def build_schema(loaded: LoadedConfig, signing_key: str) -> ConnectorSchema:
    cfg = loaded.config
    datasets = []
    for ds in cfg.datasets:
        datasets.append(
            DatasetSchema(
                name=ds.name,
                description=ds.description,
                entity_kind=ds.entity.kind,
                period_grain=ds.period.grain if ds.period else None,
                measures=tuple(
                    MeasureSchema(
                        name=m.name,
                        unit=m.unit,
                        rollup=m.rollup,
                        lower=m.bounds[0],
                        upper=m.bounds[1],
                        description=m.description,
                    )
                    for m in ds.measures
                ),
                dimensions=tuple(
                    DimensionSchema(
                        name=d.name,
                        domain=loaded.domains[(ds.name, d.name)],
                        names=loaded.names.get((ds.name, d.name), {}),
                        derived_from_id=d.derived is not None,
                        household_level=d.household_level,
                        description=d.description,
                    )
                    for d in ds.dimensions
                ),
                household_mapping=ds.household is not None,
            )
        )
    return ConnectorSchema(
        connector=cfg.name,
        department=cfg.department,
        description=cfg.description,
        signing_key=signing_key,
        approval_key=cfg.policy.approval_public_key,
        policy=PolicySchema(
            allowed_units=cfg.policy.allowed_units,
            max_epsilon_per_query=cfg.policy.max_epsilon_per_query,
            max_epsilon_per_window=cfg.policy.max_epsilon_per_window,
            budget_window=cfg.policy.budget_window,
        ),
        datasets=tuple(datasets),
    )


def failure_details(exc: SourceError) -> dict[str, str]:
    """Cause, error class, scrubbed detail and fix of a source failure (values and secrets elided)."""
    if isinstance(exc, SourceFailure):
        return exc.diagnosis.as_dict()
    return {"cause": "source_error", "error_class": type(exc).__name__, "detail": scrub(str(exc)), "fix": ""}


@dataclass(frozen=True)
class Verified:
    """A request whose gateway signature, freshness, nonce and address have been checked."""

    query_id: str
    digest: str


class ConnectorService:
    """Holds the connector's keys, source and state; the FastAPI app delegates to it."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        source: Source,
        keyring: FederationKeyring,
        signing_key_pem: bytes,
        state: ConnectorState,
    ) -> None:
        self.loaded = loaded
        self.cfg = loaded.config
        self.source = source
        self.keyring = keyring
        self.state = state
        self.signing_key = load_private_key(signing_key_pem)
        self.gateway_keys = {fingerprint(k): parse_public_key(k) for k in self.cfg.policy.gateway_public_keys}
        self.approval_key = parse_public_key(self.cfg.policy.approval_public_key)
        self.schema = build_schema(loaded, public_key_text(self.signing_key.public_key()))
        self.snapshots = SnapshotStore(loaded, source) if self.cfg.source.snapshots else None
        self.extractor = Extractor(loaded, source, keyring, self.snapshots)
        self.audit_verifiers = [parse_verifier(v) for v in self.cfg.policy.audit_public_keys]
        # The connector key cosigns the checkpoints it witnessed, under the connector's name.
        self.cosigner = Cosigner(self.cfg.name, self.signing_key)
        if self.cfg.unsafe_development:
            log.warning(
                "connector.unsafe_development",
                witnessing=bool(self.audit_verifiers),
                public_url=self.cfg.listen.public_url,
                message="development switch on: do not serve real data with this configuration",
            )
        # Kept in memory too, so a health check never waits on the state file while extracts run.
        self.witnessed_size = state.witnessed()[0]
        self._witness_lock = threading.Lock()

    # --- request authentication

    def verify_request(self, request: Request, body: bytes) -> Verified:
        h = request.headers
        missing = [
            n for n in (H_CONNECTOR, H_PROTOCOL, H_TIMESTAMP, H_NONCE, H_KEY, H_SIGNATURE) if n not in h
        ]
        if missing:
            raise _refuse(401, ErrorCode.UNAUTHENTICATED, "the request is not signed by the gateway")
        key = self.gateway_keys.get(h[H_KEY])
        if key is None:
            raise _refuse(
                401, ErrorCode.UNAUTHENTICATED, "the request is signed by a key this connector does not trust"
            )
        try:
            timestamp = int(h[H_TIMESTAMP])
        except ValueError:
            raise _refuse(401, ErrorCode.UNAUTHENTICATED, "the request timestamp is not an integer") from None
        skew = self.cfg.policy.max_clock_skew_seconds
        if abs(time.time() - timestamp) > skew:
            raise _refuse(
                401, ErrorCode.UNAUTHENTICATED, f"the request is stale (allowed clock skew {skew} s)"
            )
        nonce = h[H_NONCE]
        if not 16 <= len(nonce) <= 128:
            raise _refuse(401, ErrorCode.UNAUTHENTICATED, "the nonce must have 16 to 128 characters")
        url = self._signed_url(request)
        query_id = h.get(H_QUERY, "-")
        try:
            message = request_message(
                method=request.method,
                url=url,
                connector=h[H_CONNECTOR],
                protocol=h[H_PROTOCOL],
                query_id=query_id,
                body=body,
                timestamp=timestamp,
                nonce=nonce,
            )
            key.verify(base64.b64decode(h[H_SIGNATURE], validate=True), message)
        except (SignatureError, InvalidSignature, ValueError):
            raise _refuse(401, ErrorCode.UNAUTHENTICATED, "the request signature does not verify") from None
        # Only a verified request may spend a nonce slot, so forged requests cannot fill the table.
        if not self.state.use_nonce(nonce, keep_seconds=2 * skew + 60):
            raise _refuse(401, ErrorCode.UNAUTHENTICATED, "the request was already seen (replay)")
        if h[H_CONNECTOR] != self.cfg.name:
            raise _refuse(403, ErrorCode.FORBIDDEN, "the request is addressed to another connector")
        if h[H_PROTOCOL] != PROTOCOL_VERSION:
            # No silent downgrade: an older gateway learns which version to upgrade to.
            sent = f"{h[H_PROTOCOL]} " if h[H_PROTOCOL] in PREVIOUS_PROTOCOLS else "another version "
            raise _refuse(
                403,
                ErrorCode.UNSUPPORTED_PROTOCOL,
                f"this connector speaks {PROTOCOL_VERSION} only and refuses {sent}requests: upgrade the "
                f"gateway to {PROTOCOL_VERSION} / 本连接器仅支持 {PROTOCOL_VERSION}，请升级网关",
            )
        return Verified(query_id=query_id, digest=request_digest(message))

    def _signed_url(self, request: Request) -> str:
        public = self.cfg.listen.public_url
        if public:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return public.rstrip("/") + path
        return str(request.url)

    def signed(
        self, verified: Verified, body: bytes, media_type: str, *, cosignature: str | None = None
    ) -> Response:
        headers = sign_response(
            self.signing_key, request_digest=verified.digest, connector=self.cfg.name, body=body
        )
        if cosignature is not None:
            # The line holds an em dash, which an HTTP header cannot: it travels as base64 of its UTF-8.
            headers[H_COSIGNATURE] = base64.b64encode(cosignature.encode()).decode()
        return Response(content=body, media_type=media_type, headers=headers)

    # --- extract checks

    def check_extract(self, req: ExtractRequest, verified: Verified) -> DatasetSpec:
        cfg = self.cfg
        if req.connector != cfg.name or req.query_id != verified.query_id:
            raise _refuse(
                403, ErrorCode.FORBIDDEN, "the body does not match the signed connector and query id"
            )
        self.check_query(req)
        dataset = cfg.dataset(req.dataset)
        if dataset is None:
            raise _refuse(404, ErrorCode.UNKNOWN_DATASET, "no such dataset in this connector's schema")
        unknown = [m for m in req.measures if dataset.measure(m) is None]
        unknown += [d for d in req.dimensions if dataset.dimension(d) is None]
        if unknown:
            raise _refuse(
                422, ErrorCode.UNKNOWN_FIELD, f"dataset {dataset.name} declares no field named in the request"
            )
        self.check_plan(req)
        # A request with no measure, dimension or household asks only which persons have a row in the
        # period (coverage): the most minimal extract there is, so it is served like any other.
        if req.unit not in cfg.policy.allowed_units:
            raise _refuse(
                403, ErrorCode.FORBIDDEN, f"this department does not answer {req.unit.value} queries"
            )
        wants = EntityKind.ORGANISATION if req.unit is Unit.ORGANISATION else EntityKind.PERSON
        if dataset.entity.kind is not wants:
            raise _refuse(
                422,
                ErrorCode.INVALID_REQUEST,
                f"dataset {dataset.name} cannot serve a {req.unit.value} query",
            )
        # Person queries need the mapping too: they cap how many members of one household are counted.
        if req.household and (dataset.household is None or req.unit is Unit.ORGANISATION):
            raise _refuse(
                422,
                ErrorCode.INVALID_REQUEST,
                "the household mapping is served only by the register, for person and household queries",
            )
        if dataset.period is not None and req.period_start is None:
            raise _refuse(422, ErrorCode.INVALID_REQUEST, f"dataset {dataset.name} needs a period range")
        if req.baseline_start is not None:
            if dataset.period is None:
                raise _refuse(
                    422,
                    ErrorCode.INVALID_REQUEST,
                    f"dataset {dataset.name} has no period column, so it cannot serve a baseline:"
                    " leave baseline_start and baseline_end unset",
                )
            # The baseline columns must not shadow a requested field of the same name.
            clash = {m + BASELINE_SUFFIX for m in req.measures} & {*req.measures, *req.dimensions}
            if clash:
                raise _refuse(
                    422,
                    ErrorCode.INVALID_REQUEST,
                    f"with a baseline each measure m also comes as m{BASELINE_SUFFIX}, which names"
                    " another requested field: ask for that field in a request without a baseline",
                )
        self.check_approval(req, dataset)
        return dataset

    def check_query(self, req: ExtractRequest) -> None:
        """The request is bound to the query it carries: same digest, id, unit, period and epsilon."""
        query = req.query
        if query.digest != req.query_digest or query.query_id != req.query_id:
            raise _refuse(
                403,
                ErrorCode.QUERY_MISMATCH,
                "query_digest and query_id must be the digest and id of the query the request carries",
            )
        baseline = query.baseline
        loose = (req.unit, req.period_start, req.period_end, req.epsilon)
        if loose != (query.unit, query.period_start, query.period_end, query.epsilon):
            raise _refuse(
                403,
                ErrorCode.QUERY_MISMATCH,
                "the request's unit, period or epsilon differs from the query it carries",
            )
        if req.baseline_start is not None and (
            baseline is None
            or (req.baseline_start, req.baseline_end) != (baseline.period_start, baseline.period_end)
        ):
            raise _refuse(
                403, ErrorCode.QUERY_MISMATCH, "the request's baseline differs from the query it carries"
            )

    def plan_of(self, req: ExtractRequest) -> DatasetNeed:
        """This connector's own plan of the carried query, for the requested dataset."""
        try:
            own = plan_connector(req.query, self.schema)
        except ScopeError as exc:
            # The department's caps keep their own codes; everything else is outside what it serves.
            code = {"epsilon": ErrorCode.BUDGET_EXCEEDED, "unit": ErrorCode.FORBIDDEN}.get(exc.field)
            raise _refuse(
                403, code or ErrorCode.NOT_IN_PLAN, f"the query cannot be planned on this connector: {exc}"
            ) from None
        need = next((n for n in own if n.dataset == req.dataset), None)
        if need is None:
            raise _refuse(
                403,
                ErrorCode.NOT_IN_PLAN,
                f"the query reads nothing of dataset {req.dataset} on this connector",
            )
        return need

    def check_plan(self, req: ExtractRequest) -> None:
        """Serve exactly what this connector's own plan of the query needs of the dataset, nothing more."""
        need = self.plan_of(req)
        extra = [f for f in (*req.measures, *req.dimensions) if f not in (*need.measures, *need.dimensions)]
        if extra:
            raise _refuse(
                403,
                ErrorCode.NOT_IN_PLAN,
                f"the query does not need field {extra[0]} of dataset {req.dataset}: this connector serves "
                "only the fields its own plan of the query needs",
            )
        if req.household and not need.household:
            raise _refuse(
                403,
                ErrorCode.NOT_IN_PLAN,
                "the household mapping is served only from the register, for a household or person query "
                "that needs it",
            )
        asked = (set(req.measures), set(req.dimensions), req.household, req.baseline_start is not None)
        if asked != (set(need.measures), set(need.dimensions), need.household, need.baseline):
            raise _refuse(
                403,
                ErrorCode.NOT_IN_PLAN,
                f"the request does not ask exactly what the query needs of dataset {req.dataset} "
                "(fields, household mapping, baseline)",
            )

    def quota_of(self, req: ExtractRequest) -> RuleQuota | None:
        """The window limits of the standing rule a request is served under (none for an approval)."""
        if req.rule is None:
            return None
        rule = req.rule.rule
        per = rule.per_analyst
        return RuleQuota(
            rule_id=rule.rule_id,
            # Counted per verified analyst key, never per a name the gateway asserts.
            analyst=self._verified_analyst(req),
            max_queries=rule.window.max_queries,
            max_epsilon=rule.window.max_epsilon,
            analyst_max_queries=None if per is None else per.max_queries,
            analyst_max_epsilon=None if per is None else per.max_epsilon,
        )

    def check_approval(self, req: ExtractRequest, dataset: DatasetSpec) -> None:
        """Serve only what the department's own signature covers: one query's approval or a standing rule
        that is in force here (not expired, not revoked at this connector, and naming the analyst whose
        own key signed the query, unless the department accepts "*" rules)."""
        covered = self._verified_cover(req)
        analyst = self._verified_analyst(req)
        if isinstance(covered, ApprovalRule):
            self._check_rule_in_force(covered)
        try:
            check_cover(covered, Asked.of_request(req, self.cfg.department, analyst))
        except NotCovered as exc:
            raise _refuse(403, ErrorCode.NOT_APPROVED, exc.reason) from None
        cap = self.cfg.policy.max_epsilon_per_query
        if req.epsilon > cap:
            raise _refuse(
                403, ErrorCode.BUDGET_EXCEEDED, f"epsilon {req.epsilon} is above this department's cap {cap}"
            )

    def _verified_analyst(self, req: ExtractRequest) -> str | None:
        """The fingerprint of the analyst's key, once its signature of this query verifies; None if the
        request carries none. A bad signature is refused rather than treated as unsigned."""
        named = req.query.analyst_key
        if req.analyst_key is None or req.analyst_signature is None:
            if named is not None:
                raise _refuse(
                    403,
                    ErrorCode.NOT_APPROVED,
                    "the query names an analyst key but carries no signature",
                )
            return None
        try:
            key = parse_public_key(req.analyst_key)
            verify_query_signature(key, req.analyst_signature, req.query_id, req.query_digest)
        except SignatureError:
            raise _refuse(
                403, ErrorCode.NOT_APPROVED, "the analyst's signature of the query does not verify"
            ) from None
        # The digest (checked against the carried query) covers the key's fingerprint: the signer is the
        # analyst the query names, so a signature cannot be moved onto another analyst's query.
        if named != fingerprint(key):
            raise _refuse(
                403, ErrorCode.NOT_APPROVED, "the analyst's signature is by another key than the query names"
            )
        return fingerprint(key)

    def _check_rule_in_force(self, rule: ApprovalRule) -> None:
        if rule.any_analyst and not self.cfg.policy.accept_any_analyst_rules:
            raise _refuse(
                403,
                ErrorCode.NOT_APPROVED,
                'this department does not accept rules for every analyst ("*"): name analysts by their key '
                "fingerprint, or set policy.accept_any_analyst_rules knowingly (docs/security.md)",
            )
        for text in self.state.revocations(rule.rule_id):
            if SignedRevocation.model_validate_json(text).revocation.revokes(rule):
                raise _refuse(
                    403, ErrorCode.NOT_APPROVED, "the department revoked this rule at its connector"
                )

    def hold_revocation(self, signed: SignedRevocation) -> tuple[Revocation, bool]:
        """Verify a revocation under the department's own key and hold it, with its local log entry;
        returns it and whether it is new."""
        try:
            revocation = verify_revocation(self.approval_key, signed)
        except SignatureError:
            raise _refuse(
                403, ErrorCode.FORBIDDEN, "the revocation is not signed by this department's approval key"
            ) from None
        if revocation.department != self.cfg.department:
            raise _refuse(403, ErrorCode.FORBIDDEN, "the revocation is for another department's rule")
        text = canonical_json(signed.model_dump(mode="json")).decode()
        digest = sha256_hex(text.encode())
        entry = {
            "kind": "rule_revoked",
            "rule_id": revocation.rule_id,
            "rule_digest": revocation.rule_digest,
            "issued_at": revocation.issued_at,
            "revocation_digest": digest,
        }
        new = self.state.add_revocation(digest=digest, rule_id=revocation.rule_id, signed=text, entry=entry)
        if new:
            log.info("connector.rule_revoked", rule_id=revocation.rule_id)
        return revocation, new

    def _verified_cover(self, req: ExtractRequest) -> Approval | ApprovalRule:
        """The request's approval or rule, once its signature verifies under the department's key."""
        try:
            if req.approval is not None:
                return verify_approval(self.approval_key, req.approval)
            assert req.rule is not None
            return verify_rule(self.approval_key, req.rule)
        except SignatureError:
            what = "approval" if req.approval is not None else "rule"
            raise _refuse(
                403, ErrorCode.NOT_APPROVED, f"the {what} is not signed by this department"
            ) from None

    def witness(self, req: ExtractRequest) -> str | None:
        """Witness the gateway's audit checkpoint; return this connector's cosignature of it.

        Served only: a checkpoint signed by a pinned audit key, extending (by an RFC 9162 consistency proof)
        and not smaller than the last one accepted here, that includes (by an inclusion proof) the entry in
        which the gateway logged this very extract before signing it. Once it has seen a forked history the
        connector refuses everything until an operator resolves the fork (docs/security.md). Without an
        audit key (only under `unsafe_development`) nothing is witnessed and None is returned.
        """
        if not self.audit_verifiers:
            return None
        with self._witness_lock:
            return self._witness(req)

    def _witness(self, req: ExtractRequest) -> str:
        size, last, forked = self.state.witnessed()
        if forked:
            raise _refuse(
                409, ErrorCode.FORK_DETECTED, "this connector saw a forked audit history; it serves nothing"
            )
        if req.checkpoint is None:
            raise _refuse(
                422, ErrorCode.INVALID_REQUEST, "this connector requires the gateway's audit checkpoint"
            )
        if req.checkpoint_against != size:
            # Another request moved this witness on since the gateway asked; it retries with a fresh proof.
            raise RequestRefused(
                409,
                ErrorCode.CHECKPOINT_STALE.value,
                "the proof is not from the audit size this connector last witnessed",
                {"witnessed_size": size},
            )
        if req.witness_seq is None or req.witness_entry is None or req.witness_prev_hash is None:
            raise _refuse(
                422,
                ErrorCode.INVALID_REQUEST,
                "this connector requires the inclusion proof of the request's own audit entry "
                "(witness_seq, witness_entry, witness_prev_hash, witness_inclusion)",
            )
        try:
            proof = [base64.b64decode(p, validate=True) for p in req.checkpoint_proof]
            accepted = witness(last, req.checkpoint, proof, self.audit_verifiers)
            inclusion = [base64.b64decode(p, validate=True) for p in req.witness_inclusion]
            event = check_inclusion(
                accepted,
                req.witness_seq,
                bytes.fromhex(req.witness_prev_hash),
                req.witness_entry.encode(),
                inclusion,
            )
        except CheckpointStale as exc:
            # Refused, never accepted: the gateway retries with a checkpoint at least this large.
            raise RequestRefused(
                409,
                ErrorCode.CHECKPOINT_STALE.value,
                "the checkpoint is older than the one this connector last witnessed",
                {"witnessed_size": exc.witnessed_size},
            ) from None
        except ForkDetected:
            self.state.mark_fork()
            self.state.append_log(
                {"kind": "fork_detected", "last_checkpoint": last, "presented_checkpoint": req.checkpoint}
            )
            log.error("connector.fork_detected", witnessed_size=size)
            raise _refuse(
                409,
                ErrorCode.FORK_DETECTED,
                "the gateway's audit checkpoint is not consistent with the last one",
            ) from None
        except (CheckpointError, ProofError, ValueError):
            raise _refuse(
                403,
                ErrorCode.FORBIDDEN,
                "the audit checkpoint is not signed by the gateway's audit key, or a proof does not hold",
            ) from None
        expected = {
            "action": ACTION_EXTRACT_PLANNED,
            "connector": self.cfg.name,
            "query_id": req.query_id,
            "dataset": req.dataset,
            "extract_digest": extract_digest(req),
        }
        if any(event.get(k) != v for k, v in expected.items()):
            raise _refuse(
                403,
                ErrorCode.FORBIDDEN,
                "the audit entry the inclusion proof vouches for does not record this extract",
            )
        self.state.remember_checkpoint(accepted.size, accepted.note)
        self.witnessed_size = accepted.size
        return self.cosigner.cosign(accepted, int(time.time()))

    def _check_epoch(self, req: ExtractRequest) -> None:
        try:
            self.keyring.tokenizer(
                epoch=req.token.epoch, suite=req.token.suite, entity_kind="person", query_id=req.query_id
            )
        except UnknownKeyEpoch:
            raise _refuse(
                403, ErrorCode.UNKNOWN_KEY_EPOCH, "this connector holds no federation key of that epoch"
            ) from None

    def preflight(self, req: PreflightRequest, dataset: DatasetSpec) -> None:
        """Everything an extract would check, and a one-row probe of the source, serving and counting
        nothing: a query that cannot be served fails before the gateway reserves any budget."""
        extract = req.as_extract()
        self._check_epoch(extract)
        if self.audit_verifiers:
            if self.state.witnessed()[2]:
                raise _refuse(
                    409,
                    ErrorCode.FORK_DETECTED,
                    "this connector saw a forked audit history; it serves nothing",
                )
            try:
                presented = parse_verifier(req.audit_key) if req.audit_key else None
            except CheckpointError:
                presented = None
            if presented is None or not any(presented.same_key(v) for v in self.audit_verifiers):
                raise _refuse(
                    403,
                    ErrorCode.FORBIDDEN,
                    "this connector does not pin the gateway's audit key, so it would refuse the extract's "
                    "checkpoint: add the gateway's verifier key to policy.audit_public_keys",
                )
        window = budget_window()
        try:
            self.state.check_reservation(
                query_id=req.query_id,
                dataset=dataset.name,
                fingerprint=extract_digest(extract),
                window=window,
                epsilon=req.epsilon,
                cap=self.cfg.policy.max_epsilon_per_window,
                quota=self.quota_of(extract),
            )
        except AlreadyServed:
            raise _refuse(
                403, ErrorCode.ALREADY_SERVED, "this dataset was already served for this query"
            ) from None
        except BudgetExhausted:
            raise _refuse(
                403, ErrorCode.BUDGET_EXCEEDED, f"the query's epsilon does not fit in window {window}"
            ) from None
        except QuotaExhausted as exc:
            raise _refuse(403, ErrorCode.QUOTA_EXCEEDED, exc.message) from None
        chunk_rows = self.cfg.source.chunk_rows
        specs = [rollup_spec(dataset, extract, chunk_rows)]
        if req.baseline_start is not None and req.baseline_end is not None and req.measures:
            specs.append(
                rollup_spec(dataset, extract, chunk_rows, period=(req.baseline_start, req.baseline_end))
            )
        try:
            for spec in specs:
                self.source.probe(spec)
        except (SourceError, ConfigError) as exc:
            # The department's log and quality report name the cause; the gateway sees only the code.
            failure = exc if isinstance(exc, SourceError) else SourceError(str(exc))
            self.note_source_failure(req.query_id, dataset.name, failure)
            raise _refuse(
                503, ErrorCode.SOURCE_UNAVAILABLE, "the department's source cannot be read now"
            ) from None

    def extract(
        self, req: ExtractRequest, dataset: DatasetSpec, verified: Verified
    ) -> tuple[bytes, dict[str, Any]]:
        """Serve one extract; returns the Arrow IPC body and the facts to log."""
        self._check_epoch(req)
        # The witness fields change between retries; the rest of the request identifies it.
        fingerprint_ = extract_digest(req)
        window = budget_window()
        epsilon = req.epsilon
        try:
            reservation = self.state.reserve(
                query_id=req.query_id,
                dataset=dataset.name,
                fingerprint=fingerprint_,
                window=window,
                epsilon=epsilon,
                cap=self.cfg.policy.max_epsilon_per_window,
                quota=self.quota_of(req),
            )
        except QuotaExhausted as exc:
            raise _refuse(403, ErrorCode.QUOTA_EXCEEDED, exc.message) from None
        except AlreadyServed:
            raise _refuse(
                403, ErrorCode.ALREADY_SERVED, "this dataset was already served for this query"
            ) from None
        except BudgetExhausted as exc:
            raise _refuse(
                403,
                ErrorCode.BUDGET_EXCEEDED,
                f"requested epsilon {exc.requested}, remaining in window {window}: {exc.remaining}",
            ) from None
        if reservation.replay is not None:
            return reservation.replay, {"replay": True, "response_digest": sha256_hex(reservation.replay)}
        try:
            result = self.extractor.run(req, dataset)
            body = result.to_ipc()
        except SourceError as exc:
            self.state.release(query_id=req.query_id, dataset=dataset.name, window=window)
            self.note_source_failure(req.query_id, dataset.name, exc)
            raise _refuse(
                503, ErrorCode.SOURCE_UNAVAILABLE, "the department's source cannot be read now"
            ) from None
        except BaseException:
            self.state.release(query_id=req.query_id, dataset=dataset.name, window=window)
            raise
        self.state.complete(query_id=req.query_id, dataset=dataset.name, body=body)
        self.state.record_quality(dataset.name, result.quality.as_dict())
        facts = {"replay": False, "response_digest": sha256_hex(body), "epsilon": str(epsilon)}
        if result.snapshot is not None:
            facts["snapshot"] = result.snapshot  # which one answered, for the department's own review
        return body, facts

    def note_source_failure(self, query_id: str, dataset: str, exc: SourceError) -> None:
        """The department's own view of a failed read: the database's error class and scrubbed message.

        Only the fixed code leaves the connector; this goes to the structured log and the quality report.
        """
        details = failure_details(exc)
        log.error(
            "connector.source_error",
            dataset=dataset,
            query_id=query_id,
            code=ErrorCode.SOURCE_UNAVAILABLE.value,
            **details,
        )
        self.state.record_failure(
            dataset=dataset, query_id=query_id, code=ErrorCode.SOURCE_UNAVAILABLE.value, details=details
        )

    def published_schema(self) -> ConnectorSchema:
        """The schema with each dataset's "data as of" day: the only fact about a snapshot that leaves."""
        if self.snapshots is None:
            return self.schema
        datasets = []
        for declared in self.schema.datasets:
            spec = self.cfg.dataset(declared.name)
            info = self.snapshots.info(spec) if spec is not None else None
            datasets.append(declared.model_copy(update={"data_as_of": info.data_as_of if info else None}))
        return self.schema.model_copy(update={"datasets": tuple(datasets)})

    def snapshot_report(self) -> dict[str, Any]:
        """Each dataset's snapshot for the department's own admin: age and what the build skipped."""
        if self.snapshots is None:
            return {}
        report: dict[str, Any] = {}
        for ds in self.cfg.datasets:
            info = self.snapshots.info(ds)
            report[ds.name] = None if info is None else snapshot_summary(info)
        return report

    def is_admin(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return False
        presented = hashlib.sha256(auth.removeprefix("Bearer ").strip().encode()).hexdigest()
        return hmac.compare_digest(presented, self.cfg.policy.admin_key_sha256)


def create_app(service: ConnectorService) -> FastAPI:
    """The connector's HTTP API around a ready service."""
    cfg = service.cfg
    app = FastAPI(
        title=f"fedgate connector: {cfg.name}",
        version=PROTOCOL_VERSION,
        description="Answers only signed, department-approved, tokenised aggregate-input requests.",
    )
    app.state.service = service
    # Added before the local log so that a refused body is still logged; it runs before any route reads
    # the body or checks its signature.
    app.add_middleware(BodySizeLimit, max_bytes=cfg.listen.max_body_bytes, refusal=_connector_413)

    @app.middleware("http")
    async def local_log(request: Request, call_next: _Handler) -> Response:
        request_id = uuid.uuid4().hex
        request.state.request_id = request_id
        request.state.log_extra = {}
        started = time.perf_counter()
        response = await call_next(request)
        entry = {
            "kind": "request",
            "request_id": request_id,
            "method": request.method,
            "path": request.url.path,
            "status": response.status_code,
            "client": request.client.host if request.client else None,
            "query_id": request.headers.get(H_QUERY),
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            **request.state.log_extra,
        }
        await run_in_threadpool(service.state.append_log, entry)
        response.headers["x-request-id"] = request_id
        return response

    @app.exception_handler(RequestRefused)
    async def refused(request: Request, exc: RequestRefused) -> JSONResponse:
        log.info("connector.refused", path=request.url.path, status=exc.status, code=exc.code)
        request.state.log_extra = {**getattr(request.state, "log_extra", {}), "error": exc.code}
        return _error(
            exc.status, exc.code, exc.message, getattr(request.state, "request_id", None), exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        return _error(422, ErrorCode.INVALID_REQUEST.value, "invalid request: " + ", ".join(fields), None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = ErrorCode.INVALID_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL
        return _error(
            exc.status_code, code.value, str(exc.detail), getattr(request.state, "request_id", None)
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # The department's own log gets the class and a scrubbed first line; the answer stays fixed.
        log.error("connector.internal_error", error=type(exc).__name__, detail=scrub(str(exc)))
        return _error(
            500, ErrorCode.INTERNAL.value, "internal error", getattr(request.state, "request_id", None)
        )

    @app.get("/v1/health")
    async def health() -> dict[str, str | int]:
        size = service.witnessed_size
        # The size of the gateway's log this connector last witnessed: public, so the gateway can send a
        # consistency proof from it with the next request.
        return {"status": "ok", "connector": cfg.name, "protocol": PROTOCOL_VERSION, "witnessed_size": size}

    @app.get("/v1/schema")
    async def schema(request: Request) -> Response:
        verified = await run_in_threadpool(service.verify_request, request, await request.body())
        published = await run_in_threadpool(service.published_schema)
        body = canonical_json(published.model_dump(mode="json"))
        return service.signed(verified, body, "application/json")

    @app.post("/v1/extract")
    async def extract(request: Request) -> Response:
        body = await request.body()
        verified = await run_in_threadpool(service.verify_request, request, body)
        try:
            req = ExtractRequest.model_validate_json(body)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) or "(body)" for e in exc.errors()})
            raise _refuse(
                422, ErrorCode.INVALID_REQUEST, "invalid extract request: " + ", ".join(fields)
            ) from None
        dataset = service.check_extract(req, verified)
        cosignature = await run_in_threadpool(service.witness, req)
        request.state.log_extra = {
            "dataset": dataset.name,
            "request_digest": verified.digest,
            "checkpoint": req.checkpoint,
            "cosignature": cosignature,
        }
        payload, facts = await run_in_threadpool(service.extract, req, dataset, verified)
        request.state.log_extra.update(facts)
        return service.signed(verified, payload, ARROW_STREAM, cosignature=cosignature)

    @app.post("/v1/preflight")
    async def preflight(request: Request) -> Response:
        body = await request.body()  # its size is already bounded by `BodySizeLimit`
        verified = await run_in_threadpool(service.verify_request, request, body)
        try:
            req = PreflightRequest.model_validate_json(body)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) or "(body)" for e in exc.errors()})
            raise _refuse(
                422, ErrorCode.INVALID_REQUEST, "invalid preflight request: " + ", ".join(fields)
            ) from None
        dataset = service.check_extract(req, verified)
        # Logged under its own key: `fedgate audit reconcile` matches `request_digest` with extracts only,
        # and a preflight serves nothing to reconcile.
        request.state.log_extra = {"dataset": dataset.name, "preflight_digest": verified.digest}
        await run_in_threadpool(service.preflight, req, dataset)
        answer = PreflightAnswer(connector=cfg.name, query_id=req.query_id, dataset=dataset.name)
        return service.signed(verified, canonical_json(answer.model_dump(mode="json")), "application/json")

    @app.get("/v1/admin/schema")
    async def own_schema(request: Request) -> dict[str, Any]:
        # The department's own view of its schema, straight from its connector: `fedgate approve` plans
        # a query against it instead of trusting the scope the gateway reports.
        if not service.is_admin(request):
            raise _refuse(401, ErrorCode.UNAUTHENTICATED, "the department admin key is required")
        return service.schema.model_dump(mode="json")

    @app.get("/v1/quality")
    async def quality(request: Request) -> dict[str, Any]:
        if not service.is_admin(request):
            raise _refuse(401, ErrorCode.UNAUTHENTICATED, "the department admin key is required")
        return {
            "connector": cfg.name,
            "datasets": await run_in_threadpool(service.state.quality),
            "recent_failures": await run_in_threadpool(service.state.failures),
            "epsilon_spent": {budget_window(): str(service.state.spent(budget_window()))},
            "snapshots": await run_in_threadpool(service.snapshot_report),
        }

    @app.post("/v1/admin/revocations", status_code=201)
    async def add_revocation(request: Request) -> dict[str, Any]:
        if not service.is_admin(request):
            raise _refuse(401, ErrorCode.UNAUTHENTICATED, "the department admin key is required")
        try:
            signed = SignedRevocation.model_validate_json(await request.body())
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) or "(body)" for e in exc.errors()})
            raise _refuse(
                422, ErrorCode.INVALID_REQUEST, "invalid revocation: " + ", ".join(fields)
            ) from None
        revocation, new = await run_in_threadpool(service.hold_revocation, signed)
        request.state.log_extra = {"rule_id": revocation.rule_id, "new": new}
        return {"rule_id": revocation.rule_id, "held": True, "new": new}

    @app.get("/v1/admin/revocations")
    async def list_revocations(request: Request) -> dict[str, Any]:
        if not service.is_admin(request):
            raise _refuse(401, ErrorCode.UNAUTHENTICATED, "the department admin key is required")
        held = await run_in_threadpool(service.state.revocations)
        return {"connector": cfg.name, "revocations": [json.loads(t) for t in held]}

    return app


def build_service(loaded: LoadedConfig) -> ConnectorService:
    """Open the source, keys and state named by a configuration, checking every dataset against the source."""
    from connectors.config import read_signing_key
    from connectors.federation_keys import load_keyring
    from connectors.sources import open_source

    cfg = loaded.config
    pem = read_signing_key(loaded)
    keyring = load_keyring(cfg.federation_keyring_file)
    source = open_source(cfg.source)
    for ds in cfg.datasets:
        try:
            source.check(ds)
        except ConfigError as exc:
            raise ConfigError(f"{loaded.path}: datasets.{ds.name}: {exc}") from None
    return ConnectorService(
        loaded,
        source=source,
        keyring=keyring,
        signing_key_pem=pem,
        state=ConnectorState(cfg.state_dir),
    )
