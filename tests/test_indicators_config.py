"""The monitoring configuration as data: its file's shape, its fit with a catalog (each missing dataset,
measure or dimension named with what it should be), the pack's configured split, and no dataset named
anywhere in the indicator library."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregation.indicators import PACKS
from aggregation.indicators.catalog_check import ConfigProblem, problems
from aggregation.indicators.config_file import (
    MonitoringConfigError,
    config_digest,
    configured_pack,
    load_monitoring_config,
    parse_monitoring_config,
)
from connectors.config import Unit, load_config
from connectors.protocol import ConnectorSchema
from connectors.service import build_service
from connectors.synth import generate_county
from connectors.synth.layout import RENAMED, STANDARD, Layout
from connectors.synth.monitoring import monitoring_config
from gateway.dev.localfed import connector_names

ROOT = Path(__file__).resolve().parent.parent
Catalogs = dict[str, dict[str, ConnectorSchema]]


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> Catalogs:
    """The catalog of one small synthetic county under each layout."""
    out: Catalogs = {}
    for layout in (STANDARD, RENAMED):
        county = tmp_path_factory.mktemp(layout.name)
        generate_county(county, persons=200, seed=5, layout=layout)
        out[layout.name] = {
            n: build_service(load_config(county / "connectors" / f"{n}.yaml")).schema
            for n in connector_names(county)
        }
    return out


def _doc(layout: Layout = STANDARD, **changes: Any) -> dict[str, Any]:
    doc = monitoring_config(layout)
    doc.update(changes)
    return doc


# --- the file's shape


def test_a_file_round_trips_and_ranges_of_edges_expand(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump(_doc(), allow_unicode=True), encoding="utf-8")
    config = load_monitoring_config(path)
    assert config.household_edges[:3] == (0, 2_000, 4_000) and config.household_edges[-1] == 1_500_000
    assert 58_000 in config.household_edges and 60_000 in config.household_edges
    assert config.key_group_names == ("dibao", "fishery", "pensioner", "no_wage_earner", "migrant")
    again = parse_monitoring_config(config.model_dump(mode="json"))
    assert again == config and config_digest(again) == config_digest(config)
    assert config_digest(parse_monitoring_config(_doc(size_cap=7))) != config_digest(config)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"income_terms": []}, "income_terms", "at least 1"),
        ({"village": "villages"}, "village", "pattern"),
        ({"income_upper": -300_000}, "", "income_upper must be above"),
        ({"household_edges": [0, 5, 5]}, "", "strictly increasing"),
        ({"household_edges": [{"from": 0, "to": 10}]}, "household_edges", "from, to and step"),
        ({"bands": {"wide": [0, 9_000_000]}}, "", "band wide"),
        ({"drop_share": "1.5"}, "drop_share", "less than 1"),
        ({"pack_shares": {"income_bands": "1/2"}}, "pack_shares", "each indicator of the pack"),
        ({"pack_shares": {"income_bands": "-1"}}, "pack_shares.income_bands", "positive"),
        ({"colour": "blue"}, "colour", "Extra inputs"),
    ],
)
def test_a_bad_file_names_the_key(changes: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(MonitoringConfigError) as caught:
        parse_monitoring_config(_doc(**changes), source="county.yaml")
    assert caught.value.field == field
    assert words in str(caught.value) and str(caught.value).startswith("county.yaml: ")


def test_a_missing_required_key_and_a_broken_file_are_named(tmp_path: Path) -> None:
    doc = _doc()
    del doc["coverage_datasets"]
    with pytest.raises(MonitoringConfigError) as caught:
        parse_monitoring_config(doc)
    assert caught.value.field == "coverage_datasets"
    broken = tmp_path / "broken.yaml"
    broken.write_text("income_terms: [\n  - dataset: tax.wages\n", encoding="utf-8")
    with pytest.raises(MonitoringConfigError, match="not valid YAML at line"):
        load_monitoring_config(broken)
    with pytest.raises(MonitoringConfigError, match="cannot be read"):
        load_monitoring_config(tmp_path / "absent.yaml")
    with pytest.raises(MonitoringConfigError, match="a mapping"):
        parse_monitoring_config(["not", "a", "mapping"])


def test_the_pack_takes_the_configured_split_and_still_charges_its_total() -> None:
    shares = {
        "income_bands": "0.3",
        "urban_rural_ratio": "1/10",
        "income_distribution": "0.2",
        "coverage": "0.1",
        "key_groups": "0.2",
        "early_warning": "0.1",
    }
    config = parse_monitoring_config(_doc(pack_shares=shares))
    pack = configured_pack(PACKS["monthly"], config)
    assert {m.indicator.name: m.weight for m in pack.members}["income_bands"] == Fraction(3, 10)
    members = pack.params(period="2025-12", epsilon=Decimal("0.9"), analyst="a", groups=())
    assert dict((t.name, p.epsilon) for t, p in members)["income_bands"] == Decimal("0.27")
    assert sum((p.epsilon for _, p in members), Decimal(0)) == Decimal("0.9")
    # Without a configured split the pack keeps its declared one.
    assert configured_pack(PACKS["monthly"], parse_monitoring_config(_doc())) == PACKS["monthly"]


# --- the fit with a catalog


def test_each_layout_fits_its_own_catalog(catalogs: Catalogs) -> None:
    for layout in (STANDARD, RENAMED):
        config = parse_monitoring_config(monitoring_config(layout))
        assert problems(config, catalogs[layout.name]) == [], layout.name


def test_the_standard_configuration_on_a_renamed_catalog_names_every_missing_field(
    catalogs: Catalogs,
) -> None:
    found = problems(parse_monitoring_config(_doc()), catalogs[RENAMED.name])
    fields = {p.field: p.message for p in found}
    # Every income term, both areas, every coverage dataset and every key group, each by its own field.
    assert set(fields) == {
        *(f"income_terms.{i}.dataset" for i in range(5)),
        "village",
        "urban_rural",
        *(f"coverage_datasets.{i}" for i in range(5)),
        *(f"key_groups.{i}.definition.measure" for i in (0, 2, 3)),
        *(f"key_groups.{i}.definition.dimension" for i in (1, 4)),
    }
    assert "connector 'tax' declares no dataset 'wages'" in fields["income_terms.0.dataset"]
    assert "payroll" in fields["income_terms.0.dataset"]  # what the catalog offers instead
    assert "wage_income" in fields["income_terms.0.dataset"]  # what the field should hold
    assert "no connector named 'social'" in fields["income_terms.2.dataset"]
    assert "hrss" in fields["income_terms.2.dataset"]
    assert "household register" in fields["village"] and "hukou.residents" in fields["village"]


def test_a_missing_measure_a_person_attribute_and_a_code_outside_the_domain(catalogs: Catalogs) -> None:
    catalog = catalogs[STANDARD.name]
    doc = _doc()
    doc["income_terms"][0]["measure"] = "salary"
    doc["urban_rural"] = "register.persons.relation"
    doc["key_groups"][1]["definition"]["values"] = ["5-04", "9-99"]
    doc["coverage_datasets"] = ["tax.employer_wages"]
    fields = {p.field: p.message for p in problems(parse_monitoring_config(doc), catalog)}
    assert set(fields) == {
        "income_terms.0.measure",
        "urban_rural",
        "key_groups.1.definition.values",
        "coverage_datasets.0",
    }
    assert "declares no measure 'salary'" in fields["income_terms.0.measure"]
    assert "wage_income" in fields["income_terms.0.measure"]
    assert "person attribute" in fields["urban_rural"] and "village" in fields["urban_rural"]
    assert "9-99" in fields["key_groups.1.definition.values"]
    assert "keyed by organisation" in fields["coverage_datasets.0"]


def test_urban_prefixes_must_split_the_domain_and_the_pack_is_planned(catalogs: Catalogs) -> None:
    catalog = dict(catalogs[STANDARD.name])
    config = parse_monitoring_config(_doc())
    fields = [p.field for p in problems(config.model_copy(update={"urban_prefixes": ("9",)}), catalog)]
    assert fields == ["urban_prefixes"]
    # Every name is found, but the planner has the last word: a department that answers household
    # queries only cannot give the coverage indicator its person counts.
    civil = catalog["civil"]
    catalog["civil"] = civil.model_copy(
        update={"policy": civil.policy.model_copy(update={"allowed_units": (Unit.HOUSEHOLD,)})}
    )
    assert problems(config, catalog) == [
        ConfigProblem("coverage.county", "unit: department civil does not answer person queries")
    ]
    empty = problems(config, {})
    assert any(p.field == "village" and "no connector named 'register'" in p.message for p in empty)


# --- nothing in the library names a dataset

LIBRARY = [*sorted((ROOT / "aggregation" / "indicators").glob("*.py")), ROOT / "gateway" / "indicators.py"]


def test_nothing_in_the_indicator_library_names_a_dataset(catalogs: Catalogs) -> None:
    names: set[str] = set()
    for catalog in catalogs.values():
        for schema in catalog.values():
            for ds in schema.datasets:
                names.add(f"{schema.connector}.{ds.name}")
                names.update(f"{schema.connector}.{ds.name}.{m.name}" for m in ds.measures)
    assert "tax.wages" in names and "tax.payroll" in names
    pattern = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in sorted(names)) + r")(?![\w])")
    found = {
        f"{path.relative_to(ROOT)}: {m.group(1)}"
        for path in LIBRARY
        for m in pattern.finditer(path.read_text(encoding="utf-8"))
    }
    assert not found, sorted(found)
    # The check itself finds a name where one is written.
    assert pattern.search('Term(dataset="tax.wages", measure="wage_income")')
