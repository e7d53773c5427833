"""The departments' true records for one year, before any data-entry defect.

Tax holds monthly wages (per employer) and business income of the self-employed, social insurance holds
personal contributions, pensions and the insured's occupations, civil affairs holds the
minimum-livelihood assistance. Persons are row indices into the `Population`.

Incomes are calibrated on Zhoushan: per-capita disposable income 72,100 yuan urban and 45,924 rural
(63,848 overall, ratio 1.57), of which wages 57%, business 17%, transfers about 14% and property 11%
(which no department holds). Households share a log-normal income level with a Pareto upper tail, so
per-capita income has a log spread of about 0.8 and a heavy top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.ids import make_credit_code
from connectors.synth.geography import COUNTY_CODE, Geography
from connectors.synth.occupations import WAGE_FACTOR, draw_occupations
from connectors.synth.population import Population

__all__ = ["PER_CAPITA_TARGET", "Records", "build_records"]

PER_CAPITA_TARGET = {"urban": 72_100.0, "rural": 45_924.0}
WAGE_SHARE = 0.57
BUSINESS_SHARE = 0.17

# Zhejiang's social-insurance contribution base (yuan a month, approximately) and the employee's own
# rates: pension 8%, medical 2%, unemployment 0.5%.
BASE_LOWER, BASE_UPPER = 4_462, 24_930
EMPLOYEE_RATE = 0.105
# The flexibly employed pay pension (20%) and medical insurance on the lower base themselves.
FLEXIBLE_MONTHLY = round(BASE_LOWER * 0.245)
MINIMUM_WAGE = 2_010
# Minimum-livelihood standard (yuan per person per month) and the share of households receiving it.
ASSISTANCE_STANDARD = 1_200
ASSISTANCE_HOUSEHOLD_SHARE = 0.03
# East China Sea summer fishing moratorium: no catch, no crew wages, May to August.
MORATORIUM = np.isin(np.arange(1, 13), [5, 6, 7, 8])

_Ints = npt.NDArray[np.int64]
_CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


@dataclass(frozen=True)
class Records:
    """True records; `person` columns are indices into the population, months run 1..12."""

    employer_codes: npt.NDArray[np.str_]
    wages: pd.DataFrame  # person, employer, month, amount
    business: pd.DataFrame  # person, credit_code, month, amount
    contributions: pd.DataFrame  # person, month, amount
    pensions: pd.DataFrame  # person, month, amount
    occupations: pd.DataFrame  # person, occupation_major, occupation_medium
    assistance: pd.DataFrame  # person, month, amount


def _credit_codes(rng: np.random.Generator, regions: list[str], org_type: str) -> npt.NDArray[np.str_]:
    """Distinct valid credit codes with random organisation bodies."""
    letters = np.array(list(_CREDIT_ALPHABET))
    bodies: list[str] = []
    seen: set[str] = set()
    while len(bodies) < len(regions):
        drawn = letters[rng.integers(0, len(letters), size=(len(regions) - len(bodies), 9))]
        for body in np.ascontiguousarray(drawn).view("<U9").ravel().tolist():
            if body not in seen:
                seen.add(body)
                bodies.append(body)
    return np.array(
        [
            make_credit_code(r, b, authority="9", org_type=org_type)
            for r, b in zip(regions, bodies, strict=True)
        ]
    )


def _household_levels(rng: np.random.Generator, households: int) -> npt.NDArray[np.float64]:
    """Log income level of each household: normal, with a Pareto tail above the 99th percentile."""
    z = rng.normal(0.0, 0.62, size=households)
    cut = np.quantile(z, 0.99) if households else 0.0
    top = z > cut
    # Pareto with alpha 1.9 above the cut: log excess is exponential with mean 1/alpha.
    z[top] = cut + rng.exponential(1 / 1.9, size=int(top.sum()))
    return z


def _rows(mask: npt.NDArray[np.bool_]) -> tuple[_Ints, _Ints]:
    rows, cols = np.nonzero(mask)
    return rows.astype(np.int64), cols.astype(np.int64)


def _calibrate(
    frame: pd.DataFrame,
    stratum: _Ints,
    registered: npt.NDArray[np.bool_],
    targets: npt.NDArray[Any],
    floor: npt.NDArray[Any],
) -> _Ints:
    """Scale amounts so registered persons' totals per stratum (rural 0, urban 1) meet the targets.

    Floors (the minimum wage for a main job) are applied after scaling, which adds a little; the second
    round takes that back out from the rows above the floor.
    """
    person = frame["person"].to_numpy()
    strata = stratum[person]
    reg = registered[person]
    amount = frame["amount"].to_numpy().astype(np.float64)
    for _ in range(2):
        totals = np.bincount(strata[reg], weights=amount[reg], minlength=2)
        scale = np.divide(targets, totals, out=np.ones(2), where=totals > 0)
        amount = np.maximum(amount * scale[strata], floor)
    return np.rint(amount).astype(np.int64).clip(1)


def build_records(rng: np.random.Generator, geography: Geography, population: Population) -> Records:
    """Draw every department's records for the year."""
    pop = population
    n = pop.persons
    registered = np.arange(n) < pop.registered
    hh = pop.household
    urban_household = geography.village_is_urban[pop.household_village]
    # The floating population works in the towns; they count as urban for wage levels.
    urban = np.where(registered, urban_household[np.maximum(hh, 0)], True)
    age = pop.age
    female = ~pop.male

    level = _household_levels(rng, pop.households)
    person_level = np.where(registered, level[np.maximum(hh, 0)], rng.normal(-0.15, 0.45, size=n))

    # --- who works ------------------------------------------------------------------------------
    u = rng.random(n)
    p_employed = np.select(
        [age < 16, age < 23, age < 50, age < 60, age < 70],
        [
            0.0,
            0.15,
            np.where(urban, 0.72, 0.58),
            np.where(urban, 0.62, 0.5) * np.where(female, 0.6, 1.0),
            0.11,
        ],
        default=0.0,
    )
    p_self = np.select([age < 23, age < 60, age < 70], [0.0, np.where(urban, 0.10, 0.15), 0.07], default=0.0)
    employed = np.where(registered, u < p_employed, True)
    self_employed = registered & ~employed & (u < p_employed + p_self)

    working = employed | self_employed
    early = registered & female & (age >= 50) & (age < 60) & ~working
    early &= rng.random(n) < np.where(urban, 0.3, 0.1)
    pensioner = registered & ((age >= 60) | early)
    employee_pension = early | (rng.random(n) < np.where(urban, 0.72, 0.32))
    # A registered household lives on something: where nobody works or draws a pension, the first
    # working-age member has a job (or a small business).
    has_income = np.bincount(
        hh[registered], weights=(working | pensioner)[registered], minlength=pop.households
    )
    candidates = np.flatnonzero(registered & (age >= 18) & (age < 65) & (has_income[np.maximum(hh, 0)] == 0))
    _, first_adult = np.unique(hh[candidates], return_index=True)
    chosen = candidates[first_adult]
    as_business = rng.random(len(chosen)) < 0.3
    employed[chosen[~as_business]] = True
    self_employed[chosen[as_business]] = True

    medium = np.full(n, "", dtype=object)
    emp = np.flatnonzero(employed)
    groups = np.where(~registered[emp], "floating", np.where(urban[emp], "urban_employee", "rural_employee"))
    for group in ("urban_employee", "rural_employee", "floating"):
        sel = emp[groups == group]
        medium[sel] = draw_occupations(rng, group, len(sel))
    selfs = np.flatnonzero(self_employed)
    medium[selfs] = draw_occupations(rng, "self_employed", len(selfs))

    # --- wages ----------------------------------------------------------------------------------
    e = len(emp)
    factor = np.array([WAGE_FACTOR[m] for m in medium[emp]])
    rate = np.exp(person_level[emp] + rng.normal(0, 0.4, size=e)) * factor
    fishery = medium[emp] == "5-04"
    start = np.where(rng.random(e) < 0.88, 1, rng.integers(2, 13, size=e))
    end = np.where(rng.random(e) < 0.9, 12, rng.integers(start, 13))
    month = np.arange(1, 13)
    # A fishing job that would fall wholly inside the moratorium runs on into the autumn season instead.
    idle = fishery & (start >= 5) & (end <= 8)
    end[idle] = 12
    employed_in = (month >= start[:, None]) & (month <= end[:, None])
    paid = employed_in & ~(fishery[:, None] & MORATORIUM)
    monthly = np.where(fishery, rate / 8, rate / 12)[:, None] * rng.normal(1.0, 0.06, size=(e, 12))
    bonus = (rng.random(e) < 0.4) * rng.uniform(0.5, 2.5, size=e) * rate / 12
    monthly[:, 11] += bonus

    n_employers = max(30, e // 10)
    employer_regions = rng.choice(
        ["330922", "330900", "310115"], size=n_employers, p=[0.85, 0.1, 0.05]
    ).tolist()
    employer_codes = _credit_codes(rng, employer_regions, org_type="1")
    zipf = 1 / np.arange(1, n_employers + 1) ** 1.05
    zipf /= zipf.sum()
    first = rng.choice(n_employers, size=e, p=zipf)
    second = rng.choice(n_employers, size=e, p=zipf)
    change = np.where(rng.random(e) < 0.05, rng.integers(3, 12, size=e), 13)
    employer = np.where(month >= change[:, None], second[:, None], first[:, None])
    er, mc = _rows(paid)
    wage_parts = [
        pd.DataFrame(
            {"person": emp[er], "employer": employer[er, mc], "month": mc + 1, "amount": monthly[er, mc]}
        )
    ]
    side = rng.random(e) < 0.02
    side_employer = rng.choice(n_employers, size=e, p=zipf)
    sr, smc = _rows(paid & side[:, None])
    wage_parts.append(
        pd.DataFrame(
            {
                "person": emp[sr],
                "employer": side_employer[sr],
                "month": smc + 1,
                "amount": monthly[sr, smc] * rng.uniform(0.15, 0.3, size=len(sr)),
            }
        )
    )
    wages = pd.concat(wage_parts, ignore_index=True)
    main_job = np.arange(len(wages)) < len(er)

    # --- business income ------------------------------------------------------------------------
    s = len(selfs)
    business_rate = np.exp(person_level[selfs] + rng.normal(0, 0.6, size=s))
    quarterly = rng.random(s) < 0.4
    reported = np.where(quarterly[:, None], np.isin(month, [3, 6, 9, 12]), True)
    br, bmc = _rows(reported)
    per_row = np.where(quarterly, business_rate / 4, business_rate / 12)
    business_codes = _credit_codes(rng, [COUNTY_CODE] * s, org_type="2")
    business = pd.DataFrame(
        {
            "person": selfs[br],
            "credit_code": business_codes[br],
            "month": bmc + 1,
            "amount": per_row[br] * rng.normal(1.0, 0.15, size=len(br)).clip(0.3),
        }
    )

    # --- calibration: wages and business to their shares of the per-capita target ---------------
    stratum = np.where(urban, 1, 0)
    counts = np.bincount(stratum[registered], minlength=2)
    targets = np.array([PER_CAPITA_TARGET["rural"], PER_CAPITA_TARGET["urban"]]) * counts
    wages["amount"] = _calibrate(wages, stratum, registered, targets * WAGE_SHARE, main_job * MINIMUM_WAGE)
    business["amount"] = _calibrate(
        business, stratum, registered, targets * BUSINESS_SHARE, np.ones(len(business))
    )

    # --- social insurance: contributions ----------------------------------------------------------
    wage_scale = np.bincount(
        np.searchsorted(emp, wages["person"].to_numpy()), weights=wages["amount"].to_numpy(), minlength=e
    ) / np.maximum(paid.sum(axis=1), 1)
    insured = rng.random(e) < np.where(registered[emp], np.where(fishery, 0.8, 0.93), 0.65)
    base = np.clip(wage_scale, BASE_LOWER, BASE_UPPER)
    cr, cmc = _rows(employed_in & insured[:, None])
    contrib_parts = [
        pd.DataFrame({"person": emp[cr], "month": cmc + 1, "amount": np.rint(base[cr] * EMPLOYEE_RATE)})
    ]
    flexible = selfs[rng.random(s) < 0.55]
    contrib_parts.append(
        pd.DataFrame(
            {
                "person": np.repeat(flexible, 12),
                "month": np.tile(month, len(flexible)),
                "amount": np.full(12 * len(flexible), FLEXIBLE_MONTHLY),
            }
        )
    )
    contributions = pd.concat(contrib_parts, ignore_index=True).astype(np.int64)

    # --- pensions -------------------------------------------------------------------------------
    pens = np.flatnonzero(pensioner)
    amount = np.where(
        employee_pension[pens],
        np.exp(rng.normal(np.log(3_700), 0.28, size=len(pens))),
        380 + rng.integers(0, 160, size=len(pens)),
    )
    pensions = pd.DataFrame(
        {
            "person": np.repeat(pens, 12),
            "month": np.tile(month, len(pens)),
            "amount": np.rint(np.repeat(amount, 12)).astype(np.int64),
        }
    )

    # --- occupations of the insured -------------------------------------------------------------
    insured_people = np.unique(contributions["person"].to_numpy())
    medium_codes = medium[insured_people].astype(str)
    occupations = pd.DataFrame(
        {
            "person": insured_people,
            "occupation_major": [c[0] for c in medium_codes],
            "occupation_medium": medium_codes,
        }
    )

    # --- civil affairs: minimum-livelihood assistance --------------------------------------------
    income = np.zeros(n)
    for frame, sign in ((wages, 1), (business, 1), (pensions, 1), (contributions, -1)):
        income += sign * np.bincount(
            frame["person"].to_numpy(), weights=frame["amount"].to_numpy(), minlength=n
        )
    household_income = np.bincount(hh[registered], weights=income[registered], minlength=pop.households)
    need = ASSISTANCE_STANDARD * pop.household_size - household_income / 12
    eligible = np.flatnonzero(need > 0.1 * ASSISTANCE_STANDARD)
    wanted = round(ASSISTANCE_HOUSEHOLD_SHARE * pop.households)
    take = rng.random(len(eligible)) < min(1.0, wanted / max(len(eligible), 1))
    helped = eligible[take]
    first_month = np.where(rng.random(len(helped)) < 0.85, 1, rng.integers(2, 13, size=len(helped)))
    ar, amc = _rows(month >= first_month[:, None])
    monthly_help = np.clip(np.rint(need[helped]), 150, ASSISTANCE_STANDARD * pop.household_size[helped])
    assistance = pd.DataFrame(
        {
            "person": pop.household_head[helped][ar],
            "month": amc + 1,
            "amount": monthly_help[ar].astype(np.int64),
        }
    )

    return Records(
        employer_codes=employer_codes,
        wages=wages,
        business=business,
        contributions=contributions,
        pensions=pensions,
        occupations=occupations,
        assistance=assistance,
    )
