"""The tables each department holds, with their column names and the defects of their ID columns.

This is where the true records meet the departments' own schemas: the household register keys people
by `id_number`, tax by `taxpayer_id`, social insurance by `person_id`, utilities by the account holder's
`holder_id` and civil affairs by `id_number` again, each with its own defects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.synth.defects import DepartmentDefects, corrupt_department, duplicate_rows
from connectors.synth.geography import Geography
from connectors.synth.population import Population
from connectors.synth.records import Records
from connectors.synth.utilities import Utilities

__all__ = ["DEPARTMENTS", "Departments", "Table", "build_departments"]

DEPARTMENTS = ("register", "tax", "social", "utility", "civil")


@dataclass(frozen=True)
class Table:
    """One source table (or file) as the department stores it."""

    name: str
    frame: pd.DataFrame
    id_column: str
    month_column: str | None = None


@dataclass(frozen=True)
class Departments:
    tables: dict[str, tuple[Table, ...]]
    defects: dict[str, DepartmentDefects]


def _monthly_frame(
    year: int, month: npt.NDArray[np.int64], columns: dict[str, npt.NDArray[Any]]
) -> pd.DataFrame:
    """A monthly table in month order, as departments append each month's records.

    The period column, named `month`, comes second and holds 'YYYY-MM' text.
    """
    order = np.argsort(month, kind="stable")
    labels = np.array([f"{year}-{m:02d}" for m in range(1, 13)])
    items = list(columns.items())
    data = {items[0][0]: items[0][1][order], "month": labels[month[order] - 1]}
    data.update({name: values[order] for name, values in items[1:]})
    return pd.DataFrame(data)


def build_departments(
    rngs: dict[str, np.random.Generator],
    geography: Geography,
    population: Population,
    records: Records,
    utilities: Utilities,
    year: int,
) -> Departments:
    """Every department's tables, ID columns as held (defects included)."""
    pop = population
    tables: dict[str, tuple[Table, ...]] = {}
    defects: dict[str, DepartmentDefects] = {}

    registered = np.arange(pop.registered, dtype=np.int64)
    (ids,), defects["register"] = corrupt_department(rngs["register"], pop, "register", [registered])
    village = pop.household_village[pop.household[registered]]
    register = pd.DataFrame(
        {
            "id_number": ids,
            "household_no": pop.household_no[pop.household[registered]],
            "village_code": geography.village_codes[village],
            "urban_rural_code": geography.village_urban_rural[village],
            "relation": pop.relation[registered],
        }
    ).sort_values(["household_no", "relation"], kind="stable")
    register, defects["register"].duplicate_rows = duplicate_rows(rngs["register"], register)
    defects["register"].rows = len(register)
    tables["register"] = (Table("persons", register, "id_number"),)

    wages, business = records.wages, records.business
    (wage_ids, business_ids), defects["tax"] = corrupt_department(
        rngs["tax"], pop, "tax", [wages["person"].to_numpy(), business["person"].to_numpy()]
    )
    wage_frame = _monthly_frame(
        year,
        wages["month"].to_numpy(),
        {
            "taxpayer_id": wage_ids,
            "employer_code": records.employer_codes[wages["employer"].to_numpy()],
            "amount": wages["amount"].to_numpy(),
        },
    )
    business_frame = _monthly_frame(
        year,
        business["month"].to_numpy(),
        {
            "taxpayer_id": business_ids,
            "credit_code": business["credit_code"].to_numpy(),
            "amount": business["amount"].to_numpy(),
        },
    )
    # Column order as the tax bureau keeps it: who, from whom, when, how much.
    wage_frame = wage_frame[["taxpayer_id", "employer_code", "month", "amount"]]
    business_frame = business_frame[["taxpayer_id", "credit_code", "month", "amount"]]
    tables["tax"] = (
        Table("wages", wage_frame, "taxpayer_id", "month"),
        Table("business_income", business_frame, "taxpayer_id", "month"),
    )

    contributions, pensions, occupations = records.contributions, records.pensions, records.occupations
    (contribution_ids, pension_ids, occupation_ids), defects["social"] = corrupt_department(
        rngs["social"],
        pop,
        "social",
        [c["person"].to_numpy() for c in (contributions, pensions, occupations)],
    )
    contribution_frame = _monthly_frame(
        year,
        contributions["month"].to_numpy(),
        {"person_id": contribution_ids, "personal_contribution": contributions["amount"].to_numpy()},
    )
    pension_frame = _monthly_frame(
        year,
        pensions["month"].to_numpy(),
        {"person_id": pension_ids, "amount": pensions["amount"].to_numpy()},
    )
    occupation_frame = pd.DataFrame(
        {
            "person_id": occupation_ids,
            "occupation_major": occupations["occupation_major"].to_numpy(),
            "occupation_medium": occupations["occupation_medium"].to_numpy(),
        }
    )
    occupation_frame, defects["social"].duplicate_rows = duplicate_rows(rngs["social"], occupation_frame)
    defects["social"].rows += defects["social"].duplicate_rows
    tables["social"] = (
        Table("contributions", contribution_frame, "person_id", "month"),
        Table("pensions", pension_frame, "person_id", "month"),
        Table("occupations", occupation_frame, "person_id"),
    )

    electricity, water = utilities.electricity, utilities.water
    (electricity_ids, water_ids), defects["utility"] = corrupt_department(
        rngs["utility"], pop, "utility", [electricity["person"].to_numpy(), water["person"].to_numpy()]
    )
    electricity_frame = _monthly_frame(
        year,
        electricity["month"].to_numpy(),
        {
            "holder_id": electricity_ids,
            "kwh": electricity["kwh"].to_numpy(),
            "bill_yuan": electricity["bill_yuan"].to_numpy(),
        },
    )
    water_frame = _monthly_frame(
        year,
        water["month"].to_numpy(),
        {"holder_id": water_ids, "m3": water["m3"].to_numpy(), "bill_yuan": water["bill_yuan"].to_numpy()},
    )
    tables["utility"] = (
        Table("electricity", electricity_frame, "holder_id", "month"),
        Table("water", water_frame, "holder_id", "month"),
    )

    assistance = records.assistance
    (assistance_ids,), defects["civil"] = corrupt_department(
        rngs["civil"], pop, "civil", [assistance["person"].to_numpy()]
    )
    assistance_frame = _monthly_frame(
        year,
        assistance["month"].to_numpy(),
        {"id_number": assistance_ids, "amount": assistance["amount"].to_numpy()},
    )
    tables["civil"] = (Table("assistance", assistance_frame, "id_number", "month"),)
    return Departments(tables=tables, defects=defects)
