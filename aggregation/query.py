"""The query an analyst submits (`fedgate-query/1`): versioned, immutable, identified by its digest.

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

from connectors.config import Unit
from connectors.protocol import Period, canonical_json, sha256_hex

DATASET_REF = r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}$"
DIMENSION_REF = r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}(\.[a-z][a-z0-9_]{0,62})?$"
SIZE_BAND = "household.size_band"
SIZE_BANDS: tuple[str, ...] = ("1", "2", "3", "4", "5+")
"""The public domain of the gateway-computed household size band."""

MAX_EPSILON_PER_QUERY = Decimal(10)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Term(_Frozen):
    dataset: Annotated[str, Field(pattern=DATASET_REF, description="connector.dataset")]
    measure: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    sign: Literal[1, -1] = 1


class Measure(_Frozen):
    """A signed sum of declared measures, clamped per unit to public bounds."""

    terms: tuple[Term, ...] = Field(min_length=1, max_length=16)
    lower: int = Field(ge=-(10**12), le=10**12, description="public lower bound of the per-unit value")
    upper: int = Field(ge=-(10**12), le=10**12, description="public upper bound of the per-unit value")
    label: str = Field("", max_length=120)

    @model_validator(mode="after")
    def _check(self) -> Measure:
        if self.lower >= self.upper:
            raise ValueError("lower must be below upper")
        keys = [(t.dataset, t.measure) for t in self.terms]
        if len(set(keys)) != len(keys):
            raise ValueError("a measure appears twice in terms")
        return self


class Filter(_Frozen):
    dimension: Annotated[str, Field(pattern=DIMENSION_REF)]
    values: tuple[str, ...] = Field(min_length=1, max_length=10_000)


HAS_PREFIX = "household.has_"
MEMBER_FLAG_DOMAIN: tuple[str, ...] = ("0", "1")
"""The public domain of a `household.has_<group>` attribute: no member / at least one member in the group."""


class MemberGroup(_Frozen):
    """A key group of persons; `household.has_<name>` says whether a household has a member in it.

    A person is in the group when a dimension of theirs takes one of `values`, or when a measure of
    theirs over the query period reaches `at_least` (both public choices of the query).
    """

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")]
    dimension: Annotated[str, Field(pattern=DIMENSION_REF)] | None = None
    values: tuple[str, ...] | None = Field(None, min_length=1, max_length=1_000)
    measure: Annotated[str, Field(pattern=DIMENSION_REF)] | None = Field(
        None, description="connector.dataset.measure"
    )
    at_least: int | None = Field(None, ge=-(10**12), le=10**12)

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


class StatisticKind(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    HISTOGRAM = "histogram"
    QUANTILES = "quantiles"


class Statistic(_Frozen):
    kind: StatisticKind
    edges: tuple[int, ...] | None = Field(None, max_length=1_000, description="public, strictly increasing")
    probs: tuple[float, ...] | None = Field(None, max_length=99)

    @model_validator(mode="after")
    def _check(self) -> Statistic:
        needs_edges = self.kind in (StatisticKind.HISTOGRAM, StatisticKind.QUANTILES)
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

    version: Literal["fedgate-query/1"] = "fedgate-query/1"
    purpose: str = Field(min_length=10, max_length=1_000, description="why this is asked, for the approvers")
    unit: Unit
    period_start: Period
    period_end: Period
    measure: Measure | None = None
    filters: tuple[Filter, ...] = Field((), max_length=8)
    group_by: tuple[Annotated[str, Field(pattern=DIMENSION_REF)], ...] = Field((), max_length=3)
    statistics: tuple[Statistic, ...] = Field(min_length=1, max_length=6)
    epsilon: Decimal = Field(gt=0, le=MAX_EPSILON_PER_QUERY)
    member_cap: int | None = Field(
        None, ge=1, le=20, description="person queries: public cap on persons counted per household"
    )
    member_groups: tuple[MemberGroup, ...] = Field(
        (), max_length=4, description="household queries: key groups usable as household.has_<name>"
    )

    @field_validator("epsilon")
    @classmethod
    def _exact(cls, value: Decimal) -> Decimal:
        if value.as_tuple().exponent < -6:  # type: ignore[operator]
            raise ValueError("epsilon has at most 6 decimal places")
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
        }
        if self.measure is None and any(s.kind in needs_measure for s in self.statistics):
            raise ValueError("sum, mean, histogram and quantiles need a measure")
        if self.unit is Unit.PERSON and self.member_cap is None:
            raise ValueError("person queries need member_cap (persons counted per household)")
        if self.unit is not Unit.PERSON and self.member_cap is not None:
            raise ValueError("member_cap applies to person queries only")
        if self.member_groups and self.unit is not Unit.HOUSEHOLD:
            raise ValueError("member_groups apply to household queries only")
        names = [g.name for g in self.member_groups]
        if len(set(names)) != len(names):
            raise ValueError("member group names repeat")
        return self

    def canonical(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

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
            refs.append(t.dataset)
        for d in (*self.group_by, *(f.dimension for f in self.filters)):
            if d != SIZE_BAND and not d.startswith(HAS_PREFIX):
                refs.append(".".join(d.split(".")[:2]))
        for g in self.member_groups:
            refs.append(".".join((g.dimension or g.measure or "").split(".")[:2]))
        return tuple(dict.fromkeys(refs))


def split_dimension(ref: str) -> tuple[str, str, str]:
    """`connector.dataset.dimension` -> its three parts (raises ValueError otherwise)."""
    parts = ref.split(".")
    if len(parts) != 3 or not all(re.fullmatch(r"[a-z][a-z0-9_]{0,62}", p) for p in parts):
        raise ValueError(f"{ref!r} is not connector.dataset.dimension")
    return parts[0], parts[1], parts[2]
