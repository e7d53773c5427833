"""The truth file's monthly monitoring pack: its copies of the public definitions equal the monitoring
configuration the generator writes for the gateway (read through the gateway's own schema), and every
figure of the pack evaluated exactly (no noise) over a generated county equals the truth file's value for
the same (indicator, figure, label, group).

The truth is computed from the generator's records; the exact evaluation runs the real extracts, token
joins, household roll-ups and OpenDP releases with an epsilon so large that no noise is drawn. Counts,
shares, coverage, per-capita income, the ratio and early warning must agree to 1e-9; the distribution's
figures come from a binned histogram, so they agree within its documented binning error.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import indicator_fixture as fx
import numpy as np
import pytest

from aggregation.indicators import PACKS, MonitoringConfig, evaluate
from aggregation.indicators import pack as pack_module
from aggregation.indicators.config_file import load_monitoring_config
from aggregation.indicators.early_warning import baseline_of
from aggregation.indicators.income_distribution import PROBS
from aggregation.query import MemberGroup
from connectors.config import load_config
from connectors.service import ConnectorService, build_service
from connectors.synth import generate_county
from connectors.synth import truth as synth_truth
from connectors.synth.geography import URBAN_RURAL, is_urban
from gateway.dev.seed_groups import SEED_GROUPS
from privacy.intervals import histogram_boundaries

CONNECTORS = ("register", "tax", "social", "utility", "civil")
PERIOD = "2025-12"
GROUPS = tuple(g.definition for g in SEED_GROUPS)
Key = tuple[str, str, str]

# Figures read from the lorenz histogram: compared within the binning error, not exactly.
DISTRIBUTION = "income_distribution"
GINI_TOLERANCE = 0.01
QUINTILE_TOLERANCE = 0.01
MEAN_RELATIVE = 0.01


# truth.py constant -> the MonitoringConfig field it copies
MIRRORED = {
    "INCOME_LOWER": "income_lower",
    "INCOME_UPPER": "income_upper",
    "INCOME_SUM_UPPER": "income_sum_upper",
    "DISTRIBUTION_LOWER": "distribution_lower",
    "DISTRIBUTION_UPPER": "distribution_upper",
    "PER_CAPITA_LOWER": "per_capita_lower",
    "PER_CAPITA_UPPER": "per_capita_upper",
    "SIZE_CAP": "size_cap",
    "PACK_BANDS": "bands",
    "COVERAGE_DATASETS": "coverage_datasets",
    "DROP_SHARE": "drop_share",
}


County = tuple[dict[str, ConnectorService], dict[str, Any], MonitoringConfig]


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> County:
    out: Path = tmp_path_factory.mktemp("pack-truth")
    summary = generate_county(out, persons=4_000, seed=23)
    services = {n: build_service(load_config(out / "connectors" / f"{n}.yaml")) for n in CONNECTORS}
    config = load_monitoring_config(summary.monitoring)
    return services, json.loads(summary.truth.read_text(encoding="utf-8")), config


def test_the_truth_copies_the_pack_definitions_exactly(county: County) -> None:
    t = synth_truth
    _, _, config = county
    for constant, field in MIRRORED.items():
        assert getattr(t, constant) == getattr(config, field), (constant, field)
    terms = tuple((x.dataset, x.measure, x.sign) for x in config.income_terms)
    assert terms == t.INCOME_TERMS
    assert tuple(g.name for g in t.KEY_GROUPS) == config.key_group_names
    configured = tuple(g.definition for g in config.key_groups)
    assert tuple(MemberGroup(**dataclasses.asdict(g)) for g in t.KEY_GROUPS) == configured == GROUPS
    assert t.QUANTILE_PROBS == PROBS
    assert all(is_urban(code) == config.is_urban(code) for code in URBAN_RURAL)
    # The pack's split is the pack's own: the truth does not depend on it, but the file states none.
    assert config.pack_shares is None
    assert (t.ANNUAL_MONTHS, t.WARNING_MONTHS) == (pack_module.ANNUAL_MONTHS, pack_module.WARNING_MONTHS)
    # The periods the pack gives its members for the reference month, and early warning's baseline.
    members = PACKS["monthly"].params(period=PERIOD, epsilon=Decimal(1), analyst="t", groups=GROUPS)
    periods = {m.months for m in PACKS["monthly"].members}
    assert periods == {t.ANNUAL_MONTHS, t.WARNING_MONTHS}
    for template, params in members:
        if template.name == "early_warning":
            base = baseline_of(params, config)
            assert (params.period_start, params.period_end) == ("2025-10", PERIOD)
            assert (base.period_start, base.period_end) == ("2025-07", "2025-09")
        else:
            assert (params.period_start, params.period_end) == ("2025-01", PERIOD)


def _truth_figures(pack: dict[str, Any]) -> dict[str, dict[Key, float | None]]:
    out: dict[str, dict[Key, float | None]] = {}
    for indicator, figures in pack["indicators"].items():
        keyed = {(f["figure"], f["label"], f["group"]): f["value"] for f in figures}
        assert len(keyed) == len(figures), f"{indicator}: a figure key repeats"
        out[indicator] = keyed
    return out


def _bin_width(key: Key, value: float, config: MonitoringConfig) -> float:
    """Width of the lorenz bin `value` falls in (quantiles are read linearly inside a bin)."""
    if key[1] == "household income":
        bounds = histogram_boundaries(
            config.household_edges, config.distribution_lower, config.distribution_upper
        )
    else:
        bounds = histogram_boundaries(
            config.per_capita_edges, config.per_capita_lower, config.per_capita_upper
        )
    j = int(np.clip(np.searchsorted(bounds, value, side="right") - 1, 0, len(bounds) - 2))
    return float(bounds[j + 1] - bounds[j])


def _check(
    indicator: str, key: Key, exact: float | None, truth: float | None, config: MonitoringConfig
) -> str | None:
    """None if the exact figure matches the truth, else what differs."""
    if truth is None:
        # A share over no households: the templates floor the denominator at 1, so they show 0.
        return None if exact in (None, 0.0) else f"truth has no value, exact {exact}"
    if exact is None:
        return f"exact has no value, truth {truth}"
    figure = key[0]
    if indicator == DISTRIBUTION:
        if figure.startswith("P"):
            tolerance = _bin_width(key, truth, config)
        elif figure == "gini":
            tolerance = GINI_TOLERANCE
        elif figure.startswith("quintile"):
            tolerance = QUINTILE_TOLERANCE
        else:
            tolerance = MEAN_RELATIVE * abs(truth)
    else:
        tolerance = 1e-9 * max(1.0, abs(truth))
    return None if abs(exact - truth) <= tolerance else f"exact {exact}, truth {truth} (±{tolerance:g})"


def test_every_exact_figure_of_the_pack_equals_the_truth(county: County) -> None:
    services, doc, config = county
    truth = _truth_figures(doc["as_linked"]["monthly_pack"])
    assert doc["as_linked"]["monthly_pack"]["period"] == PERIOD
    members = PACKS["monthly"].params(period=PERIOD, epsilon=Decimal(1), analyst="t", groups=GROUPS)
    assert {t.name for t, _ in members} == set(truth)
    wrong: list[str] = []
    for template, params in members:
        queries = template.queries(params, config)
        releases = fx.release(queries, services, fx.frames(queries, services), exact=True)
        result = evaluate(template, params, config, queries, releases)
        exact = {f.key: f.value for f in result.figures}
        expected = truth[template.name]
        assert set(exact) == set(expected), (
            template.name,
            sorted(set(exact) ^ set(expected)),
        )
        for key, value in exact.items():
            problem = _check(template.name, key, value, expected[key], config)
            if problem is not None:
                wrong.append(f"{template.name} {key}: {problem}")
    assert not wrong, "\n".join(wrong)


def test_the_pack_truth_is_not_vacuous(county: County) -> None:
    """The comparison above means something: every kind of figure has real, non-trivial values."""
    _, doc, _ = county
    linked = _truth_figures(doc["as_linked"]["monthly_pack"])
    raw = _truth_figures(doc["raw"]["monthly_pack"])
    assert {k: set(v) for k, v in raw.items()} == {k: set(v) for k, v in linked.items()}
    villages = set(doc["as_linked"]["households_by_village"])
    for indicator in ("income_bands", "coverage", "key_groups", "early_warning"):
        groups = {g for _, _, g in linked[indicator]}
        assert villages <= groups, indicator
    county_of = {k: v for k, v in linked["key_groups"].items() if k[0] == "households" and k[2] == "county"}
    assert len(county_of) == len(GROUPS) and all(isinstance(v, int) and v > 0 for v in county_of.values())
    warning = linked["early_warning"]
    assert (warning[("households_fell", "income fell by more than 30%", "county")] or 0) > 0
    assert (warning[("households_no_baseline", "no income in 2025-07..2025-09", "county")] or 0) > 0
    coverage = linked["coverage"][("coverage", "persons with an income record", "county")]
    assert coverage is not None and 0.5 < coverage < 1
    # Dropped records and clipped roll-ups make the as-linked pack differ from the raw one.
    assert linked["coverage"] != raw["coverage"]
    assert linked["income_bands"][("share", "100k–500k", "county")] == pytest.approx(
        doc["as_linked"]["share_income_100k_500k"]["county"], abs=1e-12
    )
