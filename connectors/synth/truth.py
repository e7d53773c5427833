"""The exact indicator values of the synthetic county, for tests and the demo (never for analysts).

Two truths are written:

* `raw`: the true county before any data-entry defect, every record counted, nothing clipped;
* `as_linked`: what a correct federation computes exactly before noise: records under invalid numbers are
  dropped, legacy and sloppy forms count for their person, each person's annual roll-up of each measure is
  clipped to the public bounds, a household is its register members whose register number is valid, and
  the floating population belongs to no household.

It is computed from what the generator knows it did (which persons' numbers it broke in which department),
not by any connector code. Only aggregates are written: no per-person or per-household figure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.synth.defects import DepartmentDefects
from connectors.synth.geography import Geography
from connectors.synth.policy import bounds
from connectors.synth.population import Population
from connectors.synth.records import Records

__all__ = ["BANDS", "INCOME_MEASURES", "build_truth", "write_truth"]

# Household income bands of the county's targets, as half-open intervals [low, high) in yuan a year.
BANDS: dict[str, tuple[int, int]] = {"100k_500k": (100_000, 500_000), "200k_600k": (200_000, 600_000)}

# The disposable-income proxy: measure -> (department holding it, sign).
INCOME_MEASURES: dict[str, tuple[str, int]] = {
    "wage_income": ("tax", 1),
    "business_income": ("tax", 1),
    "pension_income": ("social", 1),
    "assistance_income": ("civil", 1),
    "personal_contribution": ("social", -1),
}

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
        "distinct persons in the register or any income dataset, the spine of a person query "
        "(includes the floating population)"
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
}


def _annual(frame: pd.DataFrame, persons: int) -> _Floats:
    weights = frame["amount"].to_numpy().astype(np.float64)
    return np.bincount(frame["person"].to_numpy(), weights=weights, minlength=persons).astype(np.float64)


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
    raw = {
        "wage_income": _annual(records.wages, n),
        "business_income": _annual(records.business, n),
        "pension_income": _annual(records.pensions, n),
        "assistance_income": _annual(records.assistance, n),
        "personal_contribution": _annual(records.contributions, n),
    }
    linked: dict[str, _Floats] = {}
    for measure, (department, _) in INCOME_MEASURES.items():
        low, high = bounds(measure)
        linked[measure] = np.where(defects[department].invalid, 0.0, np.clip(raw[measure], low, high))
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
    return doc


def _persons_seen(
    records: Records, registered: npt.NDArray[np.bool_], defects: Mapping[str, DepartmentDefects] | None
) -> int:
    """Distinct persons in the register or an income dataset: the spine of a person query.

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


def write_truth(path: Path, doc: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
