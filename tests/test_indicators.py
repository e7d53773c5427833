"""The indicator library: post-processing on fixed noisy inputs, the new query features on hand-made
extracts, exact values against the county's truth file, interval coverage over repeated releases, and
exact epsilon splits."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import binomial
import indicator_fixture as fx
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregation.executor import VALUE, unit_frame
from aggregation.indicators import (
    INDICATORS,
    PACKS,
    IndicatorError,
    IndicatorParams,
    evaluate,
)
from aggregation.indicators.income_bands import band_edges, bands_of
from aggregation.indicators.model import split_epsilon
from aggregation.planner import PlanError, plan_query
from aggregation.query import (
    COVERED,
    INCOME_TREND,
    Baseline,
    Measure,
    QuerySpec,
    Statistic,
    StatisticKind,
    Term,
)
from connectors.config import Unit, load_config
from connectors.protocol import BASELINE_SUFFIX, HOUSEHOLD_TOKEN_COLUMN, TOKEN_COLUMN
from connectors.service import ConnectorService, build_service
from connectors.synth import generate_county
from gateway.dev.seed_groups import SEED_GROUPS, synthetic_config
from privacy.intervals import sample_noise
from privacy.inversion import noise_half_width

CONNECTORS = ("register", "tax", "social", "utility", "civil")
CONFIG = synthetic_config()
TINY = 1e-9  # a noise scale that draws nothing: post-processing on fixed inputs is deterministic


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ConnectorService]:
    out = tmp_path_factory.mktemp("indicators")
    generate_county(out, persons=4_000, seed=11)
    return {n: build_service(load_config(out / "connectors" / f"{n}.yaml")) for n in CONNECTORS}


def _params(**changes: Any) -> IndicatorParams:
    base = {"period_start": "2025-01", "period_end": "2025-12", "epsilon": Decimal(1), "analyst": "ana"}
    return IndicatorParams(**{**base, **changes})


def _release(
    group_names: tuple[str, ...], statistic: str, cells: dict[tuple[Any, ...], float], **scales: float
):
    """A stored release in the shape the gateway keeps, with fixed noisy values."""
    return {
        "group_names": list(group_names),
        "scales": scales,
        "cells": [
            {"groups": dict(zip(group_names, key, strict=True)), "statistic": statistic, "value": value}
            for key, value in cells.items()
        ],
    }


def _figures(name: str, params: IndicatorParams, releases: dict[str, Any]) -> dict[tuple[str, str, str], Any]:
    template = INDICATORS[name]
    result = evaluate(template, params, CONFIG, template.queries(params, CONFIG), releases)
    return {f.key: f for f in result.figures}


# --- post-processing on fixed noisy inputs ------------------------------------------------------------


def test_urban_rural_ratio_from_fixed_noisy_sums() -> None:
    ur = (CONFIG.urban_rural,)
    income = _release(
        ur, "sum", {("111",): 1000, ("121",): 500, ("210",): 300, ("220",): 100, (None,): 0}, sum=TINY
    )
    members = _release(ur, "sum", {("111",): 10, ("121",): 5, ("210",): 8, ("220",): 2, (None,): 0}, sum=TINY)
    figs = _figures("urban_rural_ratio", _params(), {"income_sum": income, "members_sum": members})
    label = "per-capita disposable income"
    # urban (1xx): 1500 / 15; rural (2xx): 400 / 10; county: 1900 / 25; ratio 100 / 40.
    assert figs[("per_capita_income", label, "urban")].value == pytest.approx(100.0)
    assert figs[("per_capita_income", label, "rural")].value == pytest.approx(40.0)
    assert figs[("per_capita_income", label, "county")].value == pytest.approx(76.0)
    ratio = figs[("urban_rural_ratio", "urban / rural per-capita income", "county")]
    assert ratio.value == pytest.approx(2.5)
    assert ratio.low == pytest.approx(2.5) and ratio.high == pytest.approx(2.5)


def test_coverage_from_fixed_noisy_counts() -> None:
    names = (CONFIG.village, COVERED)
    counts = {("v1", "1"): 80, ("v1", "0"): 20, ("v2", "1"): 30, ("v2", "0"): 70, ("v2", None): 9}
    county = {("1",): 107, ("0",): -3, (None,): 5}
    releases = {
        "persons": _release(names, "count", counts, count=TINY),
        "county": _release((COVERED,), "count", county, count=TINY),
    }
    figs = _figures("coverage", _params(), releases)
    label = "persons with an income record"
    assert figs[("coverage", label, "v1")].value == pytest.approx(0.8)
    assert figs[("coverage", label, "v2")].value == pytest.approx(
        0.3
    )  # the structurally empty cell is left out
    # County-wide from its own release: a negative count clips to 0, the empty "other" cell is left out.
    assert figs[("coverage", label, "county")].value == pytest.approx(1.0)


def test_early_warning_from_fixed_noisy_counts() -> None:
    names = (CONFIG.village, INCOME_TREND)
    counts = {
        ("v1", "fell"): 5,
        ("v1", "not_fell"): 45,
        ("v1", "no_baseline_income"): 10,
        ("v2", "fell"): -2,
        ("v2", "not_fell"): 20,
        ("v2", "no_baseline_income"): 3,
    }
    county = {("fell",): 4, ("not_fell",): 76, ("no_baseline_income",): 12, (None,): 3}
    params = _params(period_start="2025-10")
    releases = {
        "trend": _release(names, "count", counts, count=TINY),
        "county": _release((INCOME_TREND,), "count", county, count=TINY),
    }
    by = {(k[0], k[2]): f.value for k, f in _figures("early_warning", params, releases).items()}
    assert by[("households_fell", "v1")] == 5 and by[("share_fell", "v1")] == pytest.approx(0.1)
    assert by[("households_fell", "v2")] == 0 and by[("share_fell", "v2")] == 0  # clipped at 0
    assert by[("households_fell", "county")] == 4  # from the county-wide release
    assert by[("households_no_baseline", "county")] == 12
    assert by[("share_fell", "county")] == pytest.approx(4 / 80)


def test_key_group_counts_add_raw_bins() -> None:
    group = SEED_GROUPS[0].definition
    labels = ["<100000", "[100000,200000)", "[200000,500000)", "[500000,600000)", ">=600000"]

    def histogram(rows: dict[str | None, list[int]], grouped: bool) -> dict[str, Any]:
        cells = [
            {
                "groups": {CONFIG.village: village} if grouped else {},
                "statistic": "histogram",
                "bin": label,
                "value": value,
            }
            for village, bins in rows.items()
            for label, value in zip(labels, bins, strict=True)
        ]
        names = [CONFIG.village] if grouped else []
        return {"group_names": names, "scales": {"histogram": TINY}, "cells": cells}

    villages = histogram({"v1": [10, 5, 3, -1, 0], "v2": [-2, 1, 0, 0, 1], None: [0, 0, 0, 0, 0]}, True)
    county = histogram({None: [12, 6, 2, 1, -1]}, False)
    releases = {f"group:{group.name}": villages, f"group:{group.name}:county": county}
    figs = _figures("key_groups", _params(groups=(group,)), releases)
    assert figs[("households", group.name, "v1")].value == 17
    assert figs[("households", group.name, "v2")].value == 0  # raw -2 + 1 + 1, clipped at the end
    assert figs[("households", group.name, "county")].value == 20  # from the county-wide release
    # 100k–500k among v1's households: raw bins added up, clipped only then: (5 + 3) / (10 + 5 + 3 - 1 + 0).
    assert figs[("share 100k–500k", group.name, "v1")].value == pytest.approx(8 / 17)
    assert figs[("share 100k–500k", group.name, "county")].value == pytest.approx(8 / 20)


# --- the query features indicators rely on, on hand-made extracts ---------------------------------------


def _tok(i: int) -> bytes:
    return i.to_bytes(16, "big")


def test_members_term_per_capita_and_income_trend_on_hand_made_extracts(
    services: dict[str, ConnectorService],
) -> None:
    catalog = {n: s.schema for n, s in services.items()}
    terms = (Term(dataset="tax.wages", measure="wage_income"),)
    query = QuerySpec(
        purpose="hand-made extracts for the executor",
        unit=Unit.HOUSEHOLD,
        period_start="2025-07",
        period_end="2025-12",
        measure=Measure(terms=terms, lower=0, upper=1_000_000),
        baseline=Baseline(period_start="2025-01", period_end="2025-06", drop_share=Decimal("0.3")),
        group_by=(INCOME_TREND,),
        statistics=(Statistic(kind=StatisticKind.COUNT),),
        epsilon=Decimal(1),
    )
    plan = plan_query(query, catalog)
    wages = next(e for e in plan.extracts if e.ref == "tax.wages")
    assert wages.baseline and not next(e for e in plan.extracts if e.ref == "register.persons").baseline
    register = pa.table(
        {
            TOKEN_COLUMN: [_tok(i) for i in range(1, 8)],
            HOUSEHOLD_TOKEN_COLUMN: [_tok(100 + h) for h in (1, 1, 2, 3, 3, 3, 4)],
        }
    )
    # Household 1: 60 now against 100 before (fell, below 70); 2: 70 against 100 (not fell: not below 70);
    # 3: no baseline income; 4: no wage rows at all (no baseline income either).
    tax = pa.table(
        {
            TOKEN_COLUMN: [_tok(1), _tok(2), _tok(3), _tok(4), _tok(5)],
            "wage_income": pa.array([60, 0, 70, 5, 0], pa.int64()),
            "wage_income" + BASELINE_SUFFIX: pa.array([50, 50, 100, 0, 0], pa.int64()),
        }
    )
    frame = unit_frame(plan, {"register.persons": register, "tax.wages": tax})
    trend = sorted(frame[INCOME_TREND].to_list())
    assert trend == ["fell", "no_baseline_income", "no_baseline_income", "not_fell"]

    def value_for(measure: Measure) -> list[int]:
        q = query.model_copy(update={"measure": measure, "baseline": None, "group_by": ()})
        p = plan_query(q, catalog)
        return sorted(unit_frame(p, {"register.persons": register, "tax.wages": tax})[VALUE].to_list())

    members = Measure(terms=(Term(dataset="household", measure="members"),), lower=0, upper=2)
    assert value_for(members) == [1, 1, 2, 2]  # sizes 2, 1, 3, 1, the 3 clamped to the public cap 2
    per_capita = Measure(terms=terms, lower=0, upper=1_000_000, per_capita=True)
    assert value_for(per_capita) == [0, 2, 30, 70]  # 60 / 2, 70 / 1, 5 / 3 rounded, 0


def test_the_query_model_refuses_misplaced_features(services: dict[str, ConnectorService]) -> None:
    catalog = {n: s.schema for n, s in services.items()}
    members = Measure(terms=(Term(dataset="household", measure="members"),), lower=0, upper=8)
    base = {"purpose": "misplaced features", "period_start": "2025-01", "period_end": "2025-12", "epsilon": 1}
    count = (Statistic(kind=StatisticKind.COUNT),)
    with pytest.raises(ValueError, match="household queries only"):
        QuerySpec(**base, unit=Unit.PERSON, member_cap=2, measure=members, statistics=count)
    with pytest.raises(ValueError, match="pseudo-dataset"):
        Term(dataset="household", measure="size")
    with pytest.raises(ValueError, match="coverage applies to person queries"):
        QuerySpec(**base, unit=Unit.HOUSEHOLD, coverage=("tax.wages",), statistics=count)
    with pytest.raises(ValueError, match="must end before"):
        QuerySpec(
            **base,
            unit=Unit.HOUSEHOLD,
            measure=members,
            statistics=count,
            baseline=Baseline(period_start="2025-06", period_end="2025-07", drop_share=Decimal("0.2")),
        )
    with pytest.raises(PlanError, match="needs a baseline") as exc:
        plan_query(
            QuerySpec(**base, unit=Unit.HOUSEHOLD, group_by=(INCOME_TREND,), statistics=count), catalog
        )
    assert exc.value.field == "group_by.0"
    with pytest.raises(PlanError, match="coverage datasets"):
        plan_query(
            QuerySpec(
                **base,
                unit=Unit.PERSON,
                member_cap=2,
                group_by=(COVERED,),
                statistics=count,
                measure=members.model_copy(
                    update={"terms": (Term(dataset="tax.wages", measure="wage_income"),)}
                ),
            ),
            catalog,
        )


# --- exact values against the county's truth file -------------------------------------------------------


def test_exact_bands_per_capita_and_ratio_match_the_truth_file(services: dict[str, ConnectorService]) -> None:
    import json

    county = services["register"].loaded.path.parent.parent
    truth = json.loads((county / "truth.json").read_text())["as_linked"]
    config = CONFIG.model_copy(update={"income_sum_upper": CONFIG.income_upper})  # truth clamps no household
    for name in ("income_bands", "urban_rural_ratio"):
        template = INDICATORS[name]
        queries = template.queries(_params(), config)
        frames = fx.frames(queries, services)
        releases = fx.release(queries, services, frames, exact=True)
        figs = {f.key: f.value for f in evaluate(template, _params(), config, queries, releases).figures}
        if name == "income_bands":
            for band, key in (
                ("100k–500k", "share_income_100k_500k"),
                ("200k–600k", "share_income_200k_600k"),
            ):
                for area in ("county", "urban", "rural"):
                    assert figs[("share", band, area)] == pytest.approx(truth[key][area], abs=1e-9)
                for village, share in truth[key]["by_village"].items():
                    if share is not None:
                        assert figs[("share", band, village)] == pytest.approx(share, abs=1e-9)
        else:
            for area in ("county", "urban", "rural"):
                got = figs[("per_capita_income", "per-capita disposable income", area)]
                assert got == pytest.approx(truth["per_capita_income"][area], rel=1e-9)
            ratio = figs[("urban_rural_ratio", "urban / rural per-capita income", "county")]
            assert ratio == pytest.approx(truth["urban_rural_ratio"], rel=1e-9)


# --- interval coverage over repeated releases -------------------------------------------------------------

RUNS = 500


def _gini(values: np.ndarray) -> float:
    x = np.sort(values.astype(float))
    n = len(x)
    return float(2 * np.sum(np.arange(1, n + 1) * x) / (n * x.sum()) - (n + 1) / n)


def _smallest(frame: pl.DataFrame, column: str, k: int = 3) -> list[str]:
    """The ``k`` villages with the fewest rows in ``frame``: the small noisy cells."""
    sizes = frame.group_by(column).len().filter(pl.col(column).is_not_null()).sort("len", column)
    return [str(v) for v in sizes[column].to_list()[:k]]


def _truths(name: str, frames: dict[str, pl.DataFrame]) -> dict[tuple[str, str, str], tuple[float, bool]]:
    """The as-linked, clipped truth of headline and small-cell figures, from the exact one-row-per-unit
    frames, and whether it sits at a bound (a true 0, a share of 0 or 1; see `binomial`)."""
    village = CONFIG.village
    out: dict[tuple[str, str, str], tuple[float, bool]] = {}

    def share(mask: pl.Series) -> tuple[float, bool]:
        v = float(mask.mean())  # type: ignore[arg-type]
        return v, v in (0.0, 1.0)

    if name == "income_bands":
        v = frames["by_urban_rural"][VALUE]
        out[("share", "100k–500k", "county")] = share((v >= 100_000) & (v < 500_000))
        f = frames["by_village"]
        for code in _smallest(f, village):
            w = f.filter(pl.col(village) == code)[VALUE]
            out[("share", "200k–600k", code)] = share((w >= 200_000) & (w < 600_000))
        return out
    if name == "urban_rural_ratio":
        inc, mem, ur = frames["income_sum"], frames["members_sum"], pl.col(CONFIG.urban_rural)

        def per_capita(prefix: str) -> float:
            return (
                inc.filter(ur.str.starts_with(prefix))[VALUE].sum()
                / mem.filter(ur.str.starts_with(prefix))[VALUE].sum()
            )

        label = "per-capita disposable income"
        out[("per_capita_income", label, "urban")] = (per_capita("1"), False)
        out[("per_capita_income", label, "rural")] = (per_capita("2"), False)
        out[("per_capita_income", label, "county")] = (inc[VALUE].sum() / mem[VALUE].sum(), False)
        ratio = ("urban_rural_ratio", "urban / rural per-capita income", "county")
        out[ratio] = (per_capita("1") / per_capita("2"), False)
        return out
    if name == "income_distribution":
        h = frames["household"][VALUE].to_numpy()
        out[("gini", "household income", "county")] = (_gini(h), False)
        out[("P50", "household income", "county")] = (float(np.quantile(h, 0.5)), False)
        out[("mean", "household income", "county")] = (float(h.mean()), False)
        return out
    if name == "coverage":
        persons = frames["persons"]
        label = "persons with an income record"
        out[("coverage", label, "county")] = share(persons[COVERED] == "1")
        for code in _smallest(persons, village):
            out[("coverage", label, code)] = share(persons.filter(pl.col(village) == code)[COVERED] == "1")
        return out
    if name == "key_groups":
        county, by_village = frames["group:dibao:county"], frames["group:dibao"]
        out[("households", "dibao", "county")] = (float(county.height), False)
        v = county[VALUE]
        out[("share 100k–500k", "dibao", "county")] = share((v >= 100_000) & (v < 500_000))
        for code in _smallest(by_village, village):
            n = float(by_village.filter(pl.col(village) == code).height)
            out[("households", "dibao", code)] = (n, n == 0)
        return out
    trend = frames["trend"]
    label = "income fell by more than 30%"
    fell = trend[INCOME_TREND] == "fell"
    out[("households_fell", label, "county")] = (float(fell.sum()), False)
    with_earlier = trend.filter(pl.col(INCOME_TREND) != "no_baseline_income")[INCOME_TREND] == "fell"
    out[("share_fell", "of households with earlier income", "county")] = share(with_earlier)
    for code in _smallest(trend, village):
        n = float((trend.filter(pl.col(village) == code)[INCOME_TREND] == "fell").sum())
        out[("households_fell", label, code)] = (n, n == 0)
    return out


def _nominal(key: tuple[str, str, str], scales: dict[str, dict[str, float]], bins: int) -> float:
    """The exact coverage of a count's interval: integer noise of a small scale cannot hit 95% exactly,
    and ``noisy ± k`` covers with probability ``P(|noise| <= k)``, a little above. Shares: 95%."""
    figure, _, group = key
    if figure == "households":  # a key group's households: the sum of the histogram's bins
        scale, cells = scales["group:dibao" + (":county" if group == "county" else "")]["histogram"], bins
    elif figure in ("households_fell", "households_no_baseline"):
        scale, cells = scales["county" if group == "county" else "trend"]["count"], 1
    else:
        return 0.95
    k = noise_half_width((scale,) * cells)
    noise = sample_noise(np.random.default_rng(0), scale, (400_000, cells)).sum(axis=1)
    return float(np.mean(np.abs(noise) <= k))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_headline_intervals_cover_the_as_linked_truth(
    name: str, services: dict[str, ConnectorService]
) -> None:
    """Over repeated releases, each stated 95% interval covers the truth at a rate consistent with 95%
    over that many runs (`binomial.check`): county-wide figures and the small noisy cells of the smallest
    villages alike. The shown value always lies in its interval. The releases are the exact ones with the
    known noise added from a seeded generator (`fx.with_noise`), so the test is repeatable."""
    params = _params(groups=(SEED_GROUPS[0].definition,))
    if name == "early_warning":
        params = params.model_copy(update={"period_start": "2025-10"})
    template = INDICATORS[name]
    queries = template.queries(params, CONFIG)
    frames = fx.frames(queries, services)
    truths = _truths(name, frames)
    hits = dict.fromkeys(truths, 0)
    exact = fx.release(queries, services, frames, exact=True)
    scales = fx.scales(queries, services)
    rng = np.random.default_rng(2026)
    for _ in range(RUNS):
        releases = fx.with_noise(exact, scales, rng)
        result = evaluate(template, params, CONFIG, queries, releases)
        for f in result.figures:
            if f.key not in truths:
                continue
            if f.low is None or f.high is None:
                # An undefined ratio claims nothing (its confidence set is unbounded) and says why.
                assert f.value is None and f.note, f
                hits[f.key] += 1
                continue
            assert f.low <= f.high and (f.value is None or f.low <= f.value <= f.high), f
            hits[f.key] += f.low <= truths[f.key][0] <= f.high
    for key, n in hits.items():
        nominal = _nominal(key, scales, len(band_edges(bands_of(params, CONFIG))) + 1)
        rate = binomial.check(n, RUNS, nominal, what=str(key), at_bound=truths[key][1])
        print(f"coverage {name} {key}: {rate:.3f}")


# --- epsilon splits --------------------------------------------------------------------------------------


@given(
    total=st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10), places=6),
    weights=st.lists(st.fractions(min_value=Fraction(1, 100), max_value=5), min_size=1, max_size=8),
)
def test_an_epsilon_split_adds_up_exactly(total: Decimal, weights: list[Fraction]) -> None:
    try:
        parts = split_epsilon(total, {f"r{i}": w for i, w in enumerate(weights)})
    except IndicatorError:
        return  # too small to split at 1e-6: refused, never rounded to zero
    assert sum(parts.values(), Decimal(0)) == total
    assert all(p > 0 and p.as_tuple().exponent >= -6 for p in parts.values())


def test_the_year_end_pack_declares_its_split_and_charges_its_total() -> None:
    pack = PACKS["year_end"]
    groups = tuple(g.definition for g in SEED_GROUPS)
    for epsilon in (Decimal(1), Decimal("0.7"), Decimal("0.523457")):
        members = pack.params(period="2025-12", epsilon=epsilon, analyst="ana", groups=groups)
        assert sum((p.epsilon for _, p in members), Decimal(0)) == epsilon
        queries = [q for t, p in members for q in t.queries(p, CONFIG)]
        assert sum((q.spec.epsilon for q in queries), Decimal(0)) == epsilon
        assert len({q.spec.query_id for q in queries}) == len(queries)
    periods = {t.name: (p.period_start, p.period_end) for t, p in members}
    assert periods["income_bands"] == ("2025-01", "2025-12")
    assert periods["early_warning"] == ("2025-10", "2025-12")
    with pytest.raises(IndicatorError):
        pack.params(period="2025-12", epsilon=Decimal("0.000005"), analyst="ana", groups=groups)
    # No release of the pack may fall below the public minimum epsilon of one query.
    with pytest.raises(IndicatorError, match="public minimum"):
        pack.params(period="2025-12", epsilon=Decimal("0.005"), analyst="ana", groups=groups)


def test_periods_and_the_default_earlier_period() -> None:
    from aggregation.indicators.periods import months_before, months_ending
    from gateway.indicators import parse_period

    assert months_ending("2025-12", 12) == ("2025-01", "2025-12")
    assert months_ending("2025-02", 3) == ("2024-12", "2025-02")
    assert months_before("2025-10", "2025-12") == ("2025-07", "2025-09")
    assert months_before("2025-01", "2025-01") == ("2024-12", "2024-12")
    assert parse_period("2025-12", 3) == ("2025-10", "2025-12")
    assert parse_period("2025-03..2025-05", 12) == ("2025-03", "2025-05")
    for bad in ("2025-13", "2025-5", "2025-06..2025-01", "soon"):
        with pytest.raises(IndicatorError):
            parse_period(bad, 12)
