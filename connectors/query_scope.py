"""What one query needs from each dataset: the one home of that rule, for the gateway and the connectors.

    dataset_needs(query, household_refs)  every dataset the query reads, with the measures, dimensions,
                                          household mapping and baseline it needs of each (first-mention
                                          order); the gateway's planner builds its extracts from it
    plan_connector(query, schema)         the same, for one connector's own datasets, checked against its
                                          own schema with the planning rules below; raises `ScopeError`
    check_dimension(...)                  a dimension usable in a query of that unit (public domain; in a
                                          household query only household attributes of the register)

A connector plans its own part of every query it is asked to serve and serves no field that plan does not
need, so a gateway holding only its own keys cannot widen an extract: the department's decision is
enforced where its data is. `fedgate approve` plans the same way against the department's own schema and
signs exactly that scope. The household mapping is part of every scope: it is needed only from the
register's dataset, for household queries (one row per household) and person queries (the public member
cap counts at most that many persons of one household); never for organisation queries.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from connectors.protocol import ApprovedDataset, ConnectorSchema, DatasetSchema, DimensionSchema
from connectors.query import COVERED, HAS_PREFIX, INCOME_TREND, SIZE_BAND, QuerySpec
from connectors.vocabulary import EntityKind, Unit

__all__ = ["DatasetNeed", "ScopeError", "check_dimension", "dataset_needs", "plan_connector"]

# Query attributes the gateway derives from other columns: no dataset serves them.
_DERIVED = (SIZE_BAND, INCOME_TREND, COVERED)


class ScopeError(Exception):
    """The query cannot be planned against a schema; `field` names the part of the query at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class DatasetNeed:
    """What one query needs of one dataset (`connector.dataset`)."""

    ref: str
    measures: tuple[str, ...] = ()
    dimensions: tuple[str, ...] = ()
    household: bool = False
    """the household token column: only from the register, for household and person queries"""
    baseline: bool = False
    """the measures over the query's baseline period too (datasets in the query's measure)"""

    @property
    def connector(self) -> str:
        return self.ref.partition(".")[0]

    @property
    def dataset(self) -> str:
        return self.ref.partition(".")[2]

    def approved(self) -> ApprovedDataset:
        """The scope a department signs for this need: exactly these fields, nothing more."""
        return ApprovedDataset(
            dataset=self.dataset, measures=self.measures, dimensions=self.dimensions, household=self.household
        )


def _add(table: dict[str, list[str]], ref: str, name: str | None) -> None:
    names = table.setdefault(ref, [])
    if name is not None and name not in names:
        names.append(name)


def _dataset_of(ref: str) -> str:
    return ".".join(ref.split(".")[:2])


def dataset_needs(query: QuerySpec, household_refs: Collection[str]) -> tuple[DatasetNeed, ...]:
    """Every dataset `query` reads and what it needs of each; `household_refs` are the datasets that map
    persons to households (the gateway's planner admits exactly one)."""
    measures: dict[str, list[str]] = {}
    dims: dict[str, list[str]] = {}
    for term in query.measure.terms if query.measure else ():
        if not term.is_members:  # the household size comes from the register's mapping
            _add(measures, term.dataset, term.measure)
    measured = set(measures)
    for ref in (*query.group_by, *(f.dimension for f in query.filters)):
        if ref in _DERIVED or ref.startswith(HAS_PREFIX):
            continue
        parts = ref.split(".")
        _add(dims, _dataset_of(ref), parts[2] if len(parts) == 3 else None)
    for group in query.member_groups:
        if group.dimension is not None:
            _add(dims, _dataset_of(group.dimension), group.dimension.split(".")[-1])
        elif group.measure is not None:
            _add(measures, _dataset_of(group.measure), group.measure.split(".")[-1])
    for ref in query.coverage:
        _add(dims, ref, None)
    household = query.unit in (Unit.HOUSEHOLD, Unit.PERSON)
    spine = list(household_refs) if household else []
    for ref in spine:
        _add(dims, ref, None)
    return tuple(
        DatasetNeed(
            ref=ref,
            measures=tuple(measures.get(ref, ())),
            dimensions=tuple(dims.get(ref, ())),
            household=ref in spine,
            baseline=query.baseline is not None and ref in measured,
        )
        for ref in dict.fromkeys([*measures, *dims])
    )


def check_dimension(ref: str, unit: Unit, ds: DatasetSchema, dim: DimensionSchema, field: str) -> None:
    """A dimension is usable only with a public domain, and in a household query only when it is a
    household attribute of the register (a person attribute would split a household across cells)."""
    if not dim.domain:
        raise ScopeError(field, f"dimension {ref} has no public domain")
    if unit is Unit.HOUSEHOLD and not (dim.household_level and ds.household_mapping):
        raise ScopeError(
            field, f"{ref} is a person attribute: household queries group only on household attributes"
        )


def plan_connector(query: QuerySpec, schema: ConnectorSchema) -> tuple[DatasetNeed, ...]:
    """What `query` needs of this connector's datasets, checked against its schema.

    Raises `ScopeError` when the query names a dataset, measure or dimension the schema does not declare,
    a filter value outside a public domain, a person attribute in a household query, a measure over a
    dataset not keyed by person, or a unit or epsilon the department's policy does not answer.
    """
    datasets = {d.name: d for d in schema.datasets}
    mapped = [f"{schema.connector}.{d.name}" for d in schema.datasets if d.household_mapping]
    own = [n for n in dataset_needs(query, mapped) if n.connector == schema.connector]
    for need in own:
        ds = datasets.get(need.dataset)
        if ds is None:
            raise ScopeError(
                "datasets", f"connector {schema.connector!r} declares no dataset {need.dataset!r}"
            )
        if ds.entity_kind is not EntityKind.PERSON:
            raise ScopeError("datasets", f"{need.ref} is keyed by {ds.entity_kind.value}, not person")
        missing = [m for m in need.measures if not any(x.name == m for x in ds.measures)]
        if missing:
            raise ScopeError("measure", f"{need.ref} declares no measure {missing[0]!r}")
        if need.baseline and ds.period_grain is None:
            raise ScopeError("baseline", f"{need.ref} has no period, so it has no baseline to compare")
    _check_dimensions(query, schema, datasets)
    if own:
        if query.unit not in schema.policy.allowed_units:
            raise ScopeError(
                "unit", f"department {schema.department} does not answer {query.unit.value} queries"
            )
        cap = schema.policy.max_epsilon_per_query
        if query.epsilon > cap:
            raise ScopeError(
                "epsilon", f"epsilon {query.epsilon} is above department {schema.department}'s cap {cap}"
            )
    return tuple(own)


def _check_dimensions(query: QuerySpec, schema: ConnectorSchema, datasets: dict[str, DatasetSchema]) -> None:
    """Grouped and filtered dimensions of this connector: declared, public, allowed for the unit, and
    every filter value (and key-group value) inside the public domain."""
    named: list[tuple[str, str, tuple[str, ...]]] = [
        (f"group_by.{i}", r, ()) for i, r in enumerate(query.group_by)
    ]
    named += [(f"filters.{i}", f.dimension, f.values) for i, f in enumerate(query.filters)]
    named += [
        (f"member_groups.{i}", g.dimension, g.values or ())
        for i, g in enumerate(query.member_groups)
        if g.dimension is not None
    ]
    for field, ref, values in named:
        parts = ref.split(".")
        if len(parts) != 3 or parts[0] != schema.connector:
            continue
        ds = datasets.get(parts[1])
        dim = None if ds is None else next((d for d in ds.dimensions if d.name == parts[2]), None)
        if ds is None or dim is None:
            raise ScopeError(field, f"{ref} is not a dimension this connector declares")
        if not field.startswith("member_groups"):
            # A key group reads a person attribute and leaves only "has a member" per household.
            check_dimension(ref, query.unit, ds, dim, field)
        outside = [v for v in values if v not in dim.domain]
        if outside:
            raise ScopeError(f"{field}.values", f"not a code of {ref}'s public domain")
