"""Join connector extracts on tokens and build exactly one row per privacy unit (Polars over Arrow).

    household query: register (person token -> household token, household attributes)
                     LEFT JOIN each measure extract ON person token   (the register is the population)
                     -> per-person signed sum of measures -> GROUP BY household token
                     -> household value, attributes, size band -> filters -> clamp to public bounds
    person query:    union of the involved extracts' person tokens JOIN the register's linked persons
                     -> per-person value and attributes -> filters -> at most `member_cap` persons per
                     household -> clamp
    coverage query:  the register's linked persons (the seed's "1"), `person.covered` = has a row in any
                     of the coverage extracts, then as a person query

**Unlinked persons are dropped.** A person the register cannot link to a household (floating population,
a register row without a household number, an ID number the register holds in an invalid form) belongs to
no known household, so nothing bounds how many such rows one household adds: counting each as its own
unit would let one household contribute more rows than the release pays for. They are left out of person
queries (household queries never had them), and every person result says so (:data:`UNLINKED_NOTE`).
A separate release for them would need a public bound on their rows per household that no department
can check, so none is offered.

Filters come before the member cap, so the cap keeps up to `member_cap` persons *who match*; capping
first would drop matching members in favour of ones filtered out afterwards.

A household's value is the signed sum of its members' measures (the `household` members term adds 1
per member, so it is the household size), divided by its members when the measure is per capita. With
a baseline period the same sum over the baseline columns gives `household.income_trend`.

The frame this returns has one row per unit by construction (a `group_by` on the unit's token), group
columns named by their dimension reference, and `value` when the query has a measure. It lives in memory
for one query only.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import polars as pl
import pyarrow as pa

from aggregation.planner import Plan
from aggregation.query import (
    COVERED,
    INCOME_TREND,
    SIZE_BAND,
    TREND_FELL,
    TREND_NO_BASELINE,
    TREND_NOT_FELL,
    Measure,
)
from connectors.config import Unit
from connectors.protocol import BASELINE_SUFFIX, HOUSEHOLD_TOKEN_COLUMN, TOKEN_COLUMN

VALUE = "value"
UNLINKED_NOTE = (
    "Persons the household register cannot link to a household (floating population, no household number, "
    "an invalid register ID number) are not counted: the protected unit is the household, and their rows "
    "cannot be bounded per household. At most member_cap persons per household are counted, chosen after "
    "the filters."
)
_BASE = "_baseline_value"
_SHARE_SCALE = 10**6  # drop_share has at most 6 decimal places: compare in exact integers


def arrow_frame(ref: str, table: pa.Table) -> pl.LazyFrame:
    """An extract as a lazy frame over its Arrow buffers (no copy), see :func:`extract_frame`."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return extract_frame(ref, frame.lazy())


def extract_frame(ref: str, frame: pl.LazyFrame) -> pl.LazyFrame:
    """An extract's columns named `ref.column` (the tokens keep their names), dimensions as strings."""
    keep = {TOKEN_COLUMN, HOUSEHOLD_TOKEN_COLUMN}
    names = frame.collect_schema().names()
    # Dictionary-encoded dimensions arrive as categoricals; plain strings join and compare predictably.
    return frame.with_columns(pl.col(pl.Categorical).cast(pl.Utf8)).rename(
        {c: f"{ref}.{c}" for c in names if c not in keep}
    )


def _signed_sum(measure: Measure, suffix: str) -> pl.Expr:
    parts = [
        pl.lit(t.sign, dtype=pl.Int64)
        if t.is_members
        else pl.col(f"{t.dataset}.{t.measure}{suffix}").fill_null(0) * t.sign
        for t in measure.terms
    ]
    return pl.sum_horizontal(parts)


def _person_value(plan: Plan) -> list[pl.Expr]:
    measure = plan.query.measure
    if measure is None:
        return []
    exprs = [_signed_sum(measure, "").alias(VALUE)]
    if plan.query.baseline is not None:
        exprs.append(_signed_sum(measure, BASELINE_SUFFIX).alias(_BASE))
    return exprs


def unit_frame(plan: Plan, tables: Mapping[str, pa.Table]) -> pl.DataFrame:
    """One row per privacy unit from the extracts, keyed by `connector.dataset` (all in memory)."""
    frames = {ref: arrow_frame(ref, t) for ref, t in tables.items()}
    return unit_rows(plan, person_rows(plan, frames)).collect()


def person_rows(plan: Plan, frames: Mapping[str, pl.LazyFrame]) -> pl.LazyFrame:
    """The persons a query counts, one row each with their household token and value (the person level).

    Everything here joins on the person token, so it can run on any partition of the extracts by person
    token; :func:`unit_rows` then needs every row of a household together."""
    measured = [e.ref for e in plan.extracts if e.ref != plan.spine]
    if plan.query.unit is Unit.HOUSEHOLD:
        return _household_members(plan, frames, measured)
    return _person_rows(plan, frames, measured)


def unit_rows(plan: Plan, persons: pl.LazyFrame) -> pl.LazyFrame:
    """One row per privacy unit from :func:`person_rows` (the household level): group columns and value.

    Runs on any partition of the persons by household token."""
    if plan.query.unit is Unit.HOUSEHOLD:
        frame = _filtered(plan, _households(plan, persons))
    else:
        frame = _member_capped(plan, persons)
    # A code outside the published list was withheld (null) at the connector; the release puts such
    # units in each domain's public "other" cell.
    columns = [g.ref for g in plan.groups]
    measure = plan.query.measure
    if measure is not None:
        frame = frame.with_columns(pl.col(VALUE).clip(measure.lower, measure.upper).cast(pl.Int64))
        columns.append(VALUE)
    return frame.select(columns)


def _filtered(plan: Plan, frame: pl.LazyFrame) -> pl.LazyFrame:
    for ref, values in plan.filters:
        frame = frame.filter(pl.col(ref).is_in(sorted(values)))
    return frame


def _linked(plan: Plan, frames: Mapping[str, pl.LazyFrame]) -> pl.LazyFrame:
    """The register's persons who belong to a household: the only persons any query counts."""
    return frames[plan.spine].filter(pl.col(HOUSEHOLD_TOKEN_COLUMN).is_not_null())


def _spine_attributes(plan: Plan, columns: list[str]) -> list[str]:
    return [c for c in columns if c.startswith(f"{plan.spine}.")]


def _household_members(plan: Plan, frames: Mapping[str, pl.LazyFrame], measured: list[str]) -> pl.LazyFrame:
    persons = _linked(plan, frames)
    for ref in measured:
        persons = persons.join(frames[ref], on=TOKEN_COLUMN, how="left")
    persons = persons.with_columns(_person_value(plan))
    groups = plan.query.member_groups
    for g in groups:
        if g.dimension is not None:
            member = pl.col(g.dimension).is_in(list(g.values or ()))
        else:
            member = pl.col(g.measure or "").fill_null(0) >= (g.at_least or 0)
        persons = persons.with_columns(member.fill_null(False).alias(g.ref))
    attrs = _spine_attributes(plan, frames[plan.spine].collect_schema().names())
    values = [c for c in (VALUE, _BASE) if c in persons.collect_schema().names()]
    return persons.select([HOUSEHOLD_TOKEN_COLUMN, *attrs, *(g.ref for g in groups), *values])


def _households(plan: Plan, persons: pl.LazyFrame) -> pl.LazyFrame:
    groups = plan.query.member_groups
    names = persons.collect_schema().names()
    attrs = _spine_attributes(plan, names)
    aggs = [pl.col(a).drop_nulls().first().alias(a) for a in attrs]
    # Only "has a member in the group" leaves the household: never which member, nor how many.
    aggs += [(~pl.col(g.ref).any() if g.negate else pl.col(g.ref).any()).alias(g.ref) for g in groups]
    aggs.append(pl.len().alias("_size"))
    measure = plan.query.measure
    if measure is not None:
        aggs.append(pl.col(VALUE).sum())
        if plan.query.baseline is not None:
            aggs.append(pl.col(_BASE).sum())
    households = persons.group_by(HOUSEHOLD_TOKEN_COLUMN).agg(aggs)
    size = pl.col("_size")
    flags = [pl.when(pl.col(g.ref)).then(pl.lit("1")).otherwise(pl.lit("0")).alias(g.ref) for g in groups]
    households = households.with_columns(
        pl.when(size >= 5).then(pl.lit("5+")).otherwise(size.cast(pl.Utf8)).alias(SIZE_BAND), *flags
    )
    if measure is not None and plan.query.baseline is not None:
        households = households.with_columns(_trend(measure, plan.query.baseline.drop_share))
    if measure is not None and measure.per_capita:
        households = households.with_columns((pl.col(VALUE) / size).round().cast(pl.Int64).alias(VALUE))
    return households


def _trend(measure: Measure, drop_share: Decimal) -> pl.Expr:
    """`household.income_trend` from the household's values in both periods, each clamped to the bounds."""
    now = pl.col(VALUE).clip(measure.lower, measure.upper).cast(pl.Int64)
    before = pl.col(_BASE).clip(measure.lower, measure.upper).cast(pl.Int64)
    kept = _SHARE_SCALE - int(drop_share * _SHARE_SCALE)
    fell = now * _SHARE_SCALE < before * kept
    return (
        pl.when(before <= 0)
        .then(pl.lit(TREND_NO_BASELINE))
        .when(fell)
        .then(pl.lit(TREND_FELL))
        .otherwise(pl.lit(TREND_NOT_FELL))
        .alias(INCOME_TREND)
    )


def _person_rows(plan: Plan, frames: Mapping[str, pl.LazyFrame], measured: list[str]) -> pl.LazyFrame:
    linked = _linked(plan, frames)
    if plan.coverage:
        # The register's persons are the population; coverage extracts only mark who has a record.
        seen = pl.concat([frames[ref].select(TOKEN_COLUMN) for ref in plan.coverage]).unique()
        persons = linked.join(seen.with_columns(pl.lit("1").alias(COVERED)), on=TOKEN_COLUMN, how="left")
        persons = persons.with_columns(pl.col(COVERED).fill_null("0"))
    elif measured:
        # Anyone with a record in a measured dataset, as long as the register links them to a household.
        present = pl.concat([frames[ref].select(TOKEN_COLUMN) for ref in measured]).unique()
        persons = linked.join(present, on=TOKEN_COLUMN, how="semi")
    else:
        persons = linked
    for ref in measured:
        persons = persons.join(frames[ref], on=TOKEN_COLUMN, how="left")
    persons = _filtered(plan, persons.with_columns(_person_value(plan)))
    values = [VALUE] if plan.query.measure is not None else []
    return persons.select(
        [TOKEN_COLUMN, HOUSEHOLD_TOKEN_COLUMN, *dict.fromkeys(g.ref for g in plan.groups), *values]
    )


def _member_capped(plan: Plan, persons: pl.LazyFrame) -> pl.LazyFrame:
    # At most `member_cap` matching persons per household: the release pays for that many rows. The
    # choice follows the per-query tokens, so it is arbitrary but independent of the values.
    rank = pl.col(TOKEN_COLUMN).rank("ordinal").over(HOUSEHOLD_TOKEN_COLUMN)
    return persons.filter(rank <= plan.unit_multiplicity).unique(subset=[TOKEN_COLUMN])
