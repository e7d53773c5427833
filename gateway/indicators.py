"""Running indicators and packs: submit their queries, reserve the whole epsilon at once, run, derive figures.

    the monitoring configuration in force            -> Conflict when none is loaded, Invalid naming the
                                                        field the catalog lacks (`gateway.monitoring`)
    build the queries (public parameters only)      -> Invalid naming the field
    epsilon within every involved department's cap   -> Invalid naming the department (the smallest cap wins)
    submit each query (identified by its digest)     -> approved by rules or department signatures, else
                                                        NotApproved with who each query waits for
    `indicator.run` audited, then a preflight of every query's connectors -> ConnectorUnavailable naming
                                                        each connector and code, nothing reserved
    ledger.reserve_many (all or nothing, each query  -> BudgetRefused naming the data year, before any
      to every data year it reads)                      extract
    run each query (the runner: extracts, join, release, commit), in order
      a failure: queries not yet run are refunded; what ran stays released or spent, as for any query
    figures from the released results (post-processing; no budget)

Running the same indicator with the same parameters again finds the same queries released and returns
the same figures (interval simulations are seeded by the queries' digests), charging nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import structlog
from pydantic import TypeAdapter, ValidationError

from aggregation.data_years import query_data_years
from aggregation.indicators import (
    INDICATORS,
    PACKS,
    IndicatorError,
    IndicatorParams,
    MonitoringConfig,
    SubQuery,
    Template,
    evaluate,
    months_ending,
    simulation_seed,
)
from aggregation.indicators.config_file import configured_pack
from aggregation.indicators.early_warning import EarlyWarning
from aggregation.indicators.key_groups import KeyGroups
from aggregation.indicators.pack import Pack
from aggregation.indicators.periods import previous_months
from aggregation.indicators.rolling import ROLLING_MONTHS, rolling_urban_rural
from aggregation.planner import Plan, PlanError, plan_query
from aggregation.query import MemberGroup
from connectors.protocol import ConnectorSchema, Period
from gateway import key_groups, monitoring, preflight, queries, runner
from gateway.auth import Principal
from gateway.context import GatewayContext
from gateway.errors import BudgetRefused, Conflict, ConnectorUnavailable, Invalid, NotApproved, NotFound
from gateway.events import BudgetRefused as BudgetRefusedEvent
from gateway.events import IndicatorFailed, IndicatorRun
from gateway.lifecycle import QueryState, release_unused, stays_charged
from gateway.progress import NO_PROGRESS, Progress, Within
from gateway.registry import catalog
from privacy.errors import BudgetExceeded
from privacy.ledger import Charge

log = structlog.get_logger("fedgate.indicators")

ANNUAL_MONTHS, WARNING_MONTHS = 12, 3
_PROBE = Decimal(1)


def _plain(value: Decimal) -> str:
    """1.0 and 1 are one epsilon: print it without trailing zeros or an exponent."""
    return format(value.normalize(), "f")


def _unknown(kind: str, name: str, known: list[str]) -> NotFound:
    return NotFound(f"no {kind} named {name!r}; known: {', '.join(known)}", "name")


_PERIOD = TypeAdapter(Period)


def parse_period(text: str, months: int) -> tuple[str, str]:
    """`YYYY-MM` (the `months` months ending then) or `YYYY-MM..YYYY-MM`."""
    try:
        ends = [_PERIOD.validate_python(p) for p in text.split("..", 1)]
    except ValidationError:
        raise IndicatorError("period", "give YYYY-MM or YYYY-MM..YYYY-MM") from None
    if len(ends) == 1:
        return months_ending(ends[0], months)
    if ends[0] > ends[1]:
        raise IndicatorError("period", "the period's start is after its end")
    return ends[0], ends[1]


def _indicator_error(exc: IndicatorError) -> Invalid:
    return Invalid(exc.message, exc.field)


ConfigOf = Callable[[Template], MonitoringConfig]
"""The public policy each indicator of a run is built and evaluated with (a pack may vary it by member)."""


def _build(items: list[tuple[Template, IndicatorParams]], config_of: ConfigOf) -> list[list[SubQuery]]:
    try:
        return [t.queries(p, config_of(t)) for t, p in items]
    except IndicatorError as exc:
        raise _indicator_error(exc) from None
    except ValueError as exc:
        raise Invalid(f"the indicator's query is invalid: {exc}", None) from None


def _plans(cat: Mapping[str, ConnectorSchema], subqueries: list[SubQuery]) -> list[Plan]:
    """Every query planned against one reading of the catalog (`Invalid` naming the field)."""
    try:
        return [plan_query(q.spec, cat) for q in subqueries]
    except PlanError as exc:
        raise Invalid(exc.message, exc.field) from None


def smallest_cap(cat: Mapping[str, ConnectorSchema], plans: list[Plan]) -> tuple[Decimal, str]:
    """The smallest per-query epsilon cap of every department the plans touch, and that department."""
    caps: dict[str, Decimal] = {}
    for plan in plans:
        for e in plan.extracts:
            caps[e.department] = min(
                caps.get(e.department, Decimal("Infinity")), cat[e.connector].policy.max_epsilon_per_query
            )
    department = min(caps, key=lambda d: (caps[d], d))
    return caps[department], department


def groups_for(
    engine: sa.Engine, config: MonitoringConfig, names: list[str] | None, *, field: str = "groups"
) -> tuple[MemberGroup, ...]:
    """The key groups of a run: by default the configuration's; a name the configuration defines means
    its definition there, any other name a group registered in the gateway (`gateway.key_groups`)."""
    if names is None:
        return tuple(g.definition for g in config.key_groups)
    out: list[MemberGroup] = []
    for i, name in enumerate(names):
        if name in names[:i]:
            raise Invalid(f"the key group {name!r} is named twice", f"{field}.{i}")
        configured = config.key_group(name)
        if configured is not None:
            out.append(configured)
            continue
        try:
            out.extend(key_groups.resolve(engine, [name], field=field))
        except key_groups.KeyGroupNotFound:
            raise key_groups.KeyGroupNotFound(name, f"{field}.{i}") from None
        except key_groups.KeyGroupRetired:
            raise key_groups.KeyGroupRetired(name, f"{field}.{i}") from None
    return tuple(out)


def _with_epsilon(
    cat: Mapping[str, ConnectorSchema],
    config_of: ConfigOf,
    make: Callable[[Decimal], list[tuple[Template, IndicatorParams]]],
    epsilon: Decimal | None,
    *,
    default: Decimal | None = None,
) -> tuple[list[tuple[Template, IndicatorParams]], Decimal]:
    """Fix the total epsilon: the one asked for if every department's cap allows it (else refused), by
    default `default` (a pack's calendar epsilon) within the smallest cap, else the smallest cap; `make`
    builds the indicators for a total."""
    try:
        probe = _build(make(_PROBE), config_of)
        cap, department = smallest_cap(cat, _plans(cat, [q for qs in probe for q in qs]))
        calendar = cap if default is None else min(default, cap)
        total = calendar if epsilon is None else epsilon
        if total > cap:
            raise Invalid(
                f"epsilon {total} is above department {department}'s cap of {cap} per query; every "
                "department involved must allow the whole total (the smallest cap wins)",
                "epsilon",
            )
        return make(total), total
    except IndicatorError as exc:
        raise _indicator_error(exc) from None


def run_indicator(
    ctx: GatewayContext,
    analyst: Principal,
    name: str,
    *,
    period: str,
    epsilon: Decimal | None,
    bands: dict[str, tuple[int, int]] | None = None,
    groups: list[str] | None = None,
    baseline: str | None = None,
    drop_share: Decimal | None = None,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    template = INDICATORS.get(name)
    if template is None:
        raise _unknown("indicator", name, sorted(INDICATORS))
    try:
        months = WARNING_MONTHS if isinstance(template, EarlyWarning) else ANNUAL_MONTHS
        start, end = parse_period(period, months)
        base = parse_period(baseline, 1) if baseline else (None, None)
    except IndicatorError as exc:
        raise _indicator_error(exc) from None
    cat = catalog(ctx.engine)
    configured = monitoring.in_force(ctx, cat)
    config = configured.config
    params = IndicatorParams(
        period_start=start,
        period_end=end,
        epsilon=_PROBE,
        analyst=analyst.name,
        bands=bands,
        groups=groups_for(ctx.engine, config, groups) if isinstance(template, KeyGroups) or groups else (),
        baseline_start=base[0],
        baseline_end=base[1],
        drop_share=drop_share,
    )
    items, total = _with_epsilon(
        cat, lambda t: config, lambda e: [(template, params.model_copy(update={"epsilon": e}))], epsilon
    )
    results = _execute(
        ctx, cat, configured, analyst, items, label=name, config_of=lambda t: config, progress=progress
    )
    return {
        "pack": None,
        "period": period,
        "epsilon": _plain(total),
        "monitoring_version": configured.version,
        "indicators": results,
    }


def run_pack(
    ctx: GatewayContext,
    analyst: Principal,
    name: str,
    *,
    period: str,
    epsilon: Decimal | None,
    groups: list[str] | None = None,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    declared = PACKS.get(name)
    if declared is None:
        raise _unknown("pack", name, sorted(PACKS))
    try:
        if ".." in period:
            raise IndicatorError("period", "a pack takes one reference month, YYYY-MM")
        parse_period(period, 1)
        declared.params(period=period, epsilon=_PROBE, analyst=analyst.name, groups=())
    except IndicatorError as exc:
        raise _indicator_error(exc) from None
    cat = catalog(ctx.engine)
    configured = monitoring.in_force(ctx, cat)
    config = configured.config
    pack = configured_pack(declared, config)
    resolved = groups_for(ctx.engine, config, groups)

    def config_of(template: Template) -> MonitoringConfig:
        return pack.config_for(template.name, config)

    def make(e: Decimal) -> list[tuple[Template, IndicatorParams]]:
        return pack.params(period=period, epsilon=e, analyst=analyst.name, groups=resolved)

    items, total = _with_epsilon(cat, config_of, make, epsilon, default=pack.default_epsilon)
    results = _execute(
        ctx, cat, configured, analyst, items, label=f"pack:{name}", config_of=config_of, progress=progress
    )
    if pack.rolling_member is not None:
        rolled = _rolling(ctx, pack, config, period, total, analyst, resolved)
        if rolled is not None:
            results.append(rolled)
    return {
        "pack": name,
        "period": period,
        "epsilon": _plain(total),
        "monitoring_version": configured.version,
        "indicators": results,
    }


def _rolling(
    ctx: GatewayContext,
    pack: Pack,
    config: MonitoringConfig,
    period: str,
    total: Decimal,
    analyst: Principal,
    groups: tuple[MemberGroup, ...],
) -> dict[str, Any] | None:
    """The rolling 12-month figures of the pack's rolling member, if this analyst released that member
    in each of the twelve monthly packs ending in `period` at the same epsilon (post-processing only)."""
    member = pack.rolling_member
    assert member is not None
    member_config = pack.config_for(member, config)
    months = []
    try:
        for ref in [*previous_months(period, ROLLING_MONTHS - 1), period]:
            items = pack.params(period=ref, epsilon=total, analyst=analyst.name, groups=groups)
            for template, params in items:
                if template.name != member:
                    continue
                subqueries = template.queries(params, member_config)
                released = {q.role: ctx.ledger.result(q.spec.query_id) for q in subqueries}
                if any(doc is None for doc in released.values()):
                    return None
                months.append((ref, subqueries, {r: doc["release"] for r, doc in released.items() if doc}))
    except IndicatorError:
        return None  # a month too early to have eleven before it: no rolling figure
    seed = simulation_seed([q.spec.digest for _, subqueries, _ in months for q in subqueries])
    return rolling_urban_rural(member_config, months, seed).model_dump(mode="json")


def _execute(
    ctx: GatewayContext,
    cat: Mapping[str, ConnectorSchema],
    configured: monitoring.MonitoringRecord,
    analyst: Principal,
    items: list[tuple[Template, IndicatorParams]],
    *,
    label: str,
    config_of: ConfigOf,
    progress: Progress = NO_PROGRESS,
) -> list[dict[str, Any]]:
    """Submit, check, reserve and run the queries of `items`; `progress` hears "approvals", "preflight",
    "reserve", each query's runner steps (prefixed "query i/n <role>") and "figures"."""
    built = _build(items, config_of)
    flat = [q for qs in built for q in qs]
    plans = _plans(cat, flat)
    records = []
    for q in flat:
        record, _ = queries.submit(ctx.audit, q.spec, analyst, indicator=label)
        records.append(queries.get_query(ctx.engine, record.id))
    done = {r.id for r in records if r.state is QueryState.RELEASED or ctx.ledger.result(r.id) is not None}
    waiting: dict[str, str] = {}
    stuck = []
    for record, plan in zip(records, plans, strict=True):
        if record.id in done:
            continue
        if record.state in (QueryState.RUNNING, QueryState.FAILED):
            stuck.append(f"{record.id} ({record.state})")
        elif record.state is not QueryState.APPROVED:
            found, rejected = queries.covers(ctx.engine, record, plan)
            waiting[record.id] = queries.waiting_for(record, plan, found, rejected)
    if stuck:
        raise Conflict(
            f"{len(stuck)} of the {label} queries cannot run now: " + "; ".join(stuck) + ". A running "
            "one is in progress elsewhere; a failed one has spent its budget, so ask with another epsilon "
            "or period",
            "name",
            reason="not_runnable",
        )
    if waiting:
        raise NotApproved(
            f"{len(waiting)} of the {label} queries are not approved: "
            + "; ".join(f"{qid} ({why})" for qid, why in waiting.items()),
            "name",
            waiting=waiting,
        )
    to_run = [
        (q, plan) for q, plan, record in zip(flat, plans, records, strict=True) if record.id not in done
    ]
    progress.begin(3 + len(to_run) * len(runner.RUN_STEPS) + 1)
    progress.step("approvals")
    # Audited before anything is reserved: if the audit log cannot be written, nothing runs (503).
    ctx.audit.record(
        IndicatorRun(
            actor=analyst.name,
            indicator=label,
            query_ids=[q.spec.query_id for q in flat],
            epsilon=str(sum((q.spec.epsilon for q in flat), Decimal(0))),
            monitoring_version=configured.version,
            monitoring_digest=configured.digest,
        )
    )
    if to_run:
        # Every connector confirms every query's part before the whole total is reserved.
        by_id = {r.id: r for r in records}
        try:
            progress.step("preflight")
            preflight.require_all_ready(
                ctx,
                [(plan, queries.covers(ctx.engine, by_id[q.spec.query_id], plan)[0]) for q, plan in to_run],
                analyst,
            )
        except ConnectorUnavailable:
            # Nothing was reserved, so nothing is refunded.
            ctx.audit.record(
                IndicatorFailed(actor=analyst.name, indicator=label, refunded=[], reason="preflight")
            )
            raise
        progress.step("reserve")
        try:
            ctx.ledger.reserve_many(
                [
                    Charge(
                        q.spec.query_id,
                        [e.ref for e in plan.extracts],
                        q.spec.epsilon,
                        query_data_years(q.spec),
                    )
                    for q, plan in to_run
                ],
                analyst=analyst.name,
            )
        except BudgetExceeded as exc:
            ctx.audit.record(
                BudgetRefusedEvent(
                    actor=analyst.name,
                    indicator=label,
                    query_ids=[q.spec.query_id for q, _ in to_run],
                    scope=exc.scope,
                    data_year=exc.data_year,
                    requested=str(exc.requested),
                    remaining=str(exc.remaining),
                )
            )
            raise BudgetRefused.from_ledger(exc) from None
    released: dict[str, dict[str, Any]] = {}
    pending = [q.spec.query_id for q, _ in to_run]
    try:
        for i, q in enumerate(flat, start=1):
            log.info(
                "indicator.query",
                indicator=label,
                role=q.role,
                query_id=q.spec.query_id,
                step=f"{i}/{len(flat)}",
            )
            part = Within(progress, f"query {i}/{len(flat)} {q.role}")
            released[q.spec.query_id] = runner.run_query(
                ctx, q.spec.query_id, analyst, preflighted=True, progress=part
            )
            if q.spec.query_id in pending:
                pending.remove(q.spec.query_id)
    except BaseException:
        # The queries not yet run hold reservations without data: audited first, then refunded.
        refunded = [qid for qid in pending if not stays_charged(ctx.ledger.entry(qid))]
        ctx.audit.record(IndicatorFailed(actor=analyst.name, indicator=label, refunded=refunded))
        for qid in pending:
            release_unused(ctx.ledger, qid)
        raise
    progress.step("figures", stoppable=False)
    out = []
    for (template, params), subqueries in zip(items, built, strict=True):
        releases = {q.role: released[q.spec.query_id]["release"] for q in subqueries}
        result = evaluate(template, params, config_of(template), subqueries, releases)
        out.append(result.model_dump(mode="json"))
    return out
