"""Households and people: the registered population and the floating population.

Every person is a row index into flat numpy arrays; registered persons come first, then the floating
population, who work in the county but are registered elsewhere (household -1). Household sizes follow
Shengsi's 2.05 persons per family household; ages are drawn by household type so that about 31% of the
registered people are 60 or older.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.ids import make_resident_id
from connectors.synth.geography import COUNTY_CODE, Geography

__all__ = ["RELATIONS", "Population", "build_population"]

# GB/T 4761-2008 family relationship codes used in the household register.
RELATIONS: dict[str, str] = {
    "02": "户主",
    "10": "配偶",
    "20": "子",
    "30": "女",
    "51": "父亲",
    "52": "母亲",
}

_HEAD, _SPOUSE, _CHILD, _PARENT = 0, 1, 2, 3

# Household sizes 1..6; mean about 2.08 persons.
_SIZE_P = np.array([0.35, 0.38, 0.16, 0.07, 0.03, 0.01])

# Where registered people's resident numbers were issued: mostly the county itself.
_HOME_REGIONS: dict[str, float] = {
    COUNTY_CODE: 0.85,
    "330921": 0.03,
    "330902": 0.025,
    "330903": 0.015,
    "330102": 0.005,
    "330106": 0.005,
    "330203": 0.01,
    "330212": 0.01,
    "330302": 0.01,
    "330381": 0.005,
    "330402": 0.005,
    "330602": 0.005,
    "330702": 0.005,
    "331002": 0.01,
    "331082": 0.01,
}
_MIGRANT_REGIONS: dict[str, float] = {
    "340102": 0.06,
    "341202": 0.14,
    "350102": 0.06,
    "360702": 0.10,
    "410102": 0.06,
    "411302": 0.12,
    "420102": 0.06,
    "430102": 0.06,
    "510104": 0.05,
    "511302": 0.10,
    "520102": 0.09,
    "331082": 0.06,
    "330381": 0.04,
}

FLOATING_SHARE = 0.05


@dataclass(frozen=True)
class Population:
    """Persons (registered first, then floating) and households, as aligned arrays."""

    person_id: npt.NDArray[np.str_]
    birth: npt.NDArray[np.datetime64]
    age: npt.NDArray[np.int64]
    male: npt.NDArray[np.bool_]
    household: npt.NDArray[np.int64]
    relation: npt.NDArray[np.str_]
    registered: int
    household_no: npt.NDArray[np.str_]
    household_village: npt.NDArray[np.int64]
    household_size: npt.NDArray[np.int64]
    household_head: npt.NDArray[np.int64]

    @property
    def persons(self) -> int:
        return len(self.person_id)

    @property
    def floating(self) -> int:
        return self.persons - self.registered

    @property
    def households(self) -> int:
        return len(self.household_no)


def _household_sizes(rng: np.random.Generator, persons: int) -> npt.NDArray[np.int64]:
    sizes = rng.choice(np.arange(1, 7), size=int(persons / 1.9) + 10, p=_SIZE_P)
    total = np.cumsum(sizes)
    last = int(np.searchsorted(total, persons))
    sizes = sizes[: last + 1].copy()
    sizes[-1] -= int(total[last]) - persons
    return sizes.astype(np.int64)


def _members(rng: np.random.Generator, sizes: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[np.generic]]:
    """Role, age and sex of every member, drawn by household type."""
    h = len(sizes)
    u = rng.random(h)
    elderly = np.where(sizes == 1, u < 0.53, np.where(sizes == 2, u < 0.5, False))
    head_age = np.where(
        elderly,
        rng.triangular(60, 68, 95, size=h),
        np.where(
            sizes == 1,
            rng.uniform(22, 60, size=h),
            np.where(sizes == 2, rng.uniform(26, 60, size=h), np.clip(rng.normal(47, 9, size=h), 28, 78)),
        ),
    )
    # Two-person households that are not couples are a parent with an adult child.
    lone_parent = (sizes == 2) & ~elderly & (rng.random(h) < 0.3)
    has_spouse = (sizes >= 2) & ~lone_parent & (rng.random(h) < 0.93)
    extra = sizes - 1 - has_spouse
    three_gen = (extra >= 2) & (rng.random(h) < 0.45)
    n_parents = np.where(three_gen, np.minimum(2, extra - 1), 0)
    head_male = rng.random(h) < np.where(has_spouse, 0.78, 0.45)

    hh = np.repeat(np.arange(h), sizes)
    pos = np.arange(len(hh)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    spouse_slot = has_spouse[hh] & (pos == 1)
    after = pos - 1 - has_spouse[hh].astype(np.int64)
    role = np.where(
        pos == 0,
        _HEAD,
        np.where(spouse_slot, _SPOUSE, np.where(after < n_parents[hh], _PARENT, _CHILD)),
    )
    n = len(hh)
    base = head_age[hh]
    age = np.select(
        [role == _HEAD, role == _SPOUSE, role == _PARENT],
        [base, base + rng.normal(-1.5, 3.0, size=n), base + rng.uniform(24, 34, size=n)],
        default=base - rng.uniform(22, 36, size=n),
    )
    # Grown children of elderly heads live with them; young heads' children are young.
    age = np.clip(age, 0, 101).astype(np.int64)
    male = np.select(
        [role == _HEAD, role == _SPOUSE, role == _PARENT],
        [head_male[hh], ~head_male[hh], np.where(n_parents[hh] == 2, after == 0, rng.random(n) < 0.3)],
        default=rng.random(n) < 0.51,
    )
    relation = np.select(
        [role == _HEAD, role == _SPOUSE, (role == _PARENT) & male, role == _PARENT, male],
        ["02", "10", "51", "52", "20"],
        default="30",
    )
    return {"household": hh, "age": age, "male": male, "relation": relation}


def _births(
    rng: np.random.Generator, age: npt.NDArray[np.int64], reference: datetime.date
) -> npt.NDArray[np.datetime64]:
    """Birth dates on or before `reference` for people of the given completed age there."""
    ref = np.datetime64(reference, "D")
    days = (age * 365.2425 + rng.uniform(0, 365, size=len(age))).astype(np.int64)
    return ref - days.astype("timedelta64[D]")


def _draw_regions(rng: np.random.Generator, table: dict[str, float], n: int) -> npt.NDArray[np.str_]:
    codes = np.array(list(table))
    p = np.array(list(table.values()))
    return codes[rng.choice(len(codes), size=n, p=p / p.sum())]


def _resident_ids(
    rng: np.random.Generator,
    region: npt.NDArray[np.str_],
    birth: npt.NDArray[np.datetime64],
    male: npt.NDArray[np.bool_],
) -> npt.NDArray[np.str_]:
    """Unique valid resident numbers: order codes are unique per region, birth date and sex."""
    frame = pd.DataFrame({"region": region, "birth": birth, "male": male})
    group = frame.groupby(["region", "birth", "male"], sort=False).ngroup().to_numpy()
    rank = frame.groupby(["region", "birth", "male"], sort=False).cumcount().to_numpy()
    if rank.max(initial=0) >= 500:
        raise ValueError("too many people share a birth date and region to give them distinct numbers")
    start = rng.integers(0, 500, size=int(group.max(initial=-1)) + 1)
    sequence = (start[group] + rank) % 500
    births = birth.astype("datetime64[D]").astype(object)
    ids = [
        make_resident_id(r, b, int(s), bool(m))
        for r, b, s, m in zip(region.tolist(), births, sequence.tolist(), male.tolist(), strict=True)
    ]
    return np.array(ids)


def build_population(
    rng: np.random.Generator, geography: Geography, persons: int, reference: datetime.date
) -> Population:
    """`persons` registered people in households across the villages, plus the floating population."""
    sizes = _household_sizes(rng, persons)
    members = _members(rng, sizes)
    n_households = len(sizes)
    village = rng.choice(len(geography), size=n_households, p=geography.village_weight)

    # Household numbers count up within each village, in a random order of its households.
    order = rng.permutation(n_households)
    serial = np.empty(n_households, dtype=np.int64)
    serial[order] = pd.Series(village[order]).groupby(village[order]).cumcount().to_numpy() + 1
    codes = geography.village_codes
    household_no = np.array(
        [f"H{codes[v]}{s:05d}" for v, s in zip(village.tolist(), serial.tolist(), strict=True)]
    )

    n_floating = round(persons * FLOATING_SHARE)
    floating_age = np.clip(rng.normal(36, 9, size=n_floating), 18, 58).astype(np.int64)
    floating_male = rng.random(n_floating) < 0.78

    age = np.concatenate([members["age"], floating_age]).astype(np.int64)
    male = np.concatenate([members["male"], floating_male]).astype(bool)
    region = np.concatenate(
        [_draw_regions(rng, _HOME_REGIONS, persons), _draw_regions(rng, _MIGRANT_REGIONS, n_floating)]
    )
    birth = _births(rng, age, reference)
    ids = _resident_ids(rng, region, birth, male)
    if len(set(ids.tolist())) != len(ids):
        raise AssertionError("resident numbers are not unique")
    household = np.concatenate([members["household"], np.full(n_floating, -1)]).astype(np.int64)
    head = np.cumsum(sizes) - sizes
    return Population(
        person_id=ids,
        birth=birth,
        age=age,
        male=male,
        household=household,
        relation=np.concatenate([members["relation"], np.full(n_floating, "")]),
        registered=persons,
        household_no=household_no,
        household_village=village.astype(np.int64),
        household_size=sizes,
        household_head=head.astype(np.int64),
    )
