"""The monthly monitoring pack (and one single-department person query) end to end at county scale,
against the same queries computed exactly by a trusted central party in the same run, and each figure's
error against the exact value at epsilon = 1.

Data: a 200,000-person county (20,000 with --quick), seed 11, generated for the run with tax in
PostgreSQL and social insurance in MariaDB (private databases on the local servers, created for the run
and dropped afterwards), register, utility and civil embedded (SQLite, Parquet, CSV).

fedgate: the gateway and five connectors as processes on loopback, every dataset pre-approved by rule
for household and person units, the five key groups registered; `run_pack("monthly", period="2025-12",
epsilon="1")` through the HTTP API (extracts, tokens, token joins, OpenDP releases, ledger, audit,
figures). Each repetition (and each person query) runs on a fresh federation: nothing is served from
the gateway's stored results, and no connector reuses a roll-up it kept from the previous run
(`rollup_cache_seconds`); within one pack the connectors do reuse them, as deployed. Should the pack
route fail with a connector error, the other
indicators are run one by one with the pack's epsilon shares (the same queries) and the failure is
reported; the missing indicator's errors then come from the in-process run.

Centralized baseline: a trusted central party that holds every store computes the same queries
exactly, with no tokens, HTTP, signatures, ledger, audit or noise. It reads the stores with the
connectors' own source adapters and extract logic (the same push-down roll-ups, ID normalisation,
per-person clipping to public bounds, derived and coded dimensions), computes each distinct roll-up once
per pack (sub-queries share them), joins on the normalised IDs themselves (interned as integers; no
keyed hash) with the gateway's own Polars join (`unit_frame`), releases each query with an epsilon of
1e12 (noise scales near 1e-12: the integer noise is 0) and derives the figures with the same
`aggregation.indicators.evaluate`. Those are the exact figures every DP figure is compared with.

In process (one run, for attribution only): the pack's queries with the connectors' `Extractor` run per
query under real tokens and released with real noise, but no HTTP, signatures, ledger or audit.

Person query: wage earners (count) and their wages (sum, clipped to [0, 1,000,000] per person) by birth
decade, from tax.wages alone (the register only caps persons per household: member_cap 2), epsilon 0.5;
fedgate end to end against the same central party. Which members a cap keeps in a household with more
than member_cap depends on the join keys, so the DP error is measured against the exact release under
fedgate's own tokens (the same query id and epoch, in process, not timed).

Writes every figure (DP, interval, exact) to bench/results/pack-figures.json.
"""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from aggregation.executor import unit_frame
from aggregation.indicators import (
    PACKS,
    IndicatorParams,
    IndicatorResult,
    SubQuery,
    Template,
    evaluate,
)
from aggregation.planner import plan_query
from aggregation.query import Measure, QuerySpec, Statistic, StatisticKind, Term
from bench.bench_engines import catalog
from bench.bench_extract import RESULTS
from bench.bench_gateway import _peak_rss_mb
from bench.bench_micro import _private_database
from bench.common import BenchResult, summarize
from connectors.config import LoadedConfig, Unit, load_config
from connectors.extract import Extractor
from connectors.federation_keys import load_keyring
from connectors.protocol import ConnectorSchema
from connectors.sources import Source, open_source
from gateway.client import GatewayClient, GatewayError
from gateway.dev.localfed import CONNECTORS, Federation, register_everything, start_federation
from gateway.dev.seed_groups import SEED_GROUPS, synthetic_config
from gateway.runner import release_spec
from gateway.settings import GatewaySettings
from privacy.release import prepare_release

PERIOD = "2025-12"
EPSILON = Decimal("1")
COVERAGE = "coverage"
PERSON_EPSILON = Decimal("0.5")
CONFIG = synthetic_config()
EXACT_EPSILON = Decimal(10) ** 12
"""Epsilon of the central party's exact releases: noise scales near 1e-12, so the integer noise is 0."""
TOKEN_EPOCH = GatewaySettings.model_fields["token_epoch"].default
COUNTY_GROUPS = ("county", "urban", "rural")
DETAIL = RESULTS / "pack-figures.json"
# Enough budget for three packs and three person queries by one analyst (defaults: 5 and 10).
ENV = {"FEDGATE_DEFAULT_ANALYST_QUOTA": "20", "FEDGATE_DATA_YEAR_EPSILON": "20"}


# --- the central party's join keys


class _Interner:
    def __init__(self, ids: dict[str, int], serials: Iterator[int]) -> None:
        self._ids = ids
        self._serials = serials

    def tokens(self, values: Sequence[str]) -> list[bytes]:
        ids, serials = self._ids, self._serials
        out = []
        for v in values:
            n = ids.get(v)
            if n is None:
                n = ids[v] = next(serials)
            out.append(n.to_bytes(16, "big"))
        return out


class CentralKeys:
    """Stands in for the federation keyring: the central party joins on the normalised IDs themselves.

    Each normalised ID (or household number) gets a serial number, the same in every extract of the
    pack, written as the 16 bytes the executor's join takes: a dictionary lookup, no keyed hash. Person
    and household serials come from one counter: a person outside the register is its own household
    (the executor coalesces the two columns), so they must never coincide.
    """

    def __init__(self) -> None:
        self._kinds: dict[str, dict[str, int]] = {}
        self._serials = itertools.count(1)

    def tokenizer(self, *, epoch: int, suite: object, entity_kind: str, query_id: str) -> _Interner:
        return _Interner(self._kinds.setdefault(entity_kind, {}), self._serials)


# --- the queries


def pack_items(analyst: str, epsilon: Decimal) -> list[tuple[Template, IndicatorParams, list[SubQuery]]]:
    """The monthly pack's indicators with their parameters and queries, exactly as the gateway builds them."""
    groups = tuple(g.definition for g in SEED_GROUPS)
    items = PACKS["year_end"].params(period=PERIOD, epsilon=epsilon, analyst=analyst, groups=groups)
    return [(t, p, t.queries(p, CONFIG)) for t, p in items]


def person_query(run: int) -> QuerySpec:
    return QuerySpec(
        purpose=f"Benchmark run {run}: wage earners and their wages by birth decade (tax only)",
        unit=Unit.PERSON,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=(Term(dataset="tax.wages", measure="wage_income"),), lower=0, upper=1_000_000),
        group_by=("tax.wages.birth_year_band",),
        statistics=(Statistic(kind=StatisticKind.COUNT), Statistic(kind=StatisticKind.SUM)),
        epsilon=PERSON_EPSILON,
        member_cap=2,
    )


# --- the central party and the in-process path


class Stores:
    """Every connector's configuration and open source, as the central party (or a test) holds them."""

    def __init__(self, root: Path) -> None:
        self.loaded: dict[str, LoadedConfig] = {
            n: load_config(root / "connectors" / f"{n}.yaml") for n in CONNECTORS
        }
        self.sources: dict[str, Source] = {n: open_source(c.config.source) for n, c in self.loaded.items()}

    def close(self) -> None:
        for s in self.sources.values():
            s.close()


_KEY_FIELDS = {
    "connector",
    "dataset",
    "unit",
    "period_start",
    "period_end",
    "baseline_start",
    "baseline_end",
    "measures",
    "dimensions",
    "household",
}


class Central:
    """Exact releases of queries from the stores; each distinct roll-up is computed once per instance."""

    def __init__(self, stores: Stores, cat: Mapping[str, ConnectorSchema]) -> None:
        self.stores = stores
        self.catalog = cat
        self.keys = CentralKeys()
        self.cache: dict[str, pa.Table] = {}
        self.extracts = 0
        self.seconds = {"roll-ups": 0.0, "join": 0.0, "release": 0.0, "figures": 0.0}

    def release(self, spec: QuerySpec) -> dict[str, Any]:
        plan = plan_query(spec, self.catalog)
        tables = {}
        start = time.perf_counter()
        for e in plan.extracts:
            self.extracts += 1
            req = e.unsafe_unapproved_request(spec, epoch=1)
            key = json.dumps(req.model_dump(mode="json", include=_KEY_FIELDS), sort_keys=True)
            if key not in self.cache:
                loaded = self.stores.loaded[e.connector]
                dataset = loaded.config.dataset(e.dataset)
                assert dataset is not None
                extractor = Extractor(loaded, self.stores.sources[e.connector], self.keys)  # type: ignore[arg-type]
                self.cache[key] = extractor.run(req, dataset).table
            tables[e.ref] = self.cache[key]
        mid = time.perf_counter()
        frame = unit_frame(plan, tables)
        joined = time.perf_counter()
        rspec = release_spec(plan).model_copy(update={"epsilon": EXACT_EPSILON})
        out = prepare_release(rspec).run(frame).to_json_dict()
        self.seconds["roll-ups"] += mid - start
        self.seconds["join"] += joined - mid
        self.seconds["release"] += time.perf_counter() - joined
        return out

    def pack(
        self, items: list[tuple[Template, IndicatorParams, list[SubQuery]]]
    ) -> tuple[list[IndicatorResult], dict[str, float]]:
        """The exact results of every indicator, and each indicator's seconds (its roll-ups included:
        an indicator pays for the roll-ups it is the first to need)."""
        out, seconds = [], {}
        for template, params, subqueries in items:
            begin = time.perf_counter()
            releases = {q.role: self.release(q.spec) for q in subqueries}
            start = time.perf_counter()
            out.append(evaluate(template, params, CONFIG, subqueries, releases))
            self.seconds["figures"] += time.perf_counter() - start
            seconds[template.name] = time.perf_counter() - begin
        return out, seconds


def in_process_pack(
    stores: Stores,
    cat: Mapping[str, ConnectorSchema],
    items: list[tuple[Template, IndicatorParams, list[SubQuery]]],
) -> tuple[list[IndicatorResult], dict[str, float]]:
    """The pack's queries in process: an `Extractor` per query and extract under real tokens, DP releases."""
    seconds = {"extracts": 0.0, "join": 0.0, "release": 0.0, "figures": 0.0}
    results = []
    keyrings = {n: load_keyring(c.config.federation_keyring_file) for n, c in stores.loaded.items()}
    for template, params, subqueries in items:
        releases = {}
        for q in subqueries:
            plan = plan_query(q.spec, cat)
            tables = {}
            start = time.perf_counter()
            for e in plan.extracts:
                loaded = stores.loaded[e.connector]
                dataset = loaded.config.dataset(e.dataset)
                assert dataset is not None
                req = e.unsafe_unapproved_request(q.spec, epoch=keyrings[e.connector].current_epoch)
                extractor = Extractor(loaded, stores.sources[e.connector], keyrings[e.connector])
                tables[e.ref] = extractor.run(req, dataset).table
            mid = time.perf_counter()
            frame = unit_frame(plan, tables)
            joined = time.perf_counter()
            releases[q.role] = prepare_release(release_spec(plan)).run(frame).to_json_dict()
            seconds["extracts"] += mid - start
            seconds["join"] += joined - mid
            seconds["release"] += time.perf_counter() - joined
        start = time.perf_counter()
        results.append(evaluate(template, params, CONFIG, subqueries, releases))
        seconds["figures"] += time.perf_counter() - start
    return results, seconds


def token_exact(stores: Stores, cat: Mapping[str, ConnectorSchema], spec: QuerySpec) -> dict[str, Any]:
    """The exact release of `spec` in process under the federation's real tokens (not timed)."""
    plan = plan_query(spec, cat)
    tables = {}
    for e in plan.extracts:
        loaded = stores.loaded[e.connector]
        dataset = loaded.config.dataset(e.dataset)
        assert dataset is not None
        keyring = load_keyring(loaded.config.federation_keyring_file)
        req = e.unsafe_unapproved_request(spec, epoch=TOKEN_EPOCH)
        tables[e.ref] = Extractor(loaded, stores.sources[e.connector], keyring).run(req, dataset).table
    rspec = release_spec(plan).model_copy(update={"epsilon": EXACT_EPSILON})
    return prepare_release(rspec).run(unit_frame(plan, tables)).to_json_dict()


# --- errors against the exact figures


def _level(group: str) -> str:
    return "county" if group in COUNTY_GROUPS else "village"


def figure_errors(dp_runs: list[list[dict[str, Any]]], exact: list[IndicatorResult]) -> list[dict[str, Any]]:
    """Every DP figure of every run beside its exact value (same indicator, figure, label, group)."""
    truth = {(r.indicator, f.key): f.value for r in exact for f in r.figures}
    rows = []
    for run, indicators in enumerate(dp_runs):
        for ind in indicators:
            for f in ind["figures"]:
                key = (ind["indicator"], (f["figure"], f["label"], f["group"]))
                rows.append(
                    {
                        "run": run,
                        "indicator": ind["indicator"],
                        "figure": f["figure"],
                        "label": f["label"],
                        "group": f["group"],
                        "level": _level(f["group"]),
                        "unit": f["unit"],
                        "value": f["value"],
                        "low": f["low"],
                        "high": f["high"],
                        "exact": truth.get(key),
                    }
                )
    return rows


def _figure_kind(row: Mapping[str, Any]) -> str:
    # Figures that differ only by village are one kind; the label matters where it names what is
    # measured (a band, a key group, household vs per-capita income).
    name = row["figure"]
    if row["indicator"] in ("income_bands", "income_distribution", "key_groups"):
        return f"{name} ({row['label']})"
    return str(name)


def error_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per indicator, figure kind and level: median |DP - exact|, share of intervals covering exact."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["indicator"], _figure_kind(r), r["level"]), []).append(r)
    out = []
    for (indicator, kind, level), members in groups.items():
        usable = [m for m in members if m["value"] is not None and m["exact"] is not None]
        errors = [abs(m["value"] - m["exact"]) for m in usable]
        with_interval = [m for m in usable if m["low"] is not None and m["high"] is not None]
        covered = sum(1 for m in with_interval if m["low"] <= m["exact"] <= m["high"])
        exacts = [abs(m["exact"]) for m in usable]
        out.append(
            {
                "indicator": indicator,
                "figure": kind,
                "level": level,
                "unit": members[0]["unit"],
                "figures": len(members),
                "usable": len(usable),
                "median_abs_error": statistics.median(errors) if errors else float("nan"),
                "max_abs_error": max(errors) if errors else float("nan"),
                "median_abs_exact": statistics.median(exacts) if exacts else float("nan"),
                "coverage": covered / len(with_interval) if with_interval else float("nan"),
                "intervals": len(with_interval),
            }
        )
    return out


def truth_check(root: Path, exact: list[IndicatorResult]) -> dict[str, float]:
    """The exact band shares, per-capita incomes and ratio against the generator's `as_linked` truth."""
    linked = json.loads((root / "truth.json").read_text())["as_linked"]
    figures = {(r.indicator, f.key): f.value for r in exact for f in r.figures}
    share_diffs = []
    for band, key in (("100k–500k", "share_income_100k_500k"), ("200k–600k", "share_income_200k_600k")):
        truth = linked[key]
        for group in COUNTY_GROUPS:
            share_diffs.append(abs(figures[("income_bands", ("share", band, group))] - truth[group]))
        for village, value in truth["by_village"].items():
            got = figures.get(("income_bands", ("share", band, village)))
            if got is not None:
                share_diffs.append(abs(got - value))
    label = "per-capita disposable income"
    per_capita = [
        abs(
            figures[("urban_rural_ratio", ("per_capita_income", label, g))] / linked["per_capita_income"][g]
            - 1
        )
        for g in COUNTY_GROUPS
    ]
    ratio = figures[("urban_rural_ratio", ("urban_rural_ratio", "urban / rural per-capita income", "county"))]
    return {
        "share_max_abs_diff": max(share_diffs),
        "shares_compared": float(len(share_diffs)),
        "per_capita_max_rel_diff": max(per_capita),
        "ratio_rel_diff": abs(ratio / linked["urban_rural_ratio"] - 1),
        "ratio_exact": ratio,
        "ratio_truth": linked["urban_rural_ratio"],
    }


def cell_errors(dp: Mapping[str, Any], exact: Mapping[str, Any]) -> dict[str, tuple[float, float, int]]:
    """Per statistic of a release: median |error|, median |exact| and how many intervals cover exact."""

    def key(c: Mapping[str, Any]) -> tuple[str, str, str | None]:
        return (json.dumps(c["groups"], sort_keys=True), c["statistic"], c.get("bin"))

    truth = {key(c): c["value"] for c in exact["cells"]}
    by_stat: dict[str, list[tuple[float, float, bool]]] = {}
    for c in dp["cells"]:
        t = truth.get(key(c))
        if t is None or c["value"] is None:
            continue
        covered = c["low"] is not None and c["low"] <= t <= c["high"]
        by_stat.setdefault(c["statistic"], []).append((abs(c["value"] - t), abs(t), covered))
    return {
        s: (
            statistics.median(e for e, _, _ in v),
            statistics.median(t for _, t, _ in v),
            sum(1 for _, _, ok in v if ok),
        )
        for s, v in by_stat.items()
    }


# --- the run


@contextmanager
def server_county(persons: int, prefix: str = "pack-county") -> Iterator[tuple[Path, float]]:
    """A county with tax in PostgreSQL and social insurance in MariaDB; yields it and its generation time.

    Seed 11, as `bench_extract.county`: the same rows as the embedded county of that size."""
    from connectors.synth import generate_county

    out = RESULTS / f"{prefix}-{persons}"
    with ExitStack() as stack:
        tax_url = stack.enter_context(_private_database("PostgreSQL"))
        social_url = stack.enter_context(_private_database("MariaDB"))
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        generate_county(out, persons=persons, seed=11, tax_url=tax_url, social_url=social_url)
        generated = time.perf_counter() - start
        try:
            yield out, generated
        finally:
            shutil.rmtree(out, ignore_errors=True)


def _indicators_one_by_one(analyst: GatewayClient, skip: set[str]) -> list[dict[str, Any]]:
    """The pack's indicators run one by one with the pack's epsilon shares: the same queries (digests) as
    `run_pack` builds, for when the pack route cannot run one of them."""
    out = []
    items = PACKS["year_end"].params(period=PERIOD, epsilon=EPSILON, analyst="-", groups=())
    for template, params in items:
        if template.name in skip:
            continue
        out += analyst.run_indicator(template.name, period=PERIOD, epsilon=params.epsilon)["indicators"]
    return out


@contextmanager
def _federation(root: Path, label: str) -> Iterator[Federation]:
    """A fresh federation over `root`, everything pre-approved and the key groups registered.

    Fresh processes for every measurement: connectors keep roll-ups (before tokens) for
    `rollup_cache_seconds` (120 s by default) for the queries of one pack, so a pack or person query run
    right after another in the same processes would reuse the earlier one's roll-ups."""
    workdir = RESULTS / f"pack-federation-{label}"
    shutil.rmtree(workdir, ignore_errors=True)
    # The connectors' state (witnessed audit history, budgets) belongs to the previous gateway.
    shutil.rmtree(root / "state", ignore_errors=True)
    fed: Federation = start_federation(workdir, county=root, env=ENV)
    try:
        register_everything(fed, household_only=False, groups=True, analysts=("*",))  # packs: unsigned
        yield fed
    except BaseException:
        fed.stop()
        print(f"the federation's logs are kept in {workdir}")
        raise
    fed.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def _peaks(fed: Federation) -> dict[str, float]:
    peaks = {"gateway": _peak_rss_mb(fed.gateway.process.pid)}
    peaks.update({n: _peak_rss_mb(c.process.pid) for n, c in fed.connectors.items()})
    return peaks


def _fedgate(root: Path, repeats: int) -> dict[str, Any]:
    failure: str | None = None
    skipped: set[str] = set()
    pack_times: list[float] = []
    packs: list[list[dict[str, Any]]] = []
    peaks: dict[str, float] = {}
    attempt = 0
    while len(pack_times) < repeats:
        attempt += 1
        with _federation(root, f"pack-{attempt}") as fed, fed.client("analyst") as analyst:
            start = time.perf_counter()
            try:
                if failure is None:
                    answer = analyst.run_pack("year_end", period=PERIOD, epsilon=EPSILON)["indicators"]
                else:
                    answer = _indicators_one_by_one(analyst, skipped)
            except GatewayError as exc:
                if failure is not None or exc.code != "connector_error":
                    raise
                # Which query failed, and why, is in the gateway's audit log and the connectors' logs.
                failure = f"{exc.status} {exc.code}: {exc.message}"
                skipped = {COVERAGE}
                continue
            pack_times.append(time.perf_counter() - start)
            packs.append(answer)
            peaks = {k: max(v, peaks.get(k, 0.0)) for k, v in _peaks(fed).items()}
    person_times, persons = [], []
    for i in range(repeats):
        with _federation(root, f"person-{i}") as fed, fed.client("analyst") as analyst:
            qid = analyst.submit(person_query(i))["id"]
            start = time.perf_counter()
            persons.append(analyst.run(qid)["result"]["release"])
            person_times.append(time.perf_counter() - start)
    return {
        "pack_times": pack_times,
        "packs": packs,
        "analysts": ["analyst"] * repeats,
        "failure": failure,
        "skipped": skipped,
        "person_times": person_times,
        "persons": persons,
        "peaks": peaks,
    }


def run(quick: bool) -> list[BenchResult]:
    persons = 20_000 if quick else 200_000
    repeats = 2 if quick else 3
    m: dict[str, Any] = {"persons": persons, "repeats": repeats}
    with server_county(persons) as (root, generated):
        m["generated"] = generated
        shutil.rmtree(root / "state", ignore_errors=True)
        fed = _fedgate(root, repeats)
        m["fed"] = fed
        # The central party plans from the connectors' configurations, not from the gateway.
        cat = catalog(root)
        stores = Stores(root)
        try:
            central_all, central_same = [], []
            exact: list[IndicatorResult] = []
            for i in range(repeats):
                central = Central(stores, cat)
                start = time.perf_counter()
                result, per_indicator = central.pack(pack_items(fed["analysts"][i], EPSILON))
                central_all.append(time.perf_counter() - start)
                central_same.append(sum(v for k, v in per_indicator.items() if k not in fed["skipped"]))
                if i == 0:
                    exact = result
                    m["breakdown"] = dict(central.seconds)
                    m["per_indicator"] = per_indicator
                    m["roll_ups"], m["extracts"] = len(central.cache), central.extracts
            m["central_all"], m["central_same"] = central_all, central_same
            person_central = []
            for i in range(repeats):
                central = Central(stores, cat)
                start = time.perf_counter()
                m["person_exact"] = central.release(person_query(i))
                person_central.append(time.perf_counter() - start)
            m["person_central"] = person_central
            # Which members a member cap keeps depends on the query's tokens; the DP error is measured
            # against the exact release under the very tokens fedgate used (same query id, epoch 1).
            m["person_token_exact"] = [token_exact(stores, cat, person_query(i)) for i in range(repeats)]
            start = time.perf_counter()
            dp_in_process, m["in_process"] = in_process_pack(stores, cat, pack_items("analyst", EPSILON))
            m["in_process_total"] = time.perf_counter() - start
        finally:
            stores.close()
        m["truth"] = truth_check(root, exact)
    rows = figure_errors(fed["packs"], exact)
    # An indicator fedgate could not run end to end is compared from the in-process DP run (same queries,
    # same release code, real tokens and noise) instead, and marked so.
    extra = [r.model_dump(mode="json") for r in dp_in_process if r.indicator in fed["skipped"]]
    rows += [{**r, "source": "in process"} for r in figure_errors([extra], exact)]
    m["summary"] = error_summary(rows)
    DETAIL.write_text(json.dumps({**m, "figures": rows}, indent=1, default=str) + "\n")
    return _results(m)


def _results(m: Mapping[str, Any]) -> list[BenchResult]:
    persons, repeats, fed = m["persons"], m["repeats"], m["fed"]
    at = f"{persons:,} persons (tax PostgreSQL, social MariaDB)"
    fed_median, fed_spread = summarize(fed["pack_times"])
    all_median, all_spread = summarize(m["central_all"])
    same_median, same_spread = summarize(m["central_same"])
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in m["breakdown"].items())
    inner = ", ".join(f"{k} {v:.2f} s" for k, v in m["in_process"].items())
    per = ", ".join(f"{k} {v:.2f} s" for k, v in m["per_indicator"].items())
    ran = "the whole pack (run_pack)"
    if fed["failure"]:
        ran = (
            f"run_pack failed ({fed['failure']}); the other indicators run one by one with the pack's "
            f"epsilon shares (the same queries); not run end to end: {', '.join(sorted(fed['skipped']))}"
        )
    out = [
        BenchResult(
            "pack", "county generated into the servers", m["generated"], "s", None, at + "; not timed"
        ),
        BenchResult(
            "pack",
            "fedgate monthly pack, end to end",
            fed_median,
            "s",
            fed_spread,
            f"{at}; {ran}; median of {repeats}",
        ),
        BenchResult(
            "pack",
            "centralized exact pack, all six indicators",
            all_median,
            "s",
            all_spread,
            f"{m['roll_ups']} distinct roll-ups for {m['extracts']} extracts; first run: {parts}; {per}",
        ),
        BenchResult(
            "pack",
            "centralized exact, the indicators fedgate ran",
            same_median,
            "s",
            same_spread,
            "the same sum over the indicators timed end to end",
        ),
        BenchResult(
            "pack", "ratio fedgate / centralized (pack)", fed_median / same_median, "x", None, "target <= 1.5"
        ),
        BenchResult(
            "pack",
            "in process, all six, per query (tokens, DP; no HTTP)",
            m["in_process_total"],
            "s",
            None,
            f"one run: {inner}",
        ),
    ]
    peaks = dict(fed["peaks"])
    gateway = peaks.pop("gateway")
    largest = max(peaks, key=lambda n: peaks[n])
    out += [
        BenchResult(
            "pack", "gateway peak RSS", gateway, "MiB", None, "VmHWM after the packs and person queries"
        ),
        BenchResult(
            "pack",
            "largest connector peak RSS",
            peaks[largest],
            "MiB",
            None,
            f"{largest}; all five together {sum(peaks.values()):.0f} MiB",
        ),
    ]
    for s in m["summary"]:
        runs = "1 in-process run" if s["indicator"] in fed["skipped"] else f"{repeats} runs"
        out.append(
            BenchResult(
                "pack",
                f"error {s['indicator']}: {s['figure']}, {s['level']}",
                s["median_abs_error"],
                s["unit"],
                None,
                f"median |DP - exact| over {s['usable']} figures ({runs}); median |exact| "
                f"{s['median_abs_exact']:.4g}; max {s['max_abs_error']:.4g}; 95% intervals cover exact: "
                f"{s['coverage']:.0%} of {s['intervals']}",
            )
        )
    truth = m["truth"]
    out += [
        BenchResult(
            "pack",
            "exact band shares vs truth.json as_linked",
            truth["share_max_abs_diff"],
            "share",
            None,
            f"largest |exact - truth| over {int(truth['shares_compared'])} shares (county, urban, rural, "
            "villages)",
        ),
        BenchResult(
            "pack",
            "exact per-capita income vs truth.json as_linked",
            truth["per_capita_max_rel_diff"],
            "relative",
            None,
            "largest |exact / truth - 1| over county, urban, rural",
        ),
        BenchResult(
            "pack",
            "exact urban-rural ratio vs truth.json as_linked",
            truth["ratio_rel_diff"],
            "relative",
            None,
            f"exact {truth['ratio_exact']:.4f}, truth {truth['ratio_truth']:.4f}",
        ),
    ]
    p_median, p_spread = summarize(fed["person_times"])
    c_median, c_spread = summarize(m["person_central"])
    note = f"{persons:,} persons; count + sum of wages by birth decade, member_cap 2, epsilon 0.5"
    out += [
        BenchResult("pack", "person query (tax only), end to end", p_median, "s", p_spread, note),
        BenchResult("pack", "person query, centralized exact", c_median, "s", c_spread, note),
        BenchResult("pack", "ratio fedgate / centralized (person query)", p_median / c_median, "x", None, ""),
    ]
    errors: dict[str, list[tuple[float, float, int]]] = {}
    cells = 0
    for release, exact in zip(fed["persons"], m["person_token_exact"], strict=True):
        cells = sum(1 for c in release["cells"] if c["statistic"] == "count")
        for stat, v in cell_errors(release, exact).items():
            errors.setdefault(stat, []).append(v)
    for stat, values in errors.items():
        covered = sum(v[2] for v in values)
        out.append(
            BenchResult(
                "pack",
                f"person query error: {stat}",
                statistics.median(v[0] for v in values),
                "persons" if stat == "count" else "yuan",
                None,
                f"median over {len(values)} runs of the median |DP - exact| per cell ({cells} cells, exact "
                f"under fedgate's tokens); median |exact| {statistics.median(v[1] for v in values):.4g}; "
                f"intervals cover exact: {covered} of {cells * len(values)}",
            )
        )
    # The central party's exact answer keeps other members where a household has more than member_cap.
    token = {
        json.dumps(c["groups"], sort_keys=True): c["value"]
        for c in m["person_token_exact"][0]["cells"]
        if c["statistic"] == "count"
    }
    central = {
        json.dumps(c["groups"], sort_keys=True): c["value"]
        for c in m["person_exact"]["cells"]
        if c["statistic"] == "count"
    }
    out.append(
        BenchResult(
            "pack",
            "person query: central vs token exact, count",
            max(abs(token[k] - central.get(k, 0)) for k in token),
            "persons",
            None,
            f"largest |difference| per cell; totals {sum(token.values()):,} and {sum(central.values()):,}: "
            "which members the cap keeps in a household of more than member_cap differs with the join keys "
            "(tokens vs IDs)",
        )
    )
    return out
