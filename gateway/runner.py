"""Running an approved query: one straight line of steps, and one failure handler.

    start       approved --(CAS, with `query.run`)--> running          (a second run: conflict)
    prepare     the OpenDP measurement and its privacy map, before any data     (invalid: nothing reserved)
    ready       every planned connector checks its part and probes its source   (`gateway.preflight`;
                (a signed preflight, skipped when an indicator run did it)        unavailable: nothing
                                                                                  reserved)
    reserve     the query's epsilon in the ledger on every data year it reads,  (budget refused, naming
                before the first extract                                        the data year)
    preflight   a health check of every planned connector                       (one down: unavailable)
    plan        `connector.extract_planned` per extract (its digest), then the checkpoint is signed
    fetch       signed extracts, concurrently, each carrying that checkpoint and the inclusion proof of its
                own entry; `connector.request` before each, `connector.call` and the connector's
                cosignature (`checkpoint.cosigned`) after
    release     token join -> one row per unit -> OpenDP release
    commit      `query.released` (the result's digest), then the ledger's charge and the stored result
                in one transaction, then running -> released

Any failure, whatever its kind, goes to `Run.fail`: it records `query.failed` with its reason (and
`budget.refused` for a refusal) together with the transition out of `running`, then applies the one
refund rule (`lifecycle.release_unused`): refunded if no connector returned data (back to approved, it
can run again), spent if any did (failed). New checks go in as steps of `Run.execute`, before `reserve`
if they must charge nothing.

`run` is idempotent: a released query returns its stored result and draws no fresh noise. The token-level
frames live only in this function's memory and are dropped when it returns.
"""

from __future__ import annotations

import base64
import datetime
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import polars as pl
import pyarrow as pa
import structlog

from aggregation.data_years import query_data_years
from aggregation.executor import UNLINKED_NOTE, VALUE
from aggregation.planner import ExtractPlan, Plan
from aggregation.query import StatisticKind
from audit.checkpoint import Checkpoint
from audit.cosignature import CosignatureVerifier, open_cosignature
from audit.errors import CheckpointError, ProofError
from connectors.config import Unit
from connectors.protocol import (
    ExtractRequest,
    SignedApproval,
    SignedRule,
    canonical_json,
    extract_digest,
    parse_public_key,
    sha256_hex,
)
from gateway import preflight, queries
from gateway.analyst_keys import query_signature
from gateway.auth import Principal
from gateway.context import GatewayContext
from gateway.errors import (
    AuditUnavailable,
    BudgetRefused,
    Conflict,
    ConnectorFailed,
    ConnectorUnavailable,
    ErrorCode,
    GatewayError,
    Invalid,
    NotApproved,
    NotFound,
)
from gateway.events import (
    BudgetRefused as BudgetRefusedEvent,
)
from gateway.events import (
    CheckpointCosigned,
    ConnectorCall,
    ConnectorRequest,
    ExtractPlanned,
    QueryFailed,
    QueryInterrupted,
    QueryReleased,
    QueryRun,
)
from gateway.federation import ConnectorCallError, ConnectorRefused, ConnectorUnreachable, extract_request
from gateway.lifecycle import QueryState, release_unused, stays_charged, transition
from gateway.progress import NO_PROGRESS, Progress
from gateway.registry import get_connector, is_callable
from privacy.errors import BudgetExceeded, PrivacyError
from privacy.neighbours import describe
from privacy.release import PreparedRelease, prepare_release
from privacy.vocabulary import (
    Count,
    GroupDomain,
    Histogram,
    Lorenz,
    Mean,
    Quantiles,
    ReleaseSpec,
    Statistic,
    Sum,
)

log = structlog.get_logger("fedgate.runner")

PROXY_NOTE = (
    "Disposable income here is a proxy built from what departments hold (wages, business income, pensions, "
    "transfers, minus personal contributions); no department holds property income."
)


def release_spec(plan: Plan) -> ReleaseSpec:
    """The OpenDP release a plan needs: public cells from the planned groups, public bounds and epsilon."""
    q = plan.query
    stats: list[Statistic] = []
    for s in q.statistics:
        if s.kind is StatisticKind.HISTOGRAM:
            stats.append(Histogram(edges=tuple(s.edges or ())))
        elif s.kind is StatisticKind.QUANTILES:
            stats.append(Quantiles(probs=tuple(s.probs or ()), edges=tuple(s.edges or ())))
        elif s.kind is StatisticKind.LORENZ:
            stats.append(Lorenz(edges=tuple(s.edges or ())))
        elif s.kind is StatisticKind.SUM:
            stats.append(Sum())
        elif s.kind is StatisticKind.MEAN:
            stats.append(Mean())
        else:
            stats.append(Count())
    measure = q.measure
    return ReleaseSpec(
        groups=tuple(GroupDomain(name=g.ref, values=g.domain) for g in plan.groups),
        measure=VALUE if measure is not None else None,
        lower=measure.lower if measure is not None else 0,
        upper=measure.upper if measure is not None else 0,
        statistics=tuple(stats),
        epsilon=q.epsilon,
        unit_multiplicity=plan.unit_multiplicity,
        neighbouring=q.neighbouring,
    )


def stored_result(ctx: GatewayContext, record: queries.QueryRecord) -> dict[str, Any]:
    doc = ctx.ledger.result(record.id)
    if doc is None:
        raise NotFound("no released result for this query", "query_id")
    return doc


# The steps a run reports (`gateway.progress`); a cancel stops it at any of them before "release", when
# no data has arrived yet.
RUN_STEPS = ("prepare", "preflight", "reserve", "health", "plan", "extracts", "release", "commit")


def run_query(
    ctx: GatewayContext,
    query_id: str,
    analyst: Principal,
    *,
    preflighted: bool = False,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    """Run an approved query of `analyst` once; later calls return the stored result. `preflighted`:
    the caller (an indicator run) already had every connector confirm its part before reserving;
    `progress` hears each of `RUN_STEPS` and may stop the run before data arrives."""
    record = queries.get_query(ctx.engine, query_id)
    if record.analyst != analyst.name:
        raise NotFound("no query with that id", "query_id")
    if record.state is QueryState.RELEASED:
        return stored_result(ctx, record)
    if ctx.ledger.result(query_id) is not None:
        return _settle_committed(ctx, record)
    plan = queries.plan_or_invalid(ctx.engine, record.spec)
    record = queries.refresh_state(ctx.audit, record, plan)
    found, rejected = queries.covers(ctx.engine, record, plan)
    if record.state in (QueryState.SUBMITTED, QueryState.REJECTED):
        waiting = queries.waiting_for(record, plan, found, rejected)
        raise NotApproved(
            f"the query is {record.state} ({waiting}); it runs only when approved",
            "query_id",
            waiting={query_id: waiting},
        )
    if record.state is not QueryState.APPROVED:
        raise Conflict(
            f"the query is {record.state}; it runs only when approved", "query_id", reason=record.state.value
        )
    run = Run(ctx, plan, found, analyst, preflighted=preflighted, progress=progress)
    progress.begin(len(RUN_STEPS))
    run.start()
    try:
        return run.execute()
    except BaseException as exc:
        run.fail(exc)
        raise


def _settle_committed(ctx: GatewayContext, record: queries.QueryRecord) -> dict[str, Any]:
    """A run committed its result but died before the state changed: serve what was released."""
    with ctx.audit.change() as change:
        if transition(
            change.conn,
            record.id,
            QueryState.RELEASED,
            expect=(QueryState.RUNNING, QueryState.APPROVED, QueryState.FAILED),
        ):
            change.record(
                QueryInterrupted(
                    actor="gateway", query_id=record.id, charged=True, state=QueryState.RELEASED.value
                )
            )
    return stored_result(ctx, record)


def _reason(exc: BaseException) -> str:
    return exc.code.value if isinstance(exc, GatewayError) else ErrorCode.INTERNAL.value


class Run:
    """One run of one query: the steps in order (`execute`) and the one failure handler (`fail`)."""

    def __init__(
        self,
        ctx: GatewayContext,
        plan: Plan,
        found: dict[str, SignedApproval | SignedRule],
        analyst: Principal,
        *,
        preflighted: bool = False,
        progress: Progress = NO_PROGRESS,
    ) -> None:
        self.ctx = ctx
        self.preflighted = preflighted
        self.progress = progress
        self.plan = plan
        self.spec = plan.query
        self.qid = plan.query.query_id
        self.found = found
        self.analyst = analyst
        self.failed_connectors: list[str] = []
        """the connectors behind a failure, for its `query.failed` entry"""

    # --- the steps

    def start(self) -> None:
        """approved -> running, with its `query.run` entry; a run already under way is a conflict."""
        with self.ctx.audit.change() as change:
            if not transition(change.conn, self.qid, QueryState.RUNNING, expect=(QueryState.APPROVED,)):
                raise Conflict("the query is already running", "query_id", reason=QueryState.RUNNING.value)
            change.record(
                QueryRun(
                    actor=self.analyst.name,
                    query_id=self.qid,
                    query_digest=self.spec.digest,
                    neighbouring=self.spec.neighbouring.value,
                )
            )

    def execute(self) -> dict[str, Any]:
        step = self.progress.step
        step("prepare")
        prepared = self.prepare()
        step("preflight")
        self.ready()
        step("reserve")
        self.reserve()
        step("health")
        witnessed = self.preflight()
        step("plan")
        requests = self.log_planned()
        # Signed after the planned extracts are logged, so the checkpoint each extract carries includes it.
        checkpoint = self.ctx.checkpointer.checkpoint() if self.ctx.checkpointer is not None else None
        step("extracts")
        # The engine takes each extract as it arrives, while the others are still being fetched; closing
        # the run deletes whatever it staged or spilled, after the release and after any failure.
        with self.ctx.cell_engine().start(self.plan, prepared.layout) as joined:
            self.fetch(requests, checkpoint, witnessed, joined.add)
            # Data has arrived: the budget is spent whatever happens, so a cancel no longer stops the run.
            step("release", stoppable=False)
            doc = self.release(prepared, joined.cells())
        step("commit", stoppable=False)
        self.commit(doc)
        return doc

    def prepare(self) -> PreparedRelease:
        """The OpenDP measurement, its privacy map checked against epsilon before any data is touched."""
        try:
            return prepare_release(release_spec(self.plan))
        except PrivacyError as exc:
            raise Invalid(f"the release cannot be built: {exc}", "statistics") from None

    def ready(self) -> None:
        """Every planned connector confirms it can serve its part (a signed preflight), before anything
        is reserved: a failure names each connector and its code and charges nothing."""
        if self.preflighted:
            return
        failures = preflight.preflight_many(self.ctx, [(self.plan, self.found)], self.analyst).get(self.qid)
        if failures:
            self.failed_connectors = preflight.named(failures)
            raise preflight.unavailable(failures)

    def reserve(self) -> None:
        datasets = [e.ref for e in self.plan.extracts]
        try:
            self.ctx.ledger.reserve(
                self.qid,
                analyst=self.analyst.name,
                datasets=datasets,
                epsilon=self.spec.epsilon,
                data_years=query_data_years(self.spec),
            )
        except BudgetExceeded as exc:
            raise BudgetRefused.from_ledger(exc) from None

    def preflight(self) -> dict[str, int]:
        """Every planned connector answers a health check (so one that is down charges nothing); returns
        the audit size each last witnessed."""
        down, witnessed = _health(self.ctx, self.plan)
        if down:
            self.failed_connectors = down
            raise ConnectorUnavailable(
                "a connector is not answering; nothing was charged, the query can be run again later",
                "query_id",
            )
        return witnessed

    def log_planned(self) -> dict[str, tuple[ExtractRequest, int | None]]:
        """Each planned extract's request (without witness fields) and the seq of its `ExtractPlanned`.

        The entry names the extract digest, which the connector recomputes and finds through an inclusion
        proof in the checkpoint the request carries: the gateway cannot be served an extract its log (as
        the connector witnessed it) does not record.
        """
        epoch = self.ctx.settings.token_epoch
        requests: dict[str, tuple[ExtractRequest, int | None]] = {}
        signed_by = query_signature(self.ctx.engine, self.qid)
        for e in self.plan.extracts:
            base = extract_request(e, self.spec, self.found[e.department], epoch=epoch, signed_by=signed_by)
            seq = self.ctx.audit.record(
                ExtractPlanned(
                    actor="gateway",
                    connector=e.connector,
                    query_id=self.qid,
                    dataset=e.dataset,
                    extract_digest=extract_digest(base),
                )
            )
            requests[e.ref] = (base, seq if self.ctx.checkpointer is not None else None)
        return requests

    def fetch(
        self,
        requests: dict[str, tuple[ExtractRequest, int | None]],
        checkpoint: Checkpoint | None,
        witnessed: dict[str, int],
        accept: Callable[[str, pa.Table], None],
    ) -> None:
        arrived, failures = _fetch(self.ctx, self.plan, requests, checkpoint, witnessed, accept)
        if failures:
            self.failed_connectors = sorted(failures)
            if not arrived:
                raise ConnectorUnavailable(
                    "a connector did not answer; nothing was charged, the query can be run again", "query_id"
                )
            failed = "; ".join(f"{ref}: {code}" for ref, code in sorted(failures.items()))
            raise ConnectorFailed(
                f"a connector failed after others had answered ({failed}); the reserved budget stays spent",
                "query_id",
            )

    def release(self, prepared: PreparedRelease, cells: Mapping[str, pl.DataFrame]) -> dict[str, Any]:
        released = prepared.run_cells(cells)
        spec = self.spec
        return {
            "query_id": self.qid,
            "digest": spec.digest,
            "epsilon": str(spec.epsilon),
            "released_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "unit": spec.unit.value,
            "neighbouring": spec.neighbouring.value,
            "guarantee": f"epsilon-DP with epsilon {spec.epsilon}, neighbours: {describe(spec.neighbouring)}",
            "measure": spec.measure.label if spec.measure else None,
            "notes": [
                *([PROXY_NOTE] if spec.measure else []),
                *([UNLINKED_NOTE] if spec.unit is Unit.PERSON else []),
            ],
            "release": released.to_json_dict(),
        }

    def commit(self, doc: dict[str, Any]) -> None:
        """Audit the release by its digest, then charge and store it in one ledger transaction.

        The entry comes first: if it cannot be written nothing is released; a crash between the two
        leaves an audited, charged release that the start-up recovery settles. The entry holds only the
        digest of the stored result, so no release is too large to be audited.
        """
        self.ctx.audit.record(
            QueryReleased(
                actor=self.analyst.name,
                query_id=self.qid,
                query_digest=self.spec.digest,
                epsilon=str(self.spec.epsilon),
                result_digest=sha256_hex(canonical_json(doc)),
            )
        )
        self.ctx.ledger.commit(self.qid, doc)
        with self.ctx.engine.begin() as conn:
            transition(conn, self.qid, QueryState.RELEASED, expect=(QueryState.RUNNING,))

    # --- the one failure handler

    def fail(self, exc: BaseException) -> None:
        """Leave `running` for good, audited: failed (budget spent) once data arrived, else approved.

        The entry and the transition commit together first; the ledger follows (refund or spent). If the
        audit log cannot be written the query stays `running` with its reservation counted, and the
        start-up recovery settles it: nothing changes unrecorded.
        """
        reason = _reason(exc)
        charged = stays_charged(self.ctx.ledger.entry(self.qid))
        state = QueryState.FAILED if charged else QueryState.APPROVED
        try:
            with self.ctx.audit.change() as change:
                transition(change.conn, self.qid, state, expect=(QueryState.RUNNING,), error_code=reason)
                if isinstance(exc, BudgetRefused):
                    change.record(
                        BudgetRefusedEvent(
                            actor=self.analyst.name,
                            query_id=self.qid,
                            scope=exc.scope,
                            data_year=exc.data_year,
                            requested=str(exc.requested),
                            remaining=str(exc.remaining),
                        )
                    )
                change.record(
                    QueryFailed(
                        actor=self.analyst.name,
                        query_id=self.qid,
                        reason=reason,
                        charged=charged,
                        connectors=self.failed_connectors,
                    )
                )
        except AuditUnavailable:
            log.error("runner.failure_unrecorded", query_id=self.qid, reason=reason)
            raise AuditUnavailable(
                "the audit log cannot be written; the run stopped and is settled when the gateway restarts"
            ) from exc
        release_unused(self.ctx.ledger, self.qid)


def _fetch(
    ctx: GatewayContext,
    plan: Plan,
    requests: dict[str, tuple[ExtractRequest, int | None]],
    first_checkpoint: Checkpoint | None,
    witnessed: dict[str, int],
    accept: Callable[[str, pa.Table], None],
) -> tuple[set[str], dict[str, str]]:
    """Call every planned connector concurrently, handing each table to `accept` as it arrives; returns
    the extracts that arrived and, per failed extract, its code."""
    spec = plan.query
    arrived: set[str] = set()
    failures: dict[str, str] = {}

    def call(e: ExtractPlan) -> tuple[pa.Table, dict[str, str], Checkpoint | None]:
        record = get_connector(ctx.engine, e.connector)
        if record is None or not record.enabled:
            raise ConnectorUnreachable(e.connector, None, "disabled", "the connector is not enabled")
        if not _callable(ctx, record.endpoint):
            raise ConnectorCallError(
                e.connector, None, "endpoint_not_allowed", "the endpoint is off the allow-list"
            )
        base, seq = requests[e.ref]
        against = witnessed.get(e.connector, 0)
        checkpoint = first_checkpoint
        link = ctx.federation().link(e.connector, record.endpoint, record.signing_key)

        def log_request(path: str, digest: str) -> None:
            ctx.audit.record(
                ConnectorRequest(
                    actor="gateway",
                    connector=e.connector,
                    path=path,
                    request_digest=digest,
                    query_id=spec.query_id,
                    dataset=e.dataset,
                    checkpoint=checkpoint.note if checkpoint is not None else None,
                )
            )

        for attempt in range(WITNESS_RETRIES):
            try:
                fields = _witness_fields(ctx, checkpoint, against, seq)
            except ProofError:
                # The connector witnessed more of the log than this gateway holds: a restored backup or
                # another gateway's history. It will not serve us, and it must not: nothing is sent.
                raise ConnectorCallError(
                    e.connector,
                    None,
                    "audit_history_behind",
                    "the connector witnessed a longer audit log",
                ) from None
            req = base.model_copy(update=fields)
            try:
                table, receipt = link.extract(req, before_send=log_request)
                # Marked here, in the call's own thread, before anything else can fail: once any
                # data has reached the gateway the budget stays spent, whatever happens next.
                ctx.ledger.mark_data_arrived(spec.query_id)
                return table, receipt.as_dict(), checkpoint
            except ConnectorRefused as exc:
                moved = exc.extra.get("witnessed_size")
                # Concurrent runs moved the connector's witness on: prove against where it is now,
                # with a fresh checkpoint if it already witnessed a larger one than ours (it refuses
                # to go back). A fresh one still includes this extract's entry.
                if exc.code != "checkpoint_stale" or moved is None or attempt == WITNESS_RETRIES - 1:
                    raise
                against = moved
                if checkpoint is not None and ctx.checkpointer is not None and moved > checkpoint.size:
                    checkpoint = ctx.checkpointer.checkpoint()
                time.sleep(random.uniform(0.002, 0.02))
        raise AssertionError("unreachable: the last attempt returns or raises")

    with ThreadPoolExecutor(max_workers=max(1, len(plan.extracts))) as pool:
        futures = {pool.submit(call, e): e for e in plan.extracts}
        note = first_checkpoint.note if first_checkpoint is not None else None
        for future in as_completed(futures):
            e = futures[future]
            try:
                table, receipt, used = future.result()
            except ConnectorCallError as exc:
                failures[e.ref] = exc.code
                _record_call(ctx, spec.query_id, e, note, exc.receipt, outcome=exc.code, status=exc.status)
                continue
            arrived.add(e.ref)
            accept(e.ref, table)
            del table
            used_note = used.note if used is not None else None
            _record_call(ctx, spec.query_id, e, used_note, receipt, outcome="ok", status=200)
            if used is not None:
                _record_cosignature(ctx, spec.query_id, e, used, receipt.get("cosignature"))
    return arrived, failures


def _record_cosignature(
    ctx: GatewayContext, query_id: str, e: ExtractPlan, checkpoint: Checkpoint, header: str | None
) -> None:
    """Log the connector's cosignature of the checkpoint it witnessed, checked against its pinned key.

    An auditor checks it again offline (`fedgate audit verify --witness-key`): with every department's
    cosignatures, a history shown differently to two of them, or rewritten after one saw it, is exposed.
    """
    record = get_connector(ctx.engine, e.connector)
    line, outcome = None, "missing"
    if header and record is not None:
        try:
            line = base64.b64decode(header, validate=True).decode()
            verifier = CosignatureVerifier(e.connector, parse_public_key(record.signing_key))
            open_cosignature(checkpoint, line, verifier)
            outcome = "ok"
        except (ValueError, CheckpointError):
            line, outcome = None, "invalid"
    ctx.audit.record(
        CheckpointCosigned(
            actor="gateway",
            connector=e.connector,
            department=e.department,
            query_id=query_id,
            size=checkpoint.size,
            checkpoint=checkpoint.note,
            cosignature=line,
            cosignature_outcome=outcome,
        )
    )


def _record_call(
    ctx: GatewayContext,
    query_id: str,
    e: ExtractPlan,
    checkpoint: str | None,
    receipt: dict[str, str],
    *,
    outcome: str,
    status: int | None,
) -> None:
    """One `connector.call` entry, in the shape `fedgate audit reconcile` matches against the connector."""
    ctx.audit.record(
        ConnectorCall.from_receipt(
            receipt,
            connector=e.connector,
            path="/v1/extract",
            query_id=query_id,
            dataset=e.dataset,
            outcome=outcome,
            status=status,
            checkpoint=checkpoint,
        )
    )


def _health(ctx: GatewayContext, plan: Plan) -> tuple[list[str], dict[str, int]]:
    """Connectors that do not answer a health check, and the audit size each live one last witnessed.

    Checked before any extract, so a connector that is down makes the query fail before any data arrives
    (and charge nothing)."""
    down: list[str] = []
    witnessed: dict[str, int] = {}
    for name in dict.fromkeys(e.connector for e in plan.extracts):
        record = get_connector(ctx.engine, name)
        if record is None or not record.enabled or not _callable(ctx, record.endpoint):
            down.append(name)
            continue
        link = ctx.federation().link(name, record.endpoint, record.signing_key)
        info = link.health(timeout=min(15.0, ctx.settings.connector_timeout_seconds))
        if info is None:
            down.append(name)
        else:
            size = info.get("witnessed_size", 0)
            witnessed[name] = size if isinstance(size, int) and size >= 0 else 0
    return down, witnessed


def _callable(ctx: GatewayContext, endpoint: str) -> bool:
    """Whether the endpoint may be called now: on the allow-list, and https in production."""
    return is_callable(ctx.engine, endpoint, production=ctx.settings.mode == "production")


# Concurrent runs move a connector's witness on between our proof and its check; each retry proves
# against where it is now, after a short random pause so racing runs fall out of step.
WITNESS_RETRIES = 50


def _witness_fields(
    ctx: GatewayContext, checkpoint: Checkpoint | None, against: int, seq: int | None
) -> dict[str, Any]:
    """The checkpoint, the RFC 9162 consistency proof between it and the size a connector witnessed, and
    the inclusion proof of the extract's own entry `seq` in it."""
    if checkpoint is None or ctx.checkpointer is None or seq is None:
        return {}
    log_ = ctx.checkpointer.log
    proof: list[bytes] = []
    if 0 < against != checkpoint.size:
        low, high = sorted((against, checkpoint.size))
        proof = log_.consistency_proof(low, high)
    entry = log_.entry(seq)
    if entry is None:
        raise ProofError(f"entry {seq} is not in the audit log")

    def b64(items: list[bytes]) -> tuple[str, ...]:
        return tuple(base64.b64encode(p).decode() for p in items)

    return {
        "checkpoint": checkpoint.note,
        "checkpoint_proof": b64(proof),
        "checkpoint_against": against,
        "witness_seq": seq,
        "witness_entry": entry.canonical.decode(),
        "witness_prev_hash": entry.prev_hash,
        "witness_inclusion": b64(log_.inclusion_proof(seq, checkpoint.size)),
    }
