"""The query an analyst submits (`fedgate-query/1`): versioned, immutable, identified by its digest.

It lives in `connectors/` because the wire carries it: every extract request holds the whole canonical
query, and the connector recomputes its digest and plans its own part of it (`connectors.query_scope`).
`aggregation.query` is the gateway side's import surface for the same model.

A query names datasets as `connector.dataset`, measures as a signed linear combination of declared
measures with public bounds for the per-unit value, filters and group-by on dimensions with public
domains (`connector.dataset.dimension`, or `household.size_band`), the statistics to release and the
epsilon to spend. Its id is derived from the SHA-256 of its canonical JSON (RFC 8785), so two identical
submissions are one query.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.canonical import canonical_json, sha256_hex
from connectors.vocabulary import DEFAULT_NEIGHBOURING, Neighbouring, Period, Unit

DATASET_REF = r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}$"
DIMENSION_REF = r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}(\.[a-z][a-z0-9_]{0,62})?$"
SIZE_BAND = "household.size_band"
HOUSEHOLD_MEMBERS = "household"
"""`Term(dataset="household", measure="members")` adds one per registered member: the household size."""
MEMBERS_MEASURE = "members"
INCOME_TREND = "household.income_trend"
TREND_FELL, TREND_NOT_FELL, TREND_NO_BASELINE = "fell", "not_fell", "no_baseline_income"
TREND_DOMAIN: tuple[str, ...] = (TREND_FELL, TREND_NOT_FELL, TREND_NO_BASELINE)
"""The public domain of `household.income_trend` in a query with a baseline period."""
COVERED = "person.covered"
COVERED_DOMAIN: tuple[str, ...] = ("0", "1")
"""`person.covered`: 1 when the person has a row in at least one of the query's `coverage` datasets."""
SIZE_BANDS: tuple[str, ...] = ("1", "2", "3", "4", "5+")
"""The public domain of the gateway-computed household size band."""

MAX_EPSILON_PER_QUERY = Decimal(10)
MIN_EPSILON_PER_QUERY = Decimal("0.001")
"""The public floor of a query's epsilon (the wire's `MIN_EPSILON`): below it a release is noise only, and
many tiny queries would each still read the data."""
QUERY_EPSILON_DECIMALS = 6


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Term(_Frozen):
    """One person measure in a sum, with its sign."""

    dataset: Annotated[
        str,
        Field(
            pattern=r"^([a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}|household)$",
            description='connector.dataset, or "household" with measure "members" (household size)',
        ),
    ]
    measure: Annotated[
        str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="the measure's name in that dataset")
    ]
    sign: Literal[1, -1] = Field(1, description="+1 to add (income), -1 to subtract (deductions)")

    @model_validator(mode="after")
    def _members(self) -> Term:
        if self.dataset == HOUSEHOLD_MEMBERS and self.measure != MEMBERS_MEASURE:
            raise ValueError(f'the "household" pseudo-dataset has one measure: {MEMBERS_MEASURE!r}')
        return self

    @property
    def is_members(self) -> bool:
        return self.dataset == HOUSEHOLD_MEMBERS


class Measure(_Frozen):
    """A signed sum of declared measures, clamped per unit to public bounds."""

    terms: tuple[Term, ...] = Field(
        min_length=1,
        max_length=16,
        description="the person measures summed with their signs into each unit's value",
    )
    lower: int = Field(ge=-(10**12), le=10**12, description="public lower bound of the per-unit value")
    upper: int = Field(ge=-(10**12), le=10**12, description="public upper bound of the per-unit value")
    label: str = Field(
        "", max_length=120, description="a name for the measure in the result, e.g. disposable income proxy"
    )
    per_capita: bool = Field(
        False, description="household queries: the household's value divided by its registered members"
    )

    @model_validator(mode="after")
    def _check(self) -> Measure:
        if self.lower >= self.upper:
            raise ValueError("lower must be below upper")
        keys = [(t.dataset, t.measure) for t in self.terms]
        if len(set(keys)) != len(keys):
            raise ValueError("a measure appears twice in terms")
        return self


class Filter(_Frozen):
    """Keep only units whose dimension takes one of the values (public codes)."""

    dimension: Annotated[str, Field(pattern=DIMENSION_REF, description="connector.dataset.dimension")]
    values: tuple[str, ...] = Field(
        min_length=1, max_length=10_000, description="codes from the dimension's public domain"
    )


HAS_PREFIX = "household.has_"
MEMBER_FLAG_DOMAIN: tuple[str, ...] = ("0", "1")
"""The public domain of a `household.has_<group>` attribute: no member / at least one member in the group."""


class MemberGroup(_Frozen):
    """A key group of persons; `household.has_<name>` says whether a household has a member in it.

    A person is in the group when a dimension of theirs takes one of `values`, or when a measure of
    theirs over the query period reaches `at_least` (both public choices of the query). With `negate`,
    `household.has_<name>` is 1 for households where *no* member matches (e.g. no wage earner).
    """

    name: Annotated[
        str,
        Field(
            pattern=r"^[a-z][a-z0-9_]{0,30}$",
            description="the group's name; the household attribute is household.has_<name>",
        ),
    ]
    dimension: Annotated[str, Field(pattern=DIMENSION_REF)] | None = Field(
        None, description="connector.dataset.dimension whose values put a person in the group"
    )
    values: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        max_length=1_000,
        description="the codes that put a person in the group (with dimension)",
    )
    measure: Annotated[str, Field(pattern=DIMENSION_REF)] | None = Field(
        None, description="connector.dataset.measure"
    )
    at_least: int | None = Field(
        None,
        ge=-(10**12),
        le=10**12,
        description="a person is in the group when the measure reaches this over the period (with measure)",
    )
    negate: bool = Field(False, description="the household attribute is 1 when no member matches")

    @model_validator(mode="after")
    def _check(self) -> MemberGroup:
        by_dimension = self.dimension is not None and self.values is not None
        by_measure = self.measure is not None and self.at_least is not None
        if by_dimension == by_measure or (self.dimension is None) != (self.values is None):
            raise ValueError("define the group by dimension and values, or by measure and at_least")
        return self

    @property
    def ref(self) -> str:
        return HAS_PREFIX + self.name


class Baseline(_Frozen):
    """An earlier period the measure is also rolled up over, in the same extract (so tokens link).

    The query may then group or filter on `household.income_trend`: `fell` when the household's value in
    the query period is below `(1 - drop_share)` times its baseline value, `no_baseline_income` when its
    baseline value is at most 0, `not_fell` otherwise.
    """

    period_start: Period
    period_end: Period
    drop_share: Decimal = Field(gt=0, lt=1, description="public share of the baseline value, e.g. 0.3")

    @field_validator("drop_share")
    @classmethod
    def _places(cls, value: Decimal) -> Decimal:
        if value.as_tuple().exponent < -6:  # type: ignore[operator]
            raise ValueError("drop_share has at most 6 decimal places")
        return value.normalize()

    @model_validator(mode="after")
    def _order(self) -> Baseline:
        if self.period_start > self.period_end:
            raise ValueError("baseline period_start is after its period_end")
        return self


class StatisticKind(StrEnum):
    """The statistics a query can release."""

    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    HISTOGRAM = "histogram"
    QUANTILES = "quantiles"
    LORENZ = "lorenz"


class Statistic(_Frozen):
    """One statistic to release per cell; histograms, quantiles and the Lorenz curve take public bin edges."""

    kind: StatisticKind = Field(description="count, sum, mean, histogram, quantiles or lorenz")
    edges: tuple[int, ...] | None = Field(None, max_length=1_000, description="public, strictly increasing")
    probs: tuple[float, ...] | None = Field(
        None, max_length=99, description="quantiles: the probabilities, each strictly between 0 and 1"
    )

    @model_validator(mode="after")
    def _check(self) -> Statistic:
        needs_edges = self.kind in (StatisticKind.HISTOGRAM, StatisticKind.QUANTILES, StatisticKind.LORENZ)
        if needs_edges != (self.edges is not None):
            raise ValueError(
                f"edges are required for {self.kind.value} and only there"
                if needs_edges
                else f"{self.kind.value} takes no edges"
            )
        if self.edges is not None and (
            len(self.edges) < 1 or any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False))
        ):
            raise ValueError("edges must be strictly increasing")
        if (self.kind is StatisticKind.QUANTILES) != (self.probs is not None):
            raise ValueError("probs are required for quantiles and only there")
        if self.probs is not None and not all(0 < p < 1 for p in self.probs):
            raise ValueError("probs must lie strictly between 0 and 1")
        return self


class QuerySpec(_Frozen):
    """What an analyst asks; immutable once submitted."""

    version: Literal["fedgate-query/1"] = Field(
        "fedgate-query/1", description="the query format; fedgate-query/1"
    )
    purpose: str = Field(min_length=10, max_length=1_000, description="why this is asked, for the approvers")
    unit: Unit = Field(description="household (the protected unit) or person")
    period_start: Period
    period_end: Period
    measure: Measure | None = Field(
        None, description="the value summed or binned per unit; null for counts only"
    )
    filters: tuple[Filter, ...] = Field((), max_length=8, description="keep only units matching every filter")
    group_by: tuple[Annotated[str, Field(pattern=DIMENSION_REF)], ...] = Field(
        (),
        max_length=3,
        description="up to three dimensions (connector.dataset.dimension) to break the result down by",
    )
    statistics: tuple[Statistic, ...] = Field(
        min_length=1,
        max_length=6,
        description="what to release per cell: count, sum, mean, histogram, quantiles, lorenz",
    )
    epsilon: Decimal = Field(
        ge=MIN_EPSILON_PER_QUERY,
        le=MAX_EPSILON_PER_QUERY,
        description="the privacy budget the query spends (at least the public minimum per query, at most "
        "six decimal places)",
    )
    member_cap: int | None = Field(
        None, ge=1, le=20, description="person queries: public cap on persons counted per household"
    )
    neighbouring: Neighbouring = Field(
        DEFAULT_NEIGHBOURING,
        description="the neighbour relation epsilon is guaranteed under: add_remove_household (add or remove "
        "one household, all its members' records in every department) or change_household (one household's "
        "records differ; the same epsilon buys half the accuracy, as OpenDP's map is taken at twice the "
        "distance)",
    )
    member_groups: tuple[MemberGroup, ...] = Field(
        (), max_length=4, description="household queries: key groups usable as household.has_<name>"
    )
    baseline: Baseline | None = Field(
        None, description="household queries: an earlier period, for household.income_trend"
    )
    coverage: tuple[Annotated[str, Field(pattern=DATASET_REF)], ...] = Field(
        (),
        max_length=16,
        description="person queries: the population is the register's persons, and person.covered says "
        "whether each has a row in any of these datasets",
    )
    analyst_key: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="fingerprint of the analyst's own Ed25519 key, which signs the query on submit; part of "
        "the digest, so a department's approval and the analyst's signature name the same analyst",
    )

    @field_validator("epsilon")
    @classmethod
    def _exact(cls, value: Decimal) -> Decimal:
        if value.as_tuple().exponent < -QUERY_EPSILON_DECIMALS:  # type: ignore[operator]
            raise ValueError(f"epsilon has at most {QUERY_EPSILON_DECIMALS} decimal places")
        return value.normalize()

    @model_validator(mode="after")
    def _check(self) -> QuerySpec:
        if self.period_start > self.period_end:
            raise ValueError("period_start is after period_end")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by repeats a dimension")
        needs_measure = {
            StatisticKind.SUM,
            StatisticKind.MEAN,
            StatisticKind.HISTOGRAM,
            StatisticKind.QUANTILES,
            StatisticKind.LORENZ,
        }
        if self.measure is None and any(s.kind in needs_measure for s in self.statistics):
            raise ValueError("sum, mean, histogram, quantiles and lorenz need a measure")
        if self.unit is Unit.PERSON and self.member_cap is None:
            raise ValueError("person queries need member_cap (persons counted per household)")
        if self.unit is not Unit.PERSON and self.member_cap is not None:
            raise ValueError("member_cap applies to person queries only")
        if self.member_groups and self.unit is not Unit.HOUSEHOLD:
            raise ValueError("member_groups apply to household queries only")
        names = [g.name for g in self.member_groups]
        if len(set(names)) != len(names):
            raise ValueError("member group names repeat")
        household_only = self.unit is not Unit.HOUSEHOLD
        if self.measure is not None and household_only:
            if self.measure.per_capita:
                raise ValueError("per_capita applies to household queries only")
            if any(t.is_members for t in self.measure.terms):
                raise ValueError('the "household" members term applies to household queries only')
        if self.baseline is not None:
            if household_only or self.measure is None:
                raise ValueError("a baseline applies to household queries with a measure")
            if self.baseline.period_end >= self.period_start:
                raise ValueError("the baseline period must end before period_start")
        if self.coverage:
            if self.unit is not Unit.PERSON:
                raise ValueError("coverage applies to person queries only")
            if len(set(self.coverage)) != len(self.coverage):
                raise ValueError("coverage repeats a dataset")
        return self

    def canonical(self) -> bytes:
        # The default relation is left out, so queries written before the relation was a field keep
        # their digests (and the departments' signatures over them).
        # Likewise an unsigned query (no analyst key) keeps the digest it had before keys existed.
        exclude = {"neighbouring"} if self.neighbouring is DEFAULT_NEIGHBOURING else set()
        if self.analyst_key is None:
            exclude.add("analyst_key")
        return canonical_json(self.model_dump(mode="json", exclude=exclude or None))

    @property
    def digest(self) -> str:
        return sha256_hex(self.canonical())

    @property
    def query_id(self) -> str:
        return "q-" + self.digest[:32]

    def datasets(self) -> tuple[str, ...]:
        """Every `connector.dataset` the query reads, in first-mention order."""
        refs: list[str] = []
        for t in self.measure.terms if self.measure else ():
            if not t.is_members:
                refs.append(t.dataset)
        for d in (*self.group_by, *(f.dimension for f in self.filters)):
            if d not in (SIZE_BAND, INCOME_TREND, COVERED) and not d.startswith(HAS_PREFIX):
                refs.append(".".join(d.split(".")[:2]))
        refs.extend(self.coverage)
        for g in self.member_groups:
            refs.append(".".join((g.dimension or g.measure or "").split(".")[:2]))
        return tuple(dict.fromkeys(refs))


def split_dimension(ref: str) -> tuple[str, str, str]:
    """`connector.dataset.dimension` -> its three parts (raises ValueError otherwise)."""
    parts = ref.split(".")
    if len(parts) != 3 or not all(re.fullmatch(r"[a-z][a-z0-9_]{0,62}", p) for p in parts):
        raise ValueError(f"{ref!r} is not connector.dataset.dimension")
    return parts[0], parts[1], parts[2]
