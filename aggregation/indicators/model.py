"""What an indicator is: named sub-queries with declared epsilon shares, and figures derived from them.

An indicator never sees data. It turns public parameters into ordinary `fedgate-query/1` specs (each one
a separate DP measurement, approved, charged and audited like any query) and turns their released, noisy
results into figures by post-processing only: no figure costs budget beyond its releases, and no true
value is ever mixed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aggregation.query import MemberGroup, QuerySpec, Term
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


class MonitoringConfig(BaseModel):
    """The public policy every indicator is built from: dataset names, bounds, edges, caps.

    The defaults name the federation's standard datasets (as `fedgate synth` lays them out); bounds,
    edges and caps are public choices, never computed from data.
    """

    model_config = _FROZEN

    income_terms: tuple[Term, ...] = (
        Term(dataset="tax.wages", measure="wage_income"),
        Term(dataset="tax.business_income", measure="business_income"),
        Term(dataset="social.pensions", measure="pension_income"),
        Term(dataset="civil.assistance", measure="assistance_income"),
        Term(dataset="social.contributions", measure="personal_contribution", sign=-1),
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
    village: str = "register.persons.village"
    urban_rural: str = "register.persons.urban_rural"
    size_cap: int = Field(8, ge=1, le=20, description="public cap on members counted per household")
    coverage_datasets: tuple[str, ...] = (
        "tax.wages",
        "tax.business_income",
        "social.contributions",
        "social.pensions",
        "civil.assistance",
    )
    bands: dict[str, tuple[int, int]] = {"100k–500k": (100_000, 500_000), "200k–600k": (200_000, 600_000)}
    # Fine where most households are (quantiles are read linearly inside a bin, so the bin width there is
    # the resolution of P10, P50 and P90), coarse in the thin tail.
    household_edges: tuple[int, ...] = (
        *range(0, 60_000, 2_000),
        *range(60_000, 300_000, 5_000),
        *range(300_000, 600_000, 25_000),
        *range(600_000, 1_000_000, 100_000),
        1_000_000,
        1_250_000,
        1_500_000,
    )
    per_capita_edges: tuple[int, ...] = (
        *range(0, 40_000, 1_000),
        *range(40_000, 150_000, 2_500),
        *range(150_000, 300_000, 12_500),
        300_000,
        400_000,
    )
    key_groups: tuple[str, ...] = ("dibao", "fishery", "pensioner", "no_wage_earner", "migrant")
    drop_share: Decimal = Decimal("0.3")

    @staticmethod
    def is_urban(code: str) -> bool:
        """NBS urban-rural codes: 1xx are urban (111-123), 2xx rural (210, 220)."""
        return code.startswith("1")


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

    figure: str
    label: str
    group: str
    value: float | None
    low: float | None
    high: float | None
    unit: FigureUnit
    note: str | None = Field(default=None, description="why the value is null (undefined), when it is")
    exact: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.figure, self.label, self.group)


class QueryRef(BaseModel):
    model_config = _FROZEN
    role: str
    query_id: str
    epsilon: str


class IndicatorResult(BaseModel):
    """An indicator's figures with the releases they came from, the method and the caveats."""

    model_config = ConfigDict(extra="forbid")

    indicator: str
    title: str
    title_zh: str
    period_start: str
    period_end: str
    epsilon: str
    protected_unit: str = "household"
    counted: str
    queries: list[QueryRef]
    figures: list[Figure]
    notes: list[str]
    methods: dict[str, str]
    curves: dict[str, list[dict[str, float]]] = Field(
        default_factory=dict, description="e.g. the Lorenz curve: points with p, share, low, high"
    )


def split_epsilon(total: Decimal, weights: Mapping[str, Fraction]) -> dict[str, Decimal]:
    """Split `total` by `weights` at six decimal places so that the parts add up to `total` exactly.

    Each part is rounded down; what rounding leaves goes to the largest weight. Raises IndicatorError if
    a part would be zero (the total is too small to split).
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
    return {role: p.normalize() for role, p in parts.items()}
