"""Data-entry defects in the departments' ID columns, as they occur in real administrative data.

Per department, and consistently across that department's tables:

* about 0.5% of its persons carry an invalid number in every row (a wrong check digit, a wrong length,
  or a birth date that does not exist, with a check digit that matches, so only the date is wrong);
* about 3% of its persons born 1900-1999 appear in some rows under the legacy 15-digit number and in the
  others under the 18-digit one;
* some rows carry stray spaces, and numbers ending in X are sometimes typed with a lower-case x;
* some tables hold exact duplicate rows.

A correct connector drops the invalid numbers and re-aggregates the other forms to one person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.ids import resident_check_digit, to_legacy_15
from connectors.synth.population import Population

__all__ = ["DepartmentDefects", "corrupt_department", "duplicate_rows"]

INVALID_RATE = 0.005
LEGACY_RATE = 0.03
SPACE_RATE = 0.01
LOWER_X_RATE = 0.25
DUPLICATE_RATE = 0.003

_CHECK_CHARS = "0123456789X"


@dataclass
class DepartmentDefects:
    """What was done to one department's ID columns (exact counts, for the truth file only)."""

    department: str
    persons: int
    rows: int
    invalid: npt.NDArray[np.bool_]
    """Per population index: the person's number is invalid in every row of this department."""
    invalid_rows: int = 0
    invalid_kinds: dict[str, int] = field(default_factory=dict)
    legacy_persons: int = 0
    legacy_rows: int = 0
    sloppy_rows: int = 0
    duplicate_rows: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "persons": self.persons,
            "rows": self.rows,
            "invalid_id_persons": int(self.invalid.sum()),
            "invalid_id_rows": self.invalid_rows,
            "invalid_id_kinds": dict(sorted(self.invalid_kinds.items())),
            "legacy_form_persons": self.legacy_persons,
            "legacy_form_rows": self.legacy_rows,
            "sloppy_rows": self.sloppy_rows,
            "duplicate_rows": self.duplicate_rows,
        }


def _corrupt(rng: np.random.Generator, clean: str, kind: str) -> str:
    """An invalid variant of a valid 18-character number."""
    if kind == "check_digit":
        wrong = _CHECK_CHARS.replace(clean[17], "")
        return clean[:17] + wrong[int(rng.integers(len(wrong)))]
    if kind == "length":
        at = int(rng.integers(6, 17))
        if rng.random() < 0.5:
            return clean[:at] + clean[at + 1 :]
        return clean[:at] + str(int(rng.integers(10))) + clean[at:]
    # An impossible date: month 00 or 13, or day 00 or 32; the check digit is recomputed to match.
    month_or_day = int(rng.integers(4))
    if month_or_day < 2:
        first17 = clean[:10] + ("00", "13")[month_or_day] + clean[12:17]
    else:
        first17 = clean[:12] + ("00", "32")[month_or_day - 2] + clean[14:17]
    return first17 + resident_check_digit(first17)


def _pick(rng: np.random.Generator, pool: npt.NDArray[np.int64], rate: float) -> npt.NDArray[np.int64]:
    """About `rate` of `pool`, and at least one when the pool is not tiny, so every kind of defect exists."""
    if len(pool) == 0:
        return pool
    count = round(rate * len(pool))
    if len(pool) >= 20:
        count = max(count, 1)
    return np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))


def _legacy_rows(
    rng: np.random.Generator, person: npt.NDArray[np.int64], legacy: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Which rows of legacy-form persons carry the 15-digit number: some, never all if there are two."""
    rows = np.flatnonzero(legacy[person])
    chosen = np.zeros(len(person), dtype=bool)
    if len(rows) == 0:
        return chosen
    frame = pd.DataFrame({"p": person[rows]})
    rank = frame.groupby("p").cumcount().to_numpy()
    count = frame.groupby("p")["p"].transform("size").to_numpy()
    pick = rng.random(len(rows)) < 0.5
    pick[rank == 0] = True
    pick[(rank == count - 1) & (count > 1)] = False
    chosen[rows] = pick
    return chosen


def corrupt_department(
    rng: np.random.Generator, population: Population, department: str, persons: list[npt.NDArray[np.int64]]
) -> tuple[list[npt.NDArray[np.object_]], DepartmentDefects]:
    """The ID column, as the department holds it, of each of its tables (given as person indices)."""
    present = np.unique(np.concatenate(persons)) if persons else np.zeros(0, np.int64)
    report = DepartmentDefects(
        department=department,
        persons=len(present),
        rows=sum(len(p) for p in persons),
        invalid=np.zeros(population.persons, dtype=bool),
    )
    forms = population.person_id.astype(object)

    bad = _pick(rng, present, INVALID_RATE)
    report.invalid[bad] = True
    kinds = rng.choice(["check_digit", "length", "date"], size=len(bad))
    for p, kind in zip(bad.tolist(), kinds.tolist(), strict=True):
        forms[p] = _corrupt(rng, forms[p], kind)
        report.invalid_kinds[kind] = report.invalid_kinds.get(kind, 0) + 1

    birth_year = population.birth.astype("datetime64[Y]").astype(np.int64) + 1970
    eligible = present[
        ~report.invalid[present] & (birth_year[present] >= 1900) & (birth_year[present] <= 1999)
    ]
    legacy_people = _pick(rng, eligible, LEGACY_RATE * len(present) / max(len(eligible), 1))
    report.legacy_persons = len(legacy_people)
    legacy = np.zeros(population.persons, dtype=bool)
    legacy[legacy_people] = True
    legacy_form = {p: to_legacy_15(population.person_id[p]) for p in legacy_people.tolist()}

    columns: list[npt.NDArray[np.object_]] = []
    for person in persons:
        ids = forms[person]
        invalid_row = report.invalid[person]
        report.invalid_rows += int(invalid_row.sum())
        as_legacy = _legacy_rows(rng, person, legacy)
        for i in np.flatnonzero(as_legacy).tolist():
            ids[i] = legacy_form[int(person[i])]
        report.legacy_rows += int(as_legacy.sum())

        clean = ~invalid_row & ~as_legacy
        ends_x = np.char.endswith(population.person_id[person], "X")
        lower = np.flatnonzero(clean & ends_x & (rng.random(len(person)) < LOWER_X_RATE))
        for i in lower.tolist():
            ids[i] = ids[i][:17] + "x"
        spaced = np.flatnonzero(~invalid_row & (rng.random(len(person)) < SPACE_RATE))
        pads = rng.integers(0, 3, size=len(spaced))
        for i, pad in zip(spaced.tolist(), pads.tolist(), strict=True):
            ids[i] = (" " + ids[i], ids[i] + " ", "  " + ids[i] + " ")[pad]
        report.sloppy_rows += len(np.union1d(lower, spaced))
        columns.append(ids)
    return columns, report


def duplicate_rows(rng: np.random.Generator, frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """`frame` with about 0.3% of its rows repeated exactly, each right after its original."""
    picked = _pick(rng, np.arange(len(frame), dtype=np.int64), DUPLICATE_RATE)
    order = np.sort(np.concatenate([np.arange(len(frame)), picked]), kind="stable")
    return frame.iloc[order].reset_index(drop=True), len(picked)
