"""Plan a query against the catalog: which connector answers which columns, and what is public.

What each dataset is asked for comes from `connectors.query_scope.dataset_needs`, the rule every
department's connector applies again to the query it is asked to serve (so the two cannot disagree).
Planning validates everything an analyst named against the registered schemas (unknown datasets,
measures or dimensions, filter values outside a public domain, person attributes in a household query,
epsilon above a department's cap) and fails with the offending field before any data is asked for.

The household is the protected unit by construction: household and person queries plan only when
exactly one enabled dataset (the household register) maps persons to households, because the register
is what bounds one household's rows (one household row; at most `member_cap` persons). The catalog holds
enabled connectors only and the runner plans again before reserving anything, so a register disabled or
duplicated after approval stops the run before any budget is charged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aggregation.limits import MAX_CELLS_X_BINS, cells_of, cells_x_bins
from aggregation.query import (
    COVERED,
    COVERED_DOMAIN,
    HAS_PREFIX,
    INCOME_TREND,
    MEMBER_FLAG_DOMAIN,
    SIZE_BAND,
    SIZE_BANDS,
    TREND_DOMAIN,
    MemberGroup,
    QuerySpec,
    StatisticKind,
    split_dimension,
)
from connectors.protocol import (
    Approval,
    ApprovedDataset,
    ConnectorSchema,
    DatasetSchema,
    DimensionSchema,
    ExtractRequest,
    SignedApproval,
    TokenSpec,
)
from connectors.query_scope import DatasetNeed, ScopeError, check_dimension, dataset_needs
from connectors.vocabulary import EntityKind, Unit
from privacy.vocabulary import MAX_SUM_BOUND, sum_bound_message


class PlanError(Exception):
    """The query cannot be planned; `field` names the offending part of the query."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class ExtractPlan:
    connector: str
    department: str
    dataset: str
    measures: tuple[str, ...]
    dimensions: tuple[str, ...]
    household: bool = False
    baseline: bool = False
    """carry the query's baseline period too (datasets whose measures make up the query's measure)"""

    @property
    def ref(self) -> str:
        return f"{self.connector}.{self.dataset}"

    def scope(self) -> ApprovedDataset:
        """What the department's approval must cover for this part: its fields and household mapping."""
        return ApprovedDataset(
            dataset=self.dataset, measures=self.measures, dimensions=self.dimensions, household=self.household
        )

    def asks(self, query: QuerySpec) -> dict[str, Any]:
        """What this part of `query` asks its connector for: the fields of its extract request that no
        approval, token epoch or signature decides (the gateway's federation client adds those)."""
        baseline = query.baseline if self.baseline else None
        return {
            "connector": self.connector,
            "query_id": query.query_id,
            "query_digest": query.digest,
            "query": query,
            "dataset": self.dataset,
            "unit": query.unit,
            "period_start": query.period_start,
            "period_end": query.period_end,
            "baseline_start": baseline.period_start if baseline else None,
            "baseline_end": baseline.period_end if baseline else None,
            "measures": self.measures,
            "dimensions": self.dimensions,
            "household": self.household,
            "epsilon": query.epsilon,
        }

    def unsafe_unapproved_request(self, query: QuerySpec, *, epoch: int) -> ExtractRequest:
        """A request with an unsigned approval, for running an `Extractor` in process (benchmarks, tests).

        No connector service accepts it: the service checks the department's signature before extracting.
        """
        approval = Approval(
            department=self.department,
            query_id=query.query_id,
            query_digest=query.digest,
            unit=query.unit,
            datasets=(self.scope(),),
            epsilon=query.epsilon,
        )
        unsigned = SignedApproval(approval=approval, key_fingerprint="0" * 64, signature="")
        return ExtractRequest(**self.asks(query), token=TokenSpec(epoch=epoch), approval=unsigned)


@dataclass(frozen=True)
class GroupColumn:
    ref: str
    domain: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    query: QuerySpec
    extracts: tuple[ExtractPlan, ...]
    spine: str
    """`connector.dataset` of the household register (every household and person query has one)."""
    groups: tuple[GroupColumn, ...]
    filters: tuple[tuple[str, frozenset[str]], ...]
    departments: tuple[str, ...]
    unit_multiplicity: int
    """Rows one household can contribute to the measured frame: 1, or the member cap."""
    coverage: tuple[str, ...] = ()
    """`connector.dataset` refs whose persons count as covered (person queries over the register)."""


def _dataset(
    catalog: Mapping[str, ConnectorSchema], ref: str, field: str
) -> tuple[ConnectorSchema, DatasetSchema]:
    connector, _, name = ref.partition(".")
    schema = catalog.get(connector)
    if schema is None:
        raise PlanError(field, f"no enabled connector named {connector!r} in the catalog")
    for ds in schema.datasets:
        if ds.name == name:
            return schema, ds
    raise PlanError(field, f"connector {connector!r} declares no dataset {name!r}")


def _dimension(
    catalog: Mapping[str, ConnectorSchema], ref: str, field: str, unit: Unit
) -> tuple[ConnectorSchema, DatasetSchema, DimensionSchema]:
    try:
        connector, dataset, dimension = split_dimension(ref)
    except ValueError as exc:
        raise PlanError(field, str(exc)) from None
    schema, ds = _dataset(catalog, f"{connector}.{dataset}", field)
    dim = next((d for d in ds.dimensions if d.name == dimension), None)
    if dim is None:
        raise PlanError(field, f"dataset {connector}.{dataset} declares no dimension {dimension!r}")
    try:
        check_dimension(ref, unit, ds, dim, field)
    except ScopeError as exc:
        raise PlanError(exc.field, exc.message) from None
    return schema, ds, dim


def plan_query(
    query: QuerySpec, catalog: Mapping[str, ConnectorSchema], *, max_cells_x_bins: int = MAX_CELLS_X_BINS
) -> Plan:
    """Validate `query` against the enabled connectors' schemas and decide what to fetch."""
    if query.unit is Unit.ORGANISATION:
        raise PlanError(
            "unit",
            "organisation queries are not served: one household can reach many organisations' rows, and no "
            "public bound on that is declared yet",
        )
    # First: without the one register nothing else about the query can be bounded, whatever it names.
    spine = household_register(catalog)
    measures: dict[str, list[str]] = {}
    dims: dict[str, list[str]] = {}
    if query.measure is not None:
        for i, term in enumerate(query.measure.terms):
            field = f"measure.terms.{i}"
            if term.is_members:
                continue  # the household size, computed from the register's mapping
            schema, ds = _dataset(catalog, term.dataset, f"{field}.dataset")
            if ds.entity_kind is not EntityKind.PERSON:
                raise PlanError(
                    f"{field}.dataset", f"{term.dataset} is keyed by {ds.entity_kind.value}, not person"
                )
            if not any(m.name == term.measure for m in ds.measures):
                raise PlanError(f"{field}.measure", f"{term.dataset} declares no measure {term.measure!r}")
            measures.setdefault(term.dataset, []).append(term.measure)
    groups: list[GroupColumn] = []
    filters: list[tuple[str, frozenset[str]]] = []
    for where, refs in (("group_by", query.group_by), ("filters", tuple(f.dimension for f in query.filters))):
        for i, ref in enumerate(refs):
            field = f"{where}.{i}" if where == "group_by" else f"filters.{i}.dimension"
            if ref == SIZE_BAND:
                if query.unit is not Unit.HOUSEHOLD:
                    raise PlanError(field, f"{SIZE_BAND} exists only in household queries")
                domain = SIZE_BANDS
            elif ref.startswith(HAS_PREFIX):
                if ref not in {g.ref for g in query.member_groups}:
                    raise PlanError(field, f"{ref} names no group declared in member_groups")
                domain = MEMBER_FLAG_DOMAIN
            elif ref == INCOME_TREND:
                if query.baseline is None:
                    raise PlanError(field, f"{INCOME_TREND} needs a baseline period in the query")
                domain = TREND_DOMAIN
            elif ref == COVERED:
                if not query.coverage:
                    raise PlanError(field, f"{COVERED} needs the coverage datasets in the query")
                domain = COVERED_DOMAIN
            else:
                schema, ds, dim = _dimension(catalog, ref, field, query.unit)
                domain = dim.domain
                key = f"{schema.connector}.{ds.name}"
                dims.setdefault(key, [])
                if dim.name not in dims[key]:
                    dims[key].append(dim.name)
            if where == "group_by":
                groups.append(GroupColumn(ref=ref, domain=domain))
            else:
                f = query.filters[i]
                outside = [j for j, v in enumerate(f.values) if v not in domain]
                if outside:
                    raise PlanError(
                        f"filters.{i}.values.{outside[0]}", f"not a code of {ref}'s public domain"
                    )
                filters.append((ref, frozenset(f.values)))
    _check_size(query, groups, max_cells_x_bins)
    measured_refs = set(measures)
    for i, group in enumerate(query.member_groups):
        _plan_member_group(catalog, group, f"member_groups.{i}", measures, dims)
    for i, ref in enumerate(query.coverage):
        schema, ds = _dataset(catalog, ref, f"coverage.{i}")
        if ds.entity_kind is not EntityKind.PERSON:
            raise PlanError(f"coverage.{i}", f"{ref} is keyed by {ds.entity_kind.value}, not person")
        dims.setdefault(ref, [])
    if query.baseline is not None:
        for ref in measured_refs:
            _, ds = _dataset(catalog, ref, "baseline")
            if ds.period_grain is None:
                raise PlanError("baseline", f"{ref} has no period, so it has no baseline to compare")
    if not measures and not dims and query.unit is Unit.PERSON:
        raise PlanError("measure", "a person query needs a measure or a dimension to define its population")
    if query.measure is not None and _sums(query):
        bound = max(abs(query.measure.lower), abs(query.measure.upper))
        if bound > MAX_SUM_BOUND:
            side = "upper" if abs(query.measure.upper) == bound else "lower"
            raise PlanError(f"measure.{side}", sum_bound_message(query.measure.lower, query.measure.upper))
    extracts = [_extract(catalog[need.connector], need) for need in dataset_needs(query, (spine,))]
    departments = tuple(dict.fromkeys(catalog[e.connector].department for e in extracts))
    for e in extracts:
        cap = catalog[e.connector].policy.max_epsilon_per_query
        if query.epsilon > cap:
            raise PlanError(
                "epsilon", f"epsilon {query.epsilon} is above department {e.department}'s cap {cap}"
            )
        if query.unit not in catalog[e.connector].policy.allowed_units:
            raise PlanError("unit", f"department {e.department} does not answer {query.unit.value} queries")
    return Plan(
        query=query,
        extracts=tuple(extracts),
        spine=spine,
        groups=tuple(groups),
        filters=tuple(filters),
        departments=departments,
        unit_multiplicity=query.member_cap or 1,
        coverage=query.coverage,
    )


def _extract(schema: ConnectorSchema, need: DatasetNeed) -> ExtractPlan:
    return ExtractPlan(
        connector=schema.connector,
        department=schema.department,
        dataset=need.dataset,
        measures=need.measures,
        dimensions=need.dimensions,
        household=need.household,
        baseline=need.baseline,
    )


def _check_size(query: QuerySpec, groups: list[GroupColumn], limit: int) -> None:
    sizes = [len(g.domain) for g in groups]
    asked = cells_x_bins(sizes, query.statistics)
    if asked > limit:
        cells = cells_of(sizes)
        raise PlanError(
            "group_by" if groups else "statistics",
            f"the query releases {cells} cells x {asked // cells} bins = {asked} noisy values, above the "
            f"public limit of {limit} (max_cells_x_bins): group by fewer or smaller domains, or use fewer "
            "bins",
        )


def _plan_member_group(
    catalog: Mapping[str, ConnectorSchema],
    group: MemberGroup,
    field: str,
    measures: dict[str, list[str]],
    dims: dict[str, list[str]],
) -> None:
    """A key group reads one person-level dimension or measure; it only ever reaches the analyst as a
    household attribute (has a member in the group, or not)."""
    ref = group.dimension or group.measure or ""
    parts = ref.split(".")
    if len(parts) != 3:
        raise PlanError(
            f"{field}.{'dimension' if group.dimension else 'measure'}", "give connector.dataset.name"
        )
    schema, ds = _dataset(catalog, ".".join(parts[:2]), field)
    if ds.entity_kind is not EntityKind.PERSON:
        raise PlanError(field, f"{ds.name} is keyed by {ds.entity_kind.value}, not person")
    key = f"{schema.connector}.{ds.name}"
    if group.dimension is not None:
        dim = next((d for d in ds.dimensions if d.name == parts[2]), None)
        if dim is None:
            raise PlanError(f"{field}.dimension", f"{key} declares no dimension {parts[2]!r}")
        outside = [j for j, v in enumerate(group.values or ()) if v not in dim.domain]
        if outside:
            raise PlanError(f"{field}.values.{outside[0]}", f"not a code of {ref}'s public domain")
        dims.setdefault(key, [])
        if dim.name not in dims[key]:
            dims[key].append(dim.name)
    else:
        if not any(m.name == parts[2] for m in ds.measures):
            raise PlanError(f"{field}.measure", f"{key} declares no measure {parts[2]!r}")
        measures.setdefault(key, [])
        if parts[2] not in measures[key]:
            measures[key].append(parts[2])


def _sums(query: QuerySpec) -> bool:
    return any(s.kind in (StatisticKind.SUM, StatisticKind.MEAN) for s in query.statistics)


def household_register(catalog: Mapping[str, ConnectorSchema]) -> str:
    """The one enabled dataset mapping persons to households (`connector.dataset`), or a PlanError on
    `unit` naming the cause and the fix: without exactly one, no household's rows can be bounded."""
    found = [f"{s.connector}.{d.name}" for s in catalog.values() for d in s.datasets if d.household_mapping]
    if not found:
        raise PlanError(
            "unit",
            "no enabled connector maps persons to households: household and person queries need the "
            "household register, which bounds each household's rows; the operator registers and enables "
            "the register's connector",
        )
    if len(found) > 1:
        raise PlanError(
            "unit",
            f"{len(found)} datasets map persons to households ({', '.join(found)}); the household is the "
            "protected unit only when exactly one register defines it: the operator disables all but the "
            "register's connector, or the departments drop the household mapping from the others",
        )
    return found[0]
