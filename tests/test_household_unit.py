"""The household as the protected unit, by construction: one register or no plan, unlinked persons left out,
filters before the member cap, and one household never more rows apart than the release pays for.

Small hand-made extracts with known tokens, so every row of the unit frame is accounted for.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from aggregation.executor import VALUE, unit_frame
from aggregation.planner import PlanError, plan_query
from aggregation.query import Filter, Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.config import EntityKind, Rollup, Unit
from connectors.protocol import (
    HOUSEHOLD_TOKEN_COLUMN,
    TOKEN_COLUMN,
    ConnectorSchema,
    DatasetSchema,
    DimensionSchema,
    MeasureSchema,
    PolicySchema,
)
from privacy.vocabulary import MAX_SUM_BOUND

SEX = ("1", "2")
VILLAGES = ("v1", "v2")


def _connector(name: str, dataset: DatasetSchema) -> ConnectorSchema:
    policy = PolicySchema(
        allowed_units=(Unit.PERSON, Unit.HOUSEHOLD),
        max_epsilon_per_query=Decimal(1),
        max_epsilon_per_window=Decimal(10),
        budget_window="calendar_year",
    )
    return ConnectorSchema(
        connector=name,
        department=name,
        description=name,
        signing_key="ed25519:x",
        approval_key="ed25519:y",
        policy=policy,
        datasets=(dataset,),
    )


def _register(name: str = "register") -> ConnectorSchema:
    return _connector(
        name,
        DatasetSchema(
            name="persons",
            description="registered residents",
            entity_kind=EntityKind.PERSON,
            period_grain=None,
            measures=(),
            dimensions=(
                DimensionSchema(name="village", domain=VILLAGES, household_level=True),
                DimensionSchema(name="sex", domain=SEX, derived_from_id=True),
            ),
            household_mapping=True,
        ),
    )


TAX = _connector(
    "tax",
    DatasetSchema(
        name="wages",
        description="wages",
        entity_kind=EntityKind.PERSON,
        period_grain="month",
        measures=(MeasureSchema(name="wage_income", unit="yuan", rollup=Rollup.SUM, lower=0, upper=100_000),),
        dimensions=(DimensionSchema(name="sex", domain=SEX, derived_from_id=True),),
    ),
)
CATALOG = {"register": _register(), "tax": TAX}


def _token(n: int) -> bytes:
    return n.to_bytes(16, "big")


# Household 1: persons 1, 2, 3 (person 1 has the smallest token); household 2: person 4; person 5 is
# registered without a household number. Persons 101 and 102 are in tax only (floating population).
REGISTER_ROWS = [
    (1, 1, "v1", "1"),
    (2, 1, "v1", "2"),
    (3, 1, "v1", "2"),
    (4, 2, "v2", "1"),
    (5, None, "v2", "2"),
]
TAX_ROWS = [(1, 30_000, "1"), (2, 40_000, "2"), (3, 50_000, "2"), (4, 60_000, "1"), (5, 70_000, "2")]
TAX_ROWS += [(101, 80_000, "1"), (102, 90_000, "2")]


def _tables(drop_household: int | None = None) -> dict[str, pa.Table]:
    register = [r for r in REGISTER_ROWS if drop_household is None or r[1] != drop_household]
    members = {r[0] for r in REGISTER_ROWS if r[1] == drop_household}
    tax = [r for r in TAX_ROWS if r[0] not in members]
    return {
        "register.persons": pa.table(
            {
                TOKEN_COLUMN: [_token(p) for p, *_ in register],
                HOUSEHOLD_TOKEN_COLUMN: [None if h is None else _token(1000 + h) for _, h, *_ in register],
                "village": [v for *_, v, _ in register],
                "sex": [s for *_, s in register],
            }
        ),
        "tax.wages": pa.table(
            {
                TOKEN_COLUMN: [_token(p) for p, *_ in tax],
                "wage_income": [w for _, w, _ in tax],
                "sex": [s for *_, s in tax],
            }
        ),
    }


def _person_query(**changes: Any) -> QuerySpec:
    fields: dict[str, Any] = {
        "purpose": "Wage earners per household member cap, unit tests",
        "unit": Unit.PERSON,
        "period_start": "2025-01",
        "period_end": "2025-12",
        "measure": Measure(terms=(Term(dataset="tax.wages", measure="wage_income"),), lower=0, upper=100_000),
        "statistics": (Statistic(kind=StatisticKind.COUNT),),
        "epsilon": Decimal("0.5"),
        "member_cap": 2,
    }
    fields.update(changes)
    return QuerySpec(**fields)


def _household_query() -> QuerySpec:
    return _person_query(unit=Unit.HOUSEHOLD, member_cap=None)


@pytest.mark.parametrize("make", [_person_query, _household_query])
def test_without_a_register_no_household_or_person_query_plans(make: Any) -> None:
    with pytest.raises(PlanError) as err:
        plan_query(make(), {"tax": TAX})
    assert err.value.field == "unit"
    assert "household register" in err.value.message and "enables" in err.value.message


@pytest.mark.parametrize("make", [_person_query, _household_query])
def test_two_registers_are_refused_naming_both(make: Any) -> None:
    with pytest.raises(PlanError) as err:
        plan_query(make(), {**CATALOG, "census": _register("census")})
    assert err.value.field == "unit"
    assert "register.persons" in err.value.message and "census.persons" in err.value.message
    assert "exactly one" in err.value.message


def test_every_person_query_reads_the_register() -> None:
    plan = plan_query(_person_query(), CATALOG)
    assert plan.spine == "register.persons"
    assert [e.ref for e in plan.extracts if e.household] == ["register.persons"]


def test_unlinked_persons_are_never_their_own_unit() -> None:
    wide = plan_query(_person_query(member_cap=8), CATALOG)
    frame = unit_frame(wide, _tables())
    # Persons 1-4: person 5 has no household number, 101 and 102 are not in the register.
    assert sorted(frame[VALUE].to_list()) == [30_000, 40_000, 50_000, 60_000]
    capped = unit_frame(plan_query(_person_query(member_cap=1), CATALOG), _tables())
    assert capped.height == 2  # one per household


def test_filters_apply_before_the_member_cap() -> None:
    # Person 1 (sex 1) ranks first in household 1; capping first would keep them and then filter them out.
    women = Filter(dimension="tax.wages.sex", values=("2",))
    frame = unit_frame(plan_query(_person_query(member_cap=1, filters=(women,)), CATALOG), _tables())
    assert frame.height == 1 and frame[VALUE].to_list()[0] in (40_000, 50_000)


def test_coverage_counts_only_linked_register_persons() -> None:
    query = _person_query(measure=None, coverage=("tax.wages",), group_by=("person.covered",), member_cap=8)
    frame = unit_frame(plan_query(query, CATALOG), _tables())
    assert Counter(frame["person.covered"].to_list()) == {"1": 4}


@pytest.mark.parametrize("cap", [1, 2, 8])
@pytest.mark.parametrize("relation", ["add_remove_household", "change_household"])
def test_one_household_moves_the_frame_by_at_most_what_the_release_pays_for(cap: int, relation: str) -> None:
    from gateway.runner import release_spec

    query = _person_query(member_cap=cap, neighbouring=relation, group_by=("tax.wages.sex",))
    plan = plan_query(query, CATALOG)
    d_in = release_spec(plan).d_in
    assert d_in == cap * (2 if relation == "change_household" else 1)
    full = Counter(unit_frame(plan, _tables()).rows())
    for household in (1, 2):
        without = Counter(unit_frame(plan, _tables(drop_household=household)).rows())
        distance = sum(((full - without) + (without - full)).values())
        assert 1 <= distance <= min(cap, 3)


def test_the_default_relation_keeps_digests_and_the_change_relation_is_another_query() -> None:
    query = _person_query()
    assert "neighbouring" not in query.canonical().decode()
    changed = _person_query(neighbouring="change_household")
    assert changed.digest != query.digest and b'"neighbouring":"change_household"' in changed.canonical()
    assert query.model_dump(mode="json")["neighbouring"] == "add_remove_household"


def test_sums_wider_than_opendp_can_bound_are_refused_at_planning() -> None:
    wide = Measure(
        terms=(Term(dataset="tax.wages", measure="wage_income"),), lower=0, upper=MAX_SUM_BOUND + 1
    )
    with pytest.raises(PlanError) as err:
        plan_query(_person_query(measure=wide, statistics=(Statistic(kind=StatisticKind.SUM),)), CATALOG)
    assert err.value.field == "measure.upper" and str(MAX_SUM_BOUND) in err.value.message
    # A count over the same measure sums nothing: it plans.
    plan_query(_person_query(measure=wide), CATALOG)
