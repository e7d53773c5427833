"""The exact indicator values of the synthetic county, for tests and the demo (never for analysts).

Two truths are written:

* `raw`: the true county before any data-entry defect, every record counted, nothing clipped;
* `as_linked`: what a correct federation computes exactly before noise: records under invalid numbers are
  dropped, legacy and sloppy forms count for their person, each person's annual roll-up of each measure is
  clipped to the public bounds, a household is its register members whose register number is valid, and
  the floating population belongs to no household.

Both carry `monthly_pack`: every figure of the gateway's monthly monitoring pack for the reference month
{year}-12, keyed as the indicator templates key them (indicator, figure, label, group), so a demo can set
each DP figure beside its true value.

It is computed from what the generator knows it did (which persons' numbers it broke in which department),
not by any connector code. Only aggregates are written: no per-person or per-household figure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.synth.defects import DepartmentDefects
from connectors.synth.geography import COUNTY_CODE, REGION_CODES, Geography
from connectors.synth.policy import bounds
from connectors.synth.population import Population
from connectors.synth.records import Records

__all__ = [
    "ANNUAL_MONTHS",
    "BANDS",
    "COVERAGE_DATASETS",
    "DISTRIBUTION_LOWER",
    "DISTRIBUTION_UPPER",
    "DROP_SHARE",
    "INCOME_LOWER",
    "INCOME_MEASURES",
    "INCOME_SUM_UPPER",
    "INCOME_TERMS",
    "INCOME_UPPER",
    "KEY_GROUPS",
    "PACK_BANDS",
    "PER_CAPITA_LOWER",
    "PER_CAPITA_UPPER",
    "QUANTILE_PROBS",
    "SIZE_CAP",
    "WARNING_MONTHS",
    "KeyGroup",
    "build_truth",
    "write_truth",
]

# Household income bands of the county's targets, as half-open intervals [low, high) in yuan a year.
BANDS: dict[str, tuple[int, int]] = {"100k_500k": (100_000, 500_000), "200k_600k": (200_000, 600_000)}

# The disposable-income proxy as (dataset, measure, sign) terms, and measure -> (department, sign).
INCOME_TERMS: tuple[tuple[str, str, int], ...] = (
    ("tax.wages", "wage_income", 1),
    ("tax.business_income", "business_income", 1),
    ("social.pensions", "pension_income", 1),
    ("civil.assistance", "assistance_income", 1),
    ("social.contributions", "personal_contribution", -1),
)
INCOME_MEASURES: dict[str, tuple[str, int]] = {m: (d.partition(".")[0], s) for d, m, s in INCOME_TERMS}

# Which of the generator's record frames each person dataset of the federation is made from.
_DATASET_FRAMES: dict[str, str] = {
    "tax.wages": "wages",
    "tax.business_income": "business",
    "social.contributions": "contributions",
    "social.pensions": "pensions",
    "civil.assistance": "assistance",
}

# --- the monthly monitoring pack's public definitions ---------------------------------------------------
# The county's plan, the truth's own copy: `connectors.synth.monitoring` writes it into the county's
# monitoring configuration (clamps, caps, bands, coverage datasets, the drop share, the key groups), which
# the gateway's indicators are built from. The monthly pack's periods (`aggregation.indicators.pack`) and
# the quantiles of `aggregation.indicators.income_distribution` are copied too. A department installs the
# connectors package alone, so it cannot import them; tests/test_pack_truth.py checks that the file the
# gateway reads and these copies agree.
INCOME_LOWER = -200_000
INCOME_UPPER = 5_000_000
INCOME_SUM_UPPER = 1_500_000
"""upper clamp of household income in the urban-rural sums"""
DISTRIBUTION_UPPER = 2_000_000
"""upper clamp of household income in the household-income distribution"""
DISTRIBUTION_LOWER = 0
PER_CAPITA_LOWER = 0
PER_CAPITA_UPPER = 500_000
SIZE_CAP = 8
"""members counted per household (in sizes and in person counts)"""
PACK_BANDS: dict[str, tuple[int, int]] = {"100k–500k": (100_000, 500_000), "200k–600k": (200_000, 600_000)}
COVERAGE_DATASETS: tuple[str, ...] = (
    "tax.wages",
    "tax.business_income",
    "social.contributions",
    "social.pensions",
    "civil.assistance",
)
DROP_SHARE = Decimal("0.3")
ANNUAL_MONTHS = 12
"""income figures cover the twelve months ending in the reference month"""
WARNING_MONTHS = 3
"""early warning compares the three months ending in the reference month with the three before"""
QUANTILE_PROBS = (0.1, 0.5, 0.9)
_SHARE_SCALE = 10**6  # the drop share has at most six decimal places: compare in exact integers


@dataclass(frozen=True)
class KeyGroup:
    """A key group, with the fields of `aggregation.query.MemberGroup`: a person is in it when a dimension
    of theirs takes one of `values`, or when their roll-up of `measure` reaches `at_least`; with `negate`
    a household is in it when no member is."""

    name: str
    dimension: str | None = None
    values: tuple[str, ...] | None = None
    measure: str | None = None
    at_least: int | None = None
    negate: bool = False


KEY_GROUPS: tuple[KeyGroup, ...] = (
    KeyGroup("dibao", measure="civil.assistance.assistance_income", at_least=1),
    KeyGroup("fishery", dimension="social.occupations.occupation_medium", values=("5-04",)),
    KeyGroup("pensioner", measure="social.pensions.pension_income", at_least=1),
    KeyGroup("no_wage_earner", measure="tax.wages.wage_income", at_least=1, negate=True),
    # In-migrants: a register ID issued anywhere on the published region list but the county itself.
    KeyGroup(
        "migrant",
        dimension="register.persons.region_code",
        values=tuple(sorted(code for code in REGION_CODES if code != COUNTY_CODE)),
    ),
)

_Floats = npt.NDArray[np.float64]

DEFINITIONS = {
    "period": "the calendar year: months {year}-01 to {year}-12",
    "household": "the household-register household (household_no); exactly one per registered person",
    "disposable_income_proxy": (
        "per household and year: wage_income + business_income + pension_income + assistance_income "
        "- personal_contribution, summed over its members. A proxy built from what departments hold: "
        "no department holds property income (about 11% of disposable income in Zhejiang), and wages "
        "are before income tax"
    ),
    "share_income_<low>k_<high>k": "share of households whose proxy income is in [low, high) yuan a year",
    "per_capita_income": "sum of household proxy income / sum of household sizes (registered members)",
    "urban_rural_ratio": "urban per-capita income / rural per-capita income",
    "household_count": "households with at least one member counted; person_count: those members",
    "persons_seen": (
        "distinct persons in the register or any income dataset (includes the floating population, "
        "which person queries do not count: it belongs to no registered household)"
    ),
    "urban": "households in villages whose NBS urban-rural code starts with 1 (111-123); rural: 210, 220",
    "raw": "the true county before data-entry defects: all records, nothing clipped",
    "as_linked": (
        "what a correct federation must compute before noise: rows with invalid ID numbers dropped, legacy "
        "15-digit and sloppy forms merged to their person, each person's annual roll-up of each measure "
        "clipped to its public bounds, households made of the members whose register ID is valid; "
        "the floating population is in no household"
    ),
    "data_quality": "exact counts of the defects put into each department's ID columns",
    "monthly_pack": (
        "every figure of the monthly monitoring pack for the reference month, as (figure, label, group, "
        "value) per indicator, keyed as the gateway's templates key them; income over the twelve months "
        "ending in it, early warning over its last three months against the three before. as_linked "
        "applies the pack's public clamps (household income, per-capita income, members per household); "
        "raw applies none. A share over no households is null"
    ),
}


def _frame(records: Records, dataset: str) -> pd.DataFrame:
    frame: pd.DataFrame = getattr(records, _DATASET_FRAMES[dataset])
    return frame


def _components(
    records: Records,
    persons: int,
    defects: Mapping[str, DepartmentDefects] | None,
    months: tuple[int, int] = (1, 12),
) -> dict[str, _Floats]:
    """Each person's roll-up of each income measure over `months` (first, last; both included).

    With `defects` (as linked), a person's records under an invalid number in a department are dropped and
    each roll-up is clipped to the measure's public bounds, as the department's connector does.
    """
    out: dict[str, _Floats] = {}
    for dataset, measure, _sign in INCOME_TERMS:
        frame = _frame(records, dataset)
        person = frame["person"].to_numpy()
        amount = frame["amount"].to_numpy().astype(np.float64)
        if months != (1, 12):
            month = frame["month"].to_numpy()
            inside = (month >= months[0]) & (month <= months[1])
            person, amount = person[inside], amount[inside]
        total = np.bincount(person, weights=amount, minlength=persons).astype(np.float64)
        if defects is not None:
            low, high = bounds(measure)
            invalid = defects[INCOME_MEASURES[measure][0]].invalid
            total = np.where(invalid, 0.0, np.clip(total, low, high))
        out[measure] = total
    return out


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _indicators(
    geography: Geography,
    population: Population,
    member: npt.NDArray[np.bool_],
    components: Mapping[str, _Floats],
) -> dict[str, Any]:
    """County indicators over the households made of `member` persons, with per-person `components`."""
    pop = population
    h = pop.households
    people = np.flatnonzero(member)
    hh = pop.household[people]
    size = np.bincount(hh, minlength=h)
    present = size > 0
    totals = {
        name: np.bincount(hh, weights=values[people], minlength=h) for name, values in components.items()
    }
    income = sum((sign * totals[m] for m, (_, sign) in INCOME_MEASURES.items()), start=np.zeros(h))
    village = pop.household_village
    urban = geography.village_is_urban[village]
    codes = geography.village_codes.tolist()

    def per_capita(mask: npt.NDArray[np.bool_]) -> float | None:
        return _ratio(float(income[mask & present].sum()), float(size[mask & present].sum()))

    def share(low: int, high: int, mask: npt.NDArray[np.bool_]) -> float | None:
        sel = mask & present
        return _ratio(float(((income >= low) & (income < high) & sel).sum()), float(sel.sum()))

    everywhere = np.ones(h, dtype=bool)
    per_capita_all = {
        "county": per_capita(everywhere),
        "urban": per_capita(urban),
        "rural": per_capita(~urban),
    }
    urban_pc, rural_pc = per_capita_all["urban"], per_capita_all["rural"]
    result: dict[str, Any] = {
        "household_count": int(present.sum()),
        "person_count": int(size.sum()),
        "households_by_village": {
            c: int(n) for c, n in zip(codes, np.bincount(village[present], minlength=len(codes)), strict=True)
        },
        "income_totals": {name: round(float(t.sum())) for name, t in totals.items()},
        "disposable_income_total": round(float(income[present].sum())),
        "per_capita_income": per_capita_all,
        "urban_rural_ratio": _ratio(urban_pc, rural_pc) if urban_pc is not None and rural_pc else None,
    }
    for band, (low, high) in BANDS.items():
        result[f"share_income_{band}"] = {
            "county": share(low, high, everywhere),
            "urban": share(low, high, urban),
            "rural": share(low, high, ~urban),
            "by_village": {c: share(low, high, village == i) for i, c in enumerate(codes)},
        }
    return result


def build_truth(
    geography: Geography,
    population: Population,
    records: Records,
    defects: Mapping[str, DepartmentDefects],
    *,
    year: int,
    seed: int,
) -> dict[str, Any]:
    """The truth document (JSON-ready)."""
    pop = population
    n = pop.persons
    registered = np.arange(n) < pop.registered
    raw = _components(records, n, None)
    linked = _components(records, n, defects)
    valid_register = registered & ~defects["register"].invalid

    floating = np.flatnonzero(~registered)
    wage_earners = np.unique(records.wages["person"].to_numpy())
    doc: dict[str, Any] = {
        "synthetic": True,
        "year": year,
        "seed": seed,
        "registered_persons": int(pop.registered),
        "definitions": {k: v.format(year=year) if k == "period" else v for k, v in DEFINITIONS.items()},
        "bounds": {m: list(bounds(m)) for m in INCOME_MEASURES},
        "bands": {b: list(v) for b, v in BANDS.items()},
        "raw": _indicators(geography, pop, registered, raw),
        "as_linked": _indicators(geography, pop, valid_register, linked),
        "floating_population": {
            "persons": len(floating),
            "in_tax_wages": int(np.isin(floating, wage_earners).sum()),
            "in_register": 0,
        },
        "data_quality": {d: report.summary() for d, report in defects.items()},
    }
    doc["raw"]["persons_seen"] = _persons_seen(records, registered, None)
    doc["as_linked"]["persons_seen"] = _persons_seen(records, registered, defects)
    doc["raw"]["monthly_pack"] = _monthly_pack(geography, pop, records, None, year=year, annual=raw)
    doc["as_linked"]["monthly_pack"] = _monthly_pack(
        geography, pop, records, defects, year=year, annual=linked
    )
    return doc


def _persons_seen(
    records: Records, registered: npt.NDArray[np.bool_], defects: Mapping[str, DepartmentDefects] | None
) -> int:
    """Distinct persons in the register or an income dataset (person queries count only the linked ones).

    With `defects`, only the persons whose number is valid where they appear count.
    """
    seen = registered.copy()
    if defects is not None:
        seen &= ~defects["register"].invalid
    for frame, department in (
        (records.wages, "tax"),
        (records.business, "tax"),
        (records.contributions, "social"),
        (records.pensions, "social"),
        (records.assistance, "civil"),
    ):
        people = frame["person"].to_numpy()
        if defects is not None:
            people = people[~defects[department].invalid[people]]
        seen[people] = True
    return int(seen.sum())


# --- the monthly monitoring pack -------------------------------------------------------------------------

_Bools = npt.NDArray[np.bool_]
_Figure = dict[str, Any]


def _figure(figure: str, label: str, group: str, value: float | int | None) -> _Figure:
    return {"figure": figure, "label": label, "group": group, "value": value}


def _distribution(values: _Floats) -> dict[str, float | None]:
    """P10/P50/P90, mean, Gini and quintile shares of one value per household, from the values themselves.

    The quintile shares read the exact Lorenz curve (points (i/N, cumulative share of the i smallest)) at
    20%, 40%, ... linearly between its points, so N need not be a multiple of five.
    """
    n = len(values)
    out: dict[str, float | None] = {}
    quantiles = np.quantile(values, QUANTILE_PROBS) if n else [None] * len(QUANTILE_PROBS)
    for p, q in zip(QUANTILE_PROBS, quantiles, strict=True):
        out[f"P{round(p * 100)}"] = None if q is None else float(q)
    out["mean"] = float(values.mean()) if n else None
    ordered = np.sort(values)
    total = float(ordered.sum())
    if not n or total <= 0:
        out["gini"] = None
        out.update({f"quintile {k} share": None for k in range(1, 6)})
        return out
    ranks = np.arange(1, n + 1, dtype=np.float64)
    out["gini"] = float(2 * np.sum(ranks * ordered) / (n * total) - (n + 1) / n)
    cumulative = np.concatenate([[0.0], np.cumsum(ordered)])
    # L(k/5) at position k*n/5 = i + f with integers, so the interpolation point is exact.
    points = []
    for k in range(6):
        i, rest = divmod(k * n, 5)
        upper = cumulative[min(i + 1, n)]
        points.append((cumulative[i] + rest / 5 * (upper - cumulative[i])) / total)
    points[-1] = 1.0
    for k in range(1, 6):
        out[f"quintile {k} share"] = float(points[k] - points[k - 1])
    return out


def _group_flags(
    group: KeyGroup,
    population: Population,
    records: Records,
    defects: Mapping[str, DepartmentDefects] | None,
    annual: Mapping[str, _Floats],
) -> _Bools:
    """Per person: in the key group (measure groups on the person's annual roll-up, as given)."""
    n = population.persons
    if group.measure is not None and group.at_least is not None:
        dataset, _, measure = group.measure.rpartition(".")
        if (dataset, measure) not in {(d, m) for d, m, _ in INCOME_TERMS}:
            raise ValueError(f"key group {group.name}: no roll-up of {group.measure} in the truth")
        flags: _Bools = annual[measure] >= group.at_least
        return flags
    dataset, _, column = (group.dimension or "").rpartition(".")
    if dataset == "social.occupations":
        person = records.occupations["person"].to_numpy()
        codes = records.occupations[column].to_numpy().astype(str)
        department = "social"
    elif dataset == "register.persons" and column == "region_code":
        person = np.arange(population.registered)
        codes = population.person_id[: population.registered].astype("U6")
        department = "register"
    else:
        raise ValueError(f"key group {group.name}: no values of {group.dimension} in the truth")
    hit = np.isin(codes, list(group.values or ()))
    if defects is not None:
        hit &= ~defects[department].invalid[person]
    flags = np.zeros(n, dtype=bool)
    flags[person[hit]] = True
    return flags


def _monthly_pack(
    geography: Geography,
    population: Population,
    records: Records,
    defects: Mapping[str, DepartmentDefects] | None,
    *,
    year: int,
    annual: Mapping[str, _Floats],
) -> dict[str, Any]:
    """The pack's figures for {year}-12 from the generator's records.

    With `defects` as linked (a household is its members with a valid register number, records under
    invalid numbers dropped per department, roll-ups clipped, the pack's public clamps applied); without,
    raw (all registered members and records, nothing clipped or clamped). `annual` holds each person's
    roll-up of each income measure over the year, read the same way.
    """
    pop = population
    n, h = pop.persons, pop.households
    if int(pop.household_size.max(initial=0)) > SIZE_CAP:
        # The federation would then count the members with the smallest tokens: not knowable here.
        raise AssertionError(f"a household has more than {SIZE_CAP} members, the pack's public size cap")
    linked = defects is not None
    registered = np.arange(n) < pop.registered
    member = registered & ~defects["register"].invalid if defects is not None else registered
    people = np.flatnonzero(member)
    home = pop.household[people]
    size = np.bincount(home, minlength=h)
    present = size > 0
    village = pop.household_village
    codes = geography.village_codes.tolist()
    urban_village = geography.village_is_urban
    areas = ["county", "urban", "rural", *codes]
    local = ["county", *codes]

    def tally(mask: _Bools, weights: _Floats | None = None) -> dict[str, float]:
        """Households in `mask` (or their `weights` summed): county-wide, urban, rural, per village."""
        picked = None if weights is None else weights[mask]
        per = np.bincount(village[mask], weights=picked, minlength=len(codes)).astype(np.float64)
        out = {
            "county": float(per.sum()),
            "urban": float(per[urban_village].sum()),
            "rural": float(per[~urban_village].sum()),
        }
        out.update(zip(codes, per.tolist(), strict=True))
        return out

    def shares(hit: _Bools, among: _Bools, groups: list[str]) -> list[tuple[str, float | None]]:
        num, den = tally(hit & among), tally(among)
        return [(g, _ratio(num[g], den[g])) for g in groups]

    def clamp(values: _Floats, lower: int, upper: int) -> _Floats:
        return np.clip(values, lower, upper) if linked else values

    def household_income(components: Mapping[str, _Floats]) -> _Floats:
        income = np.zeros(h)
        for _dataset, measure, sign in INCOME_TERMS:
            income += sign * np.bincount(home, weights=components[measure][people], minlength=h)
        return income

    income = household_income(annual)
    banded = clamp(income, INCOME_LOWER, INCOME_UPPER)
    in_band = {band: (banded >= low) & (banded < high) for band, (low, high) in PACK_BANDS.items()}

    pack: dict[str, list[_Figure]] = {
        "income_bands": [
            _figure("share", band, g, v)
            for band, hit in in_band.items()
            for g, v in shares(hit, present, areas)
        ]
    }

    summed = tally(present, clamp(income, INCOME_LOWER, INCOME_SUM_UPPER))
    members = tally(present, clamp(size.astype(np.float64), 0, SIZE_CAP))
    per_capita = {g: _ratio(summed[g], members[g]) for g in ("county", "urban", "rural")}
    urban_pc, rural_pc = per_capita["urban"], per_capita["rural"]
    pack["urban_rural_ratio"] = [
        *(_figure("per_capita_income", "per-capita disposable income", g, v) for g, v in per_capita.items()),
        _figure(
            "urban_rural_ratio",
            "urban / rural per-capita income",
            "county",
            _ratio(urban_pc, rural_pc) if urban_pc is not None and rural_pc is not None else None,
        ),
    ]

    distributions = {
        "household income": clamp(income[present], DISTRIBUTION_LOWER, DISTRIBUTION_UPPER),
        "per-capita income": clamp(
            np.rint(income[present] / size[present]), PER_CAPITA_LOWER, PER_CAPITA_UPPER
        ),
    }
    pack["income_distribution"] = [
        _figure(figure, label, "county", value)
        for label, values in distributions.items()
        for figure, value in _distribution(values).items()
    ]

    covered = np.zeros(n, dtype=bool)
    for dataset in COVERAGE_DATASETS:
        person = _frame(records, dataset)["person"].to_numpy()
        if defects is not None:
            # A department's connector is named for it: tax.wages is the tax department's.
            person = person[~defects[dataset.partition(".")[0]].invalid[person]]
        covered[person] = True
    reached = tally(present, np.bincount(home, weights=covered[people], minlength=h).astype(np.float64))
    persons = tally(present, size.astype(np.float64))
    pack["coverage"] = [
        _figure("coverage", "persons with an income record", g, _ratio(reached[g], persons[g])) for g in local
    ]

    groups: list[_Figure] = []
    for group in KEY_GROUPS:
        flags = _group_flags(group, pop, records, defects, annual)
        has = np.bincount(home, weights=flags[people], minlength=h) > 0
        hit = present & (~has if group.negate else has)
        counted = tally(hit)
        groups += [_figure("households", group.name, g, int(counted[g])) for g in local]
        groups += [
            _figure(f"share {band}", group.name, g, v)
            for band in PACK_BANDS
            for g, v in shares(in_band[band], hit, local)
        ]
    pack["key_groups"] = groups

    end = 12
    now_months = (end - WARNING_MONTHS + 1, end)
    before_months = (end - 2 * WARNING_MONTHS + 1, end - WARNING_MONTHS)
    now = clamp(household_income(_components(records, n, defects, now_months)), INCOME_LOWER, INCOME_UPPER)
    before = clamp(
        household_income(_components(records, n, defects, before_months)), INCOME_LOWER, INCOME_UPPER
    )
    now_int, before_int = np.rint(now).astype(np.int64), np.rint(before).astype(np.int64)
    kept = _SHARE_SCALE - int(DROP_SHARE * _SHARE_SCALE)
    no_baseline = present & (before_int <= 0)
    fell = present & ~no_baseline & (now_int * _SHARE_SCALE < before_int * kept)
    not_fell = present & ~no_baseline & ~fell
    fell_n, not_fell_n, none_n = tally(fell), tally(not_fell), tally(no_baseline)
    baseline_label = f"no income in {year}-{before_months[0]:02d}..{year}-{before_months[1]:02d}"
    pack["early_warning"] = [
        figure
        for g in local
        for figure in (
            _figure("households_fell", f"income fell by more than {DROP_SHARE:%}", g, int(fell_n[g])),
            _figure("households_no_baseline", baseline_label, g, int(none_n[g])),
            _figure(
                "share_fell",
                "of households with earlier income",
                g,
                _ratio(fell_n[g], fell_n[g] + not_fell_n[g]),
            ),
        )
    ]
    return {"period": f"{year}-12", "indicators": pack}


def write_truth(path: Path, doc: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
