"""Does a monitoring configuration fit a federation's catalog? Every problem, each naming its field.

    problems(config, catalog) -> [ConfigProblem(field, message)]     empty when the pack can be planned

Each income term, coverage dataset, area dimension and key group is looked up by itself, so one reading
names every missing dataset, measure or dimension at once, with what the catalog offers instead and what
the field should be. When all of them are found, every query of the calendar's packs is planned against the
catalog as the final word (the planner's own rules: household-level attributes, public domains, caps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from aggregation.indicators.model import IndicatorError, MonitoringConfig
from aggregation.indicators.pack import CALENDAR
from aggregation.planner import PlanError, plan_query
from aggregation.query import split_dimension
from connectors.config import EntityKind
from connectors.protocol import ConnectorSchema, DatasetSchema

__all__ = ["ConfigProblem", "problems"]

# The pack is planned, never run: any month and an epsilon under every department's cap will do.
_PROBE_PERIOD = "2001-12"
_PROBE_EPSILON = Decimal("0.1")  # planned, never run: splits into parts above the floor, under every cap
_LISTED = 12
"""at most this many names are listed as what the catalog offers"""


@dataclass(frozen=True)
class ConfigProblem:
    field: str
    message: str


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED]) + (", ..." if len(items) > _LISTED else "")
    return shown or "none"


class _Catalog:
    def __init__(self, catalog: Mapping[str, ConnectorSchema]) -> None:
        self.catalog = catalog
        self.found: list[ConfigProblem] = []

    def problem(self, field: str, message: str) -> None:
        self.found.append(ConfigProblem(field, message))

    def person_datasets(self) -> list[str]:
        return sorted(
            f"{s.connector}.{d.name}"
            for s in self.catalog.values()
            for d in s.datasets
            if d.entity_kind is EntityKind.PERSON
        )

    def dataset(self, ref: str, field: str, should: str) -> DatasetSchema | None:
        """The person dataset `ref`, or None after recording why it is not one."""
        connector, _, name = ref.partition(".")
        schema = self.catalog.get(connector)
        if schema is None:
            self.problem(
                field,
                f"no connector named {connector!r} in the catalog (registered: "
                f"{_names(sorted(self.catalog))}); {should}",
            )
            return None
        ds = next((d for d in schema.datasets if d.name == name), None)
        if ds is None:
            self.problem(
                field,
                f"connector {connector!r} declares no dataset {name!r} (its datasets: "
                f"{_names([d.name for d in schema.datasets])}); {should}",
            )
            return None
        if ds.entity_kind is not EntityKind.PERSON:
            self.problem(
                field,
                f"{ref} is keyed by {ds.entity_kind.value}; {should} (person datasets: "
                f"{_names(self.person_datasets())})",
            )
            return None
        return ds

    def measure(self, ref: str, ds: DatasetSchema, measure: str, field: str, should: str) -> None:
        if not any(m.name == measure for m in ds.measures):
            self.problem(
                field,
                f"{ref} declares no measure {measure!r} (its measures: "
                f"{_names([m.name for m in ds.measures])}); {should}",
            )

    def area(self, ref: str, field: str, what: str) -> tuple[str, ...] | None:
        """A household-level dimension of the household register; its domain, or None."""
        registers = [
            f"{s.connector}.{d.name}"
            for s in self.catalog.values()
            for d in s.datasets
            if d.household_mapping
        ]
        should = (
            f"name the household register's {what} dimension, declared household_level (the register: "
            f"{_names(registers)})"
        )
        connector, dataset, dimension = split_dimension(ref)
        ds = self.dataset(f"{connector}.{dataset}", field, should)
        if ds is None:
            return None
        if not ds.household_mapping:
            self.problem(field, f"{connector}.{dataset} is not the household register; " + should)
            return None
        dim = next((d for d in ds.dimensions if d.name == dimension), None)
        level = [d.name for d in ds.dimensions if d.household_level]
        if dim is None or not dim.household_level or not dim.domain:
            why = (
                f"declares no dimension {dimension!r}"
                if dim is None
                else f"declares {dimension!r} as a person attribute"
                if not dim.household_level
                else f"declares {dimension!r} without a public domain"
            )
            self.problem(
                field,
                f"{connector}.{dataset} {why} (its household-level dimensions: {_names(level)}); {should}",
            )
            return None
        return dim.domain

    def key_group(self, i: int, config: MonitoringConfig) -> None:
        group = config.key_groups[i].definition
        field = f"key_groups.{i}.definition"
        ref = group.measure if group.measure is not None else group.dimension or ""
        kind = "measure" if group.measure is not None else "dimension"
        try:
            connector, dataset, name = split_dimension(ref)
        except ValueError:
            self.problem(f"{field}.{kind}", f"{ref!r} is not connector.dataset.{kind}")
            return
        should = f"name a person dataset's {kind} for the key group {group.name!r}"
        ds = self.dataset(f"{connector}.{dataset}", f"{field}.{kind}", should)
        if ds is None:
            return
        if group.measure is not None:
            self.measure(f"{connector}.{dataset}", ds, name, f"{field}.{kind}", should)
            return
        dim = next((d for d in ds.dimensions if d.name == name), None)
        if dim is None or not dim.domain:
            self.problem(
                f"{field}.{kind}",
                f"{connector}.{dataset} declares no dimension {name!r} with a public domain (its "
                f"dimensions: {_names([d.name for d in ds.dimensions])}); {should}",
            )
            return
        outside = [v for v in group.values or () if v not in dim.domain]
        if outside:
            self.problem(
                f"{field}.values",
                f"{_names(outside)} not in the public domain of {ref}; list codes of its code list",
            )


def problems(config: MonitoringConfig, catalog: Mapping[str, ConnectorSchema]) -> list[ConfigProblem]:
    """Everything in `config` the catalog cannot answer; an empty list when the calendar's packs plan."""
    check = _Catalog(catalog)
    for i, term in enumerate(config.income_terms):
        should = f"name the person dataset that holds {term.measure!r} for the income proxy"
        if term.is_members:
            check.problem(f"income_terms.{i}.dataset", "household members are not income; " + should)
            continue
        ds = check.dataset(term.dataset, f"income_terms.{i}.dataset", should)
        if ds is not None:
            check.measure(
                term.dataset,
                ds,
                term.measure,
                f"income_terms.{i}.measure",
                f"name the measure of {term.dataset} that goes into the income proxy",
            )
    check.area(config.village, "village", "village (or community)")
    codes = check.area(config.urban_rural, "urban_rural", "urban-rural code")
    if codes is not None and not any(config.is_urban(c) for c in codes):
        check.problem(
            "urban_prefixes",
            f"no code of {config.urban_rural}'s domain starts with {', '.join(config.urban_prefixes)}: "
            "urban and rural could not be told apart",
        )
    for i, ref in enumerate(config.coverage_datasets):
        check.dataset(ref, f"coverage_datasets.{i}", "name a person dataset whose rows are income records")
    for i in range(len(config.key_groups)):
        check.key_group(i, config)
    if check.found:
        return check.found
    return _plan_the_pack(config, catalog)


def _plan_the_pack(config: MonitoringConfig, catalog: Mapping[str, ConnectorSchema]) -> list[ConfigProblem]:
    groups = tuple(g.definition for g in config.key_groups)
    try:
        for pack in CALENDAR:
            members = pack.params(period=_PROBE_PERIOD, epsilon=_PROBE_EPSILON, analyst="-", groups=groups)
            for template, params in members:
                if template.name == "key_groups" and not groups:
                    continue
                for q in template.queries(params, pack.config_for(template.name, config)):
                    try:
                        plan_query(q.spec, catalog)
                    except PlanError as exc:
                        return [ConfigProblem(f"{template.name}.{q.role}", f"{exc.field}: {exc.message}")]
    except IndicatorError as exc:
        return [ConfigProblem(exc.field, exc.message)]
    return []
