"""Planning and token joins against a real synthetic county, checked exactly against its truth file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from county_fixture import headline_query, truth, urban_filter

from aggregation.executor import VALUE, unit_frame
from aggregation.planner import Plan, PlanError, plan_query
from aggregation.query import SIZE_BAND, Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.config import Unit, load_config
from connectors.extract import Extractor
from connectors.protocol import (
    ConnectorSchema,
)
from connectors.service import ConnectorService, build_service
from connectors.synth import generate_county

CONNECTORS = ("register", "tax", "social", "utility", "civil")


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("county")
    generate_county(out, persons=3_000, seed=5)
    return out


@pytest.fixture(scope="module")
def services(county: Path) -> dict[str, ConnectorService]:
    return {name: build_service(load_config(county / "connectors" / f"{name}.yaml")) for name in CONNECTORS}


@pytest.fixture(scope="module")
def catalog(services: dict[str, ConnectorService]) -> dict[str, ConnectorSchema]:
    return {name: s.schema for name, s in services.items()}


def _run(plan: Plan, services: dict[str, ConnectorService]) -> pl.DataFrame:
    """Run each planned extract in process (approvals are the service's business, not tested here)."""
    q = plan.query
    tables = {}
    for e in plan.extracts:
        service = services[e.connector]
        req = e.unsafe_unapproved_request(q, epoch=service.keyring.current_epoch)
        dataset = service.cfg.dataset(e.dataset)
        assert dataset is not None
        tables[e.ref] = Extractor(service.loaded, service.source, service.keyring).run(req, dataset).table
    return unit_frame(plan, tables)


def _share(frame: pl.DataFrame, low: int, high: int) -> float:
    inside = frame.filter((pl.col(VALUE) >= low) & (pl.col(VALUE) < high)).height
    return inside / frame.height


def test_household_income_bands_match_the_as_linked_truth(
    county: Path, services: dict[str, ConnectorService], catalog: dict[str, ConnectorSchema]
) -> None:
    plan = plan_query(headline_query(group_by=()), catalog)
    assert plan.spine == "register.persons" and plan.unit_multiplicity == 1
    frame = _run(plan, services)
    linked = truth(county)["as_linked"]
    assert frame.height == linked["household_count"]
    assert _share(frame, 100_000, 500_000) == pytest.approx(
        linked["share_income_100k_500k"]["county"], abs=1e-12
    )
    assert _share(frame, 200_000, 600_000) == pytest.approx(
        linked["share_income_200k_600k"]["county"], abs=1e-12
    )


def test_bands_by_village_and_urban_filter(
    county: Path, services: dict[str, ConnectorService], catalog: dict[str, ConnectorSchema]
) -> None:
    query = headline_query().model_copy(update={"filters": (urban_filter(),)})
    frame = _run(plan_query(query, catalog), services)
    linked = truth(county)["as_linked"]
    assert _share(frame, 100_000, 500_000) == pytest.approx(
        linked["share_income_100k_500k"]["urban"], abs=1e-12
    )
    by_village = frame.group_by("register.persons.village").agg(
        ((pl.col(VALUE) >= 100_000) & (pl.col(VALUE) < 500_000)).mean().alias("share")
    )
    expected = linked["share_income_100k_500k"]["by_village"]
    for village, share in by_village.iter_rows():
        assert share == pytest.approx(expected[village], abs=1e-12)


def test_one_row_per_household_and_size_bands(
    services: dict[str, ConnectorService], catalog: dict[str, ConnectorSchema]
) -> None:
    query = headline_query(group_by=(SIZE_BAND,))
    frame = _run(plan_query(query, catalog), services)
    assert set(frame[SIZE_BAND].unique()) <= {"1", "2", "3", "4", "5+"}
    assert frame.columns == [SIZE_BAND, VALUE]


def test_person_query_caps_members_per_household(
    services: dict[str, ConnectorService], catalog: dict[str, ConnectorSchema], county: Path
) -> None:
    query = QuerySpec(
        purpose="Persons with wage income, by sex, capped per household",
        unit=Unit.PERSON,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=(Term(dataset="tax.wages", measure="wage_income"),), lower=0, upper=1_000_000),
        group_by=("tax.wages.sex",),
        statistics=(Statistic(kind=StatisticKind.COUNT),),
        epsilon=Decimal("0.5"),
        member_cap=1,
    )
    plan = plan_query(query, catalog)
    assert plan.unit_multiplicity == 1 and plan.spine == "register.persons"
    capped = _run(plan, services)
    uncapped = _run(plan_query(query.model_copy(update={"member_cap": 8}), catalog), services)
    assert capped.height < uncapped.height
    # The floating population (in tax, not in the register) belongs to no known household: not counted.
    facts = truth(county)
    assert facts["floating_population"]["in_tax_wages"] > 0
    assert uncapped.height <= facts["registered_persons"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"group_by": ("register.persons.sex",)}, "group_by.0"),
        ({"group_by": ("tax.salaries.village",)}, "group_by.0"),
        ({"group_by": ("register.persons.colour",)}, "group_by.0"),
        ({"filters": ({"dimension": "register.persons.village", "values": ("999",)},)}, "filters.0.values.0"),
        ({"epsilon": Decimal("5")}, "epsilon"),
        ({"unit": Unit.ORGANISATION}, "unit"),
    ],
)
def test_planning_errors_name_the_field(
    catalog: dict[str, ConnectorSchema], change: dict[str, object], field: str
) -> None:
    data = headline_query().model_dump()
    data.update(change)
    query = QuerySpec.model_validate(data)
    with pytest.raises(PlanError) as err:
        plan_query(query, catalog)
    assert err.value.field == field


def test_unknown_measure_is_refused(catalog: dict[str, ConnectorSchema]) -> None:
    data = headline_query().model_dump()
    data["measure"]["terms"][0]["measure"] = "salary"
    with pytest.raises(PlanError) as err:
        plan_query(QuerySpec.model_validate(data), catalog)
    assert err.value.field == "measure.terms.0.measure"


def test_query_identity_is_its_canonical_digest() -> None:
    a = headline_query()
    b = QuerySpec.model_validate_json(a.model_dump_json())
    assert a.digest == b.digest and a.query_id == b.query_id and a.query_id.startswith("q-")
    assert headline_query(epsilon="0.5").digest != a.digest


def _has_assistance_query(**changes: object) -> QuerySpec:
    data = headline_query(group_by=("household.has_assistance",)).model_dump()
    data["member_groups"] = [
        {"name": "assistance", "measure": "civil.assistance.assistance_income", "at_least": 1},
        {"name": "fishery", "dimension": "social.occupations.occupation_medium", "values": ["5-04"]},
    ]
    data.update(changes)
    return QuerySpec.model_validate(data)


def test_households_with_a_member_in_a_key_group(
    county: Path, services: dict[str, ConnectorService], catalog: dict[str, ConnectorSchema]
) -> None:
    import csv
    import sqlite3

    from connectors.errors import InvalidIdentifier
    from connectors.ids import IdKind, normalize

    query = _has_assistance_query(filters=({"dimension": "household.has_fishery", "values": ("0", "1")},))
    frame = _run(plan_query(query, catalog), services)
    assert set(frame["household.has_assistance"].unique()) <= {"0", "1"}
    # Independently of tokens and joins: households whose registered members received assistance in 2025.
    helped: dict[str, int] = {}
    with (county / "civil" / "assistance.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                nid = normalize(IdKind.RESIDENT_ID, row["id_number"])
            except InvalidIdentifier:
                continue
            if row["month"].startswith("2025"):
                helped[nid] = helped.get(nid, 0) + int(row["amount"])
    with sqlite3.connect(county / "register.db") as reg:
        rows = reg.execute("SELECT id_number, household_no FROM persons").fetchall()
    households = set()
    for raw, household in rows:
        try:
            nid = normalize(IdKind.RESIDENT_ID, raw)
        except InvalidIdentifier:
            continue
        if helped.get(nid, 0) >= 1:
            households.add(household.strip().upper())
    assert frame.filter(pl.col("household.has_assistance") == "1").height == len(households) > 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"group_by": ("household.has_pension",)}, "group_by.0"),
        (
            {
                "member_groups": [
                    {
                        "name": "fishery",
                        "dimension": "social.occupations.occupation_medium",
                        "values": ["9-99"],
                    }
                ]
            },
            "member_groups.0.values.0",
        ),
        (
            {"member_groups": [{"name": "assistance", "measure": "civil.assistance.salary", "at_least": 1}]},
            "member_groups.0.measure",
        ),
    ],
)
def test_key_group_errors_name_the_field(
    catalog: dict[str, ConnectorSchema], change: dict[str, object], field: str
) -> None:
    data = _has_assistance_query().model_dump()
    data.update(change)
    if "member_groups" in change:
        data["group_by"] = ()
    with pytest.raises(PlanError) as err:
        plan_query(QuerySpec.model_validate(data), catalog)
    assert err.value.field == field


def test_a_key_group_attribute_is_released_over_its_public_domain(
    services: dict[str, ConnectorService], catalog: dict[str, ConnectorSchema]
) -> None:
    from gateway.runner import release_spec
    from privacy.release import prepare_release

    plan = plan_query(_has_assistance_query(), catalog)
    result = prepare_release(release_spec(plan)).run(_run(plan, services))
    keys = {c.groups["household.has_assistance"] for c in result.cells}
    assert keys == {"0", "1", None}  # both public values and the public "other" cell
