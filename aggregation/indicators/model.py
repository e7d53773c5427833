"""What an indicator is: named sub-queries with declared epsilon shares, and figures derived from them.

An indicator never sees data. It turns public parameters into ordinary `fedgate-query/1` specs (each one
a separate DP measurement, approved, charged and audited like any query) and turns their released, noisy
results into figures by post-processing only: no figure costs budget beyond its releases, and no true
value is ever mixed in.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

from aggregation.query import DATASET_REF, DIMENSION_REF, MIN_EPSILON_PER_QUERY, MemberGroup, QuerySpec, Term
from connectors.protocol import Period

EPSILON_PLACES = Decimal("0.000001")
"""Query epsilons have at most six decimal places; a split is exact at that grain."""

FigureUnit = Literal["share", "yuan", "ratio", "households", "persons", "index"]

PROXY_NOTE = (
    "Disposable income is a proxy built from what departments hold (wages, business income, pensions, "
    "minimum-livelihood assistance, minus personal social-insurance contributions); no department holds "
    "property income, and wages are before income tax."
)

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class IndicatorError(ValueError):
    """Parameters an indicator cannot use; `field` names the offending one."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


MONITORING_VERSION: Final = "fedgate-monitoring/1"


def _expand_edges(value: Any) -> Any:
    """Edges as a list of integers, where an item may also be a range `{from, to, step}` (`to` excluded),
    so a file can say "every 2,000 yuan up to 60,000" instead of thirty numbers."""
    if not isinstance(value, list | tuple):
        return value
    out: list[Any] = []
    for item in value:
        if isinstance(item, Mapping):
            if set(item) != {"from", "to", "step"}:
                raise ValueError("a range of edges has exactly the keys from, to and step")
            start, stop, step = (item[k] for k in ("from", "to", "step"))
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, stop, step)):
                raise ValueError("a range of edges has integer from, to and step")
            if step <= 0 or stop <= start:
                raise ValueError("a range of edges needs from < to and a positive step")
            out.extend(range(start, stop, step))
        else:
            out.append(item)
    return out


def _share(value: Any) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal | Fraction):
        raise ValueError("a share is a number such as 0.25 or a fraction such as 1/4")
    try:
        share = Fraction(str(value)) if not isinstance(value, Fraction) else value
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{value!r} is not a number or a fraction") from None
    if share <= 0:
        raise ValueError("a share must be positive")
    return share


Edges = Annotated[tuple[int, ...], BeforeValidator(_expand_edges), Field(min_length=1, max_length=2_000)]
Share = Annotated[Fraction, PlainValidator(_share), PlainSerializer(str, return_type=str)]
DatasetRef = Annotated[str, Field(pattern=DATASET_REF, description="connector.dataset")]
DimensionRef = Annotated[str, Field(pattern=DIMENSION_REF, description="connector.dataset.dimension")]


class KeyGroupDecl(BaseModel):
    """A key group of the monitoring plan: its definition and the titles shown beside its figures."""

    model_config = _FROZEN

    definition: MemberGroup
    title: str = Field(min_length=1, max_length=200)
    title_zh: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2_000)


class MonitoringConfig(BaseModel):
    """The public policy every indicator is built from: which datasets, measures and dimensions make up
    the income proxy, the areas and the key groups, and the bounds, edges, caps and epsilon splits.

    It is data the operator owns (a YAML file, `aggregation.indicators.config_file`), checked against the
    live catalog (`aggregation.indicators.catalog_check`); nothing in the indicator library names a
    dataset. Bounds, edges and caps are public choices, never computed from data; their defaults are the
    county plan's.
    """

    model_config = _FROZEN

    version: Literal["fedgate-monitoring/1"] = MONITORING_VERSION
    description: str = Field("", max_length=2_000)
    income_terms: tuple[Term, ...] = Field(
        min_length=1,
        max_length=50,
        description="the disposable-income proxy: person measures and signs (+1 income, -1 deductions)",
    )
    income_lower: int = -200_000
    income_upper: int = 5_000_000
    income_sum_upper: int = Field(
        1_500_000, description="upper clamp of household income in DP sums (the urban-rural ratio)"
    )
    distribution_upper: int = Field(
        2_000_000, description="upper clamp of household income in the distribution's lorenz histogram"
    )
    distribution_lower: int = Field(
        0,
        description="lower clamp in the distribution: the Lorenz curve, Gini and quintile shares are defined "
        "for incomes of at least 0, so a household's net loss counts as 0 there",
    )
    per_capita_lower: int = 0
    per_capita_upper: int = 500_000
    village: DimensionRef = Field(description="the household register's village (or community) dimension")
    urban_rural: DimensionRef = Field(description="the household register's NBS urban-rural code dimension")
    urban_prefixes: tuple[str, ...] = Field(
        ("1",), min_length=1, description="urban-rural codes starting with one of these are urban (NBS: 1xx)"
    )
    size_cap: int = Field(8, ge=1, le=20, description="public cap on members counted per household")
    coverage_datasets: tuple[DatasetRef, ...] = Field(
        min_length=1, max_length=50, description="person datasets whose rows count as an income record"
    )
    bands: dict[str, tuple[int, int]] = Field(
        {"100k–500k": (100_000, 500_000), "200k–600k": (200_000, 600_000)}, min_length=1, max_length=12
    )
    # Fine where most households are (quantiles are read linearly inside a bin, so the bin width there is
    # the resolution of P10, P50 and P90), coarse in the thin tail.
    household_edges: Edges = (
        *range(0, 60_000, 2_000),
        *range(60_000, 300_000, 5_000),
        *range(300_000, 600_000, 25_000),
        *range(600_000, 1_000_000, 100_000),
        1_000_000,
        1_250_000,
        1_500_000,
    )
    per_capita_edges: Edges = (
        *range(0, 40_000, 1_000),
        *range(40_000, 150_000, 2_500),
        *range(150_000, 300_000, 12_500),
        300_000,
        400_000,
    )
    key_groups: tuple[KeyGroupDecl, ...] = Field((), max_length=12)
    drop_share: Decimal = Field(Decimal("0.3"), gt=0, lt=1, decimal_places=6)
    pack_shares: dict[str, Share] | None = Field(
        None,
        description="the year-end pack's epsilon split by indicator (its six); default the pack's declared "
        "split",
    )

    @model_validator(mode="after")
    def _consistent(self) -> MonitoringConfig:
        for low, high, name in (
            (self.income_lower, self.income_upper, "income_upper"),
            (self.income_lower, self.income_sum_upper, "income_sum_upper"),
            (self.distribution_lower, self.distribution_upper, "distribution_upper"),
            (self.per_capita_lower, self.per_capita_upper, "per_capita_upper"),
        ):
            if not low < high:
                raise ValueError(f"{name} must be above its lower bound ({low})")
        for name, edges, low, high in (
            ("household_edges", self.household_edges, self.distribution_lower, self.distribution_upper),
            ("per_capita_edges", self.per_capita_edges, self.per_capita_lower, self.per_capita_upper),
        ):
            if any(b <= a for a, b in itertools.pairwise(edges)):
                raise ValueError(f"{name} must be strictly increasing")
            if edges[0] < low or edges[-1] > high:
                raise ValueError(f"{name} must lie within [{low}, {high}]")
        for band, (low, high) in self.bands.items():
            if not (self.income_lower <= low < high <= self.income_upper):
                raise ValueError(
                    f"band {band}: need low < high within [{self.income_lower}, {self.income_upper}]"
                )
        terms = [(t.dataset, t.measure) for t in self.income_terms]
        if len(set(terms)) != len(terms):
            raise ValueError("income_terms name one measure twice")
        if len(set(self.coverage_datasets)) != len(self.coverage_datasets):
            raise ValueError("coverage_datasets name one dataset twice")
        names = self.key_group_names
        if len(set(names)) != len(names):
            raise ValueError("key_groups define one name twice")
        return self

    @property
    def key_group_names(self) -> tuple[str, ...]:
        return tuple(g.definition.name for g in self.key_groups)

    def key_group(self, name: str) -> MemberGroup | None:
        """The definition of the configured key group `name`, or None."""
        return next((g.definition for g in self.key_groups if g.definition.name == name), None)

    def is_urban(self, code: str) -> bool:
        """Urban-rural codes with an urban prefix are urban (NBS: 111-123 urban, 210 and 220 rural)."""
        return code.startswith(self.urban_prefixes)


class IndicatorParams(BaseModel):
    """What one run of an indicator is asked for (all public)."""

    model_config = _FROZEN

    period_start: Period
    period_end: Period
    epsilon: Decimal = Field(gt=0)
    analyst: str
    bands: dict[str, tuple[int, int]] | None = None
    groups: tuple[MemberGroup, ...] = ()
    baseline_start: Period | None = None
    baseline_end: Period | None = None
    drop_share: Decimal | None = None


class SubQuery(BaseModel):
    """One DP release an indicator needs: a role name, its share of epsilon and the query itself."""

    model_config = _FROZEN

    role: str
    spec: QuerySpec


class ReleaseDecl(BaseModel):
    """How an indicator declares one of its releases (for `fedgate indicators list` and the docs)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    role: str
    what: str
    weight: Fraction


class Figure(BaseModel):
    """One derived figure with its 95% interval; `exact` is set only by an unsafe exact evaluation."""

    model_config = ConfigDict(frozen=False, extra="forbid")

    figure: str = Field(description="what the figure is, e.g. share, P50, gini, urban_rural_ratio")
    label: str = Field(description="its variant, e.g. the income band or the income definition")
    group: str = Field(description="county, urban, rural, a village code or a key group")
    value: float | None = Field(description="the DP estimate; null where undefined (see note)")
    low: float | None = Field(description="lower end of its 95% interval")
    high: float | None = Field(description="upper end of its 95% interval")
    unit: FigureUnit = Field(description="share, yuan, ratio, households, persons or index")
    note: str | None = Field(default=None, description="why the value is null (undefined), when it is")
    exact: float | None = Field(
        None,
        description="the value without noise, only from an unsafe exact evaluation in tests; null from the "
        "gateway",
    )

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.figure, self.label, self.group)


class TableCell(BaseModel):
    """One cell of a reconciled table: the raw noisy measurement and the reconciled whole number, each with
    its 95% interval (a pooled cell's raw value is the sum of its cells' noisy values)."""

    model_config = _FROZEN

    level: str = Field(description="county, urban_rural or village")
    group: str = Field(description="the cell's group at that level")
    column: str = Field(description="the cell's column")
    raw: float = Field(description="the noisy measurement (a pooled cell: the sum of its cells')")
    raw_low: float = Field(description="lower end of the raw value's 95% interval")
    raw_high: float = Field(description="upper end of the raw value's 95% interval")
    value: int = Field(description="the reconciled whole number")
    low: int = Field(description="lower end of the reconciled value's 95% interval")
    high: int = Field(description="upper end of the reconciled value's 95% interval")


class ReconciledTable(BaseModel):
    """County, urban–rural and village tables of one release family made consistent by post-processing
    (`aggregation.reconcile`): every level adds up to the same non-negative whole-number total."""

    model_config = _FROZEN

    table: str = Field(description="the table's name")
    unit: FigureUnit = Field(description="the unit of its cells")
    releases: list[str] = Field(description="the roles of the releases reconciled")
    columns: list[str] = Field(description="its columns, e.g. income bands")
    levels: list[str] = Field(description="its levels: county, urban_rural, village")
    cells: list[TableCell] = Field(description="its cells, raw and reconciled")
    method: str = Field(description="how the levels were made consistent")


class QueryRef(BaseModel):
    """One query an indicator released."""

    model_config = _FROZEN
    role: str = Field(description="the release's role within the indicator")
    query_id: str = Field(description="the query id")
    epsilon: str = Field(description="the epsilon it spent")


class IndicatorResult(BaseModel):
    """An indicator's figures with the releases they came from, the method and the caveats."""

    model_config = ConfigDict(extra="forbid")

    indicator: str = Field(description="the indicator's name")
    title: str = Field(description="its title in English")
    title_zh: str = Field(description="its title in Chinese")
    period_start: str = Field(description="first month covered (YYYY-MM)")
    period_end: str = Field(description="last month covered (YYYY-MM)")
    epsilon: str = Field(description="the epsilon its releases spent together")
    protected_unit: str = Field("household", description="the unit its guarantee protects: household")
    counted: str = Field(description="what it counts (households or persons)")
    queries: list[QueryRef] = Field(description="the queries it released")
    figures: list[Figure] = Field(description="its figures with 95% intervals")
    notes: list[str] = Field(description="caveats, e.g. the income proxy")
    methods: dict[str, str] = Field(description="figure -> how it is derived from the releases")
    curves: dict[str, list[dict[str, float]]] = Field(
        default_factory=dict, description="e.g. the Lorenz curve: points with p, share, low, high"
    )
    tables: list[ReconciledTable] = Field(
        default_factory=list,
        description="the release family's raw and reconciled count tables (county, urban-rural, village)",
    )


def split_epsilon(total: Decimal, weights: Mapping[str, Fraction]) -> dict[str, Decimal]:
    """Split `total` by `weights` at six decimal places so that the parts add up to `total` exactly.

    Each part is rounded down; what rounding leaves goes to the largest weight. Raises IndicatorError if
    a part would be zero or below the public minimum of one query's epsilon (the total is too small).
    """
    if not weights or any(w <= 0 for w in weights.values()):
        raise IndicatorError("epsilon", "an epsilon split needs positive weights")
    whole = sum(weights.values(), Fraction(0))
    parts = {}
    for role, w in weights.items():
        share = w / whole
        exact = total * Decimal(share.numerator) / Decimal(share.denominator)
        parts[role] = exact.quantize(EPSILON_PLACES, rounding=ROUND_FLOOR)
    largest = max(weights, key=lambda r: (weights[r], r))
    parts[largest] += total - sum(parts.values(), Decimal(0))
    if any(p <= 0 for p in parts.values()):
        raise IndicatorError(
            "epsilon", f"epsilon {total} is too small to split among {len(weights)} releases at 1e-6"
        )
    smallest = min(parts.values())
    if smallest < MIN_EPSILON_PER_QUERY:
        # Every part becomes at least one query, and no connector serves a query below the floor.
        raise IndicatorError(
            "epsilon",
            f"epsilon {total} split among {len(weights)} releases gives a part of {smallest.normalize()}, "
            f"below the public minimum of {MIN_EPSILON_PER_QUERY} per query: give a larger epsilon",
        )
    return {role: p.normalize() for role, p in parts.items()}
