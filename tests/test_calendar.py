"""The default monitoring calendar from public parameters: what each pack reads, what it charges each
data year, and the rolling 12-month figures derived from the monthly increments (post-processing)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from aggregation.data_years import query_data_years
from aggregation.indicators import IndicatorError
from aggregation.indicators.config_file import parse_monitoring_config
from aggregation.indicators.early_warning import baseline_of
from aggregation.indicators.pack import (
    MONTHLY,
    MONTHLY_INCOME_LOWER,
    MONTHLY_INCOME_SUM_UPPER,
    YEAR_END,
    calendar_charges,
    calendar_runs,
)
from aggregation.indicators.periods import previous_months
from aggregation.indicators.rolling import rolling_urban_rural
from aggregation.indicators.urban_rural import INCOME, MEMBERS
from aggregation.query import MemberGroup
from connectors.synth.monitoring import monitoring_config
from gateway.dev.seed_groups import SEED_GROUPS
from gateway.settings import GatewaySettings

CONFIG = parse_monitoring_config(monitoring_config())
GROUPS: tuple[MemberGroup, ...] = tuple(g.definition for g in SEED_GROUPS)


def test_one_data_year_of_the_default_calendar_fits_its_default_budget() -> None:
    cap = GatewaySettings().data_year_epsilon
    planned = calendar_charges(2025, CONFIG, GROUPS)
    # 12 monthly packs x 0.7 + the year-end pack 1 + next January's early warning (0.3 of 0.7).
    assert planned == Decimal("12") * Decimal("0.7") + Decimal(1) + Decimal("0.21") == Decimal("9.61")
    assert planned <= cap
    assert MONTHLY.default_epsilon is not None
    assert planned + MONTHLY.default_epsilon > cap, "a thirteenth monthly pack would still fit"
    # The same whatever the number of key groups: they split the year-end pack's key-group share.
    assert calendar_charges(2025, CONFIG, GROUPS[:1]) == planned
    # What reads 2025: its twelve monthly packs, its year-end pack, and January 2026's early warning.
    runs = [(p.name, period) for p, period in calendar_runs(2025)]
    assert runs == [("monthly", f"2025-{m:02d}") for m in range(1, 13)] + [
        ("year_end", "2025-12"),
        ("monthly", "2026-01"),
    ]


def test_the_monthly_pack_reads_its_month_and_the_early_warning_the_month_before() -> None:
    assert MONTHLY.default_epsilon is not None
    members = MONTHLY.params(period="2025-07", epsilon=MONTHLY.default_epsilon, analyst="ana", groups=GROUPS)
    assert [t.name for t, _ in members] == ["urban_rural_ratio", "coverage", "early_warning"]
    for template, params in members:
        assert (params.period_start, params.period_end) == ("2025-07", "2025-07")
        for q in template.queries(params, MONTHLY.config_for(template.name, CONFIG)):
            assert query_data_years(q.spec) == ("2025",)
            if template.name == "urban_rural_ratio" and q.role == INCOME:
                assert q.spec.measure is not None
                assert (q.spec.measure.lower, q.spec.measure.upper) == (
                    MONTHLY_INCOME_LOWER,
                    MONTHLY_INCOME_SUM_UPPER,
                )
    (warning,) = [p for t, p in members if t.name == "early_warning"]
    base = baseline_of(warning, CONFIG)
    assert (base.period_start, base.period_end) == ("2025-06", "2025-06")
    january = MONTHLY.params(period="2025-01", epsilon=Decimal("0.7"), analyst="ana", groups=())
    (template, params) = january[-1]
    years = {query_data_years(q.spec) for q in template.queries(params, CONFIG)}
    assert years == {("2024", "2025")}
    # Only the monthly sums use the monthly bounds; the pack's policy is otherwise unchanged.
    assert MONTHLY.config_for("coverage", CONFIG) is CONFIG


def test_the_year_end_pack_reads_one_data_year_and_only_in_december() -> None:
    members = YEAR_END.params(period="2025-12", epsilon=Decimal(1), analyst="ana", groups=GROUPS)
    assert sum((p.epsilon for _, p in members), Decimal(0)) == Decimal(1)
    years = {query_data_years(q.spec) for t, p in members for q in t.queries(p, CONFIG)}
    assert years == {("2025",)}
    with pytest.raises(IndicatorError) as info:
        YEAR_END.params(period="2025-11", epsilon=Decimal(1), analyst="ana", groups=GROUPS)
    assert info.value.field == "period" and "YYYY-12" in info.value.message


def test_previous_months() -> None:
    assert previous_months("2025-03", 3) == ["2024-12", "2025-01", "2025-02"]
    assert previous_months("2025-12", 11)[0] == "2025-01"
    with pytest.raises(IndicatorError):
        previous_months("0000-02", 3)


def _release(role_values: dict[str, float], scale: float) -> dict[str, Any]:
    key = CONFIG.urban_rural
    return {
        "group_names": [key],
        "scales": {"sum": scale},
        "cells": [
            {"statistic": "sum", "groups": {key: code}, "value": value} for code, value in role_values.items()
        ],
    }


def test_rolling_figures_add_the_monthly_sums_and_average_the_members() -> None:
    months = []
    for i, ref in enumerate([*previous_months("2025-12", 11), "2025-12"]):
        income = {"111": 1_000.0 * (i + 1), "220": 400.0, "None": 0.0}
        members = {"111": 10.0 + (i % 2), "220": 8.0, "None": 0.0}
        months.append((ref, [], {INCOME: _release(income, 1e-6), MEMBERS: _release(members, 1e-6)}))
    result = rolling_urban_rural(CONFIG, months, seed=1)
    figures = {(f.figure, f.group): f for f in result.figures}
    urban_income, rural_income = 1_000.0 * sum(range(1, 13)), 400.0 * 12
    urban, rural = urban_income / 10.5, rural_income / 8
    assert figures["per_capita_income", "urban"].value == pytest.approx(urban)
    assert figures["per_capita_income", "rural"].value == pytest.approx(rural)
    assert figures["per_capita_income", "county"].value == pytest.approx((urban_income + rural_income) / 18.5)
    ratio = figures["urban_rural_ratio", "county"]
    assert ratio.value == pytest.approx(urban / rural)
    assert ratio.low == pytest.approx(urban / rural) and ratio.high == pytest.approx(urban / rural)
    assert (result.period_start, result.period_end, result.epsilon) == ("2025-01", "2025-12", "0")
    # With real noise the interval widens around the same point value.
    noisy_income = _release({"111": 1e4, "220": 400.0}, 50.0)
    noisy_members = _release({"111": 10.0, "220": 8.0}, 0.5)
    noisy = [(ref, [], {INCOME: noisy_income, MEMBERS: noisy_members}) for ref, _, _ in months]
    wide = {(f.figure, f.group): f for f in rolling_urban_rural(CONFIG, noisy, seed=1).figures}
    point = wide["urban_rural_ratio", "county"]
    assert point.low is not None and point.high is not None
    assert point.low < point.value < point.high
    # A rural figure the noise cannot tell from 0: the ratio is undefined, with the reason.
    faint = _release({"111": 1e4, "220": 1.0}, 5_000.0)
    unclear = [(ref, [], {INCOME: faint, MEMBERS: noisy_members}) for ref, _, _ in months]
    result = rolling_urban_rural(CONFIG, unclear, seed=1)
    ratio = next(f for f in result.figures if f.figure == "urban_rural_ratio")
    assert (ratio.value, ratio.low, ratio.high) == (None, None, None)
    assert any("undefined" in n for n in result.notes)
    with pytest.raises(ValueError, match="12 monthly"):
        rolling_urban_rural(CONFIG, months[1:], seed=1)


def test_the_library_lists_each_pack_with_its_calendar_epsilon_and_months() -> None:
    from gateway.api.indicators import library

    packs = {p.name: p for p in library(None).packs}
    assert (packs["monthly"].default_epsilon, packs["monthly"].runs_for) == ("0.7", "every month")
    assert (packs["year_end"].default_epsilon, packs["year_end"].runs_for) == ("1", "December only")
    assert [m.months for m in packs["monthly"].members] == ["the reference month"] * 3
