"""Routes: the indicator library and the monitoring packs (analysts run them; anyone may list them)."""

from __future__ import annotations

import calendar
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from aggregation.indicators import INDICATORS, PACKS, IndicatorParams, IndicatorResult, MonitoringConfig
from aggregation.indicators.config_file import configured_pack
from gateway import indicators, monitoring
from gateway.api import examples
from gateway.api.deps import Analyst, ContextDep, CurrentPrincipal
from gateway.api.errors import error_responses
from gateway.api.limits import RunSlot
from gateway.api.monitoring import MonitoringOut, monitoring_out

router = APIRouter(prefix="/v1", tags=["indicators"])

_PERIOD = r"^\d{4}-(0[1-9]|1[0-2])(\.\.\d{4}-(0[1-9]|1[0-2]))?$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IndicatorRunIn(_In):
    """The parameters of one indicator run; every omitted one takes the monitoring configuration's value."""

    period: str = Field(pattern=_PERIOD, description="YYYY-MM (the months ending then) or YYYY-MM..YYYY-MM")
    epsilon: Decimal | None = Field(
        None, gt=0, le=10, description="total for the indicator; default: the smallest department cap"
    )
    bands: dict[str, tuple[int, int]] | None = Field(
        None, max_length=12, description="income bands [low, high) in yuan; default the seed's two bands"
    )
    groups: list[str] | None = Field(None, max_length=12, description="registered key groups (key_groups)")
    baseline: str | None = Field(None, pattern=_PERIOD, description="early_warning: the earlier period")
    drop_share: Decimal | None = Field(None, gt=0, lt=1, description="early_warning: the fall that counts")


class PackRunIn(_In):
    """The parameters of a pack run."""

    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="the reference month, YYYY-MM")
    epsilon: Decimal | None = Field(
        None,
        gt=0,
        le=10,
        description="default: the pack's calendar epsilon (monthly 0.7, year_end 1) within the smallest "
        "department cap",
    )
    groups: list[str] | None = Field(None, max_length=12, description="key groups; default the standard five")


class IndicatorsRunOut(BaseModel):
    """The figures of an indicator or pack run, with the releases they came from."""

    pack: str | None = Field(description="the pack run; null for one indicator")
    period: str = Field(description="the period asked for")
    epsilon: str = Field(description="the total charged (exactly the sum of the queries' epsilons)")
    monitoring_version: int | None = Field(
        None, description="the version of the monitoring configuration the run was built from"
    )
    indicators: list[IndicatorResult] = Field(description="each indicator's figures with 95% intervals")


class ReleaseOut(BaseModel):
    """One DP release of an indicator."""

    role: str = Field(description="the release's role within the indicator")
    what: str = Field(description="what it releases")
    share: str = Field(description="the release's share of the indicator's epsilon, as a fraction")


class IndicatorOut(BaseModel):
    """An indicator of the library: the releases it makes and their shares of its epsilon."""

    name: str = Field(description="the indicator's name, as in /v1/indicators/{name}/run")
    title: str = Field(description="its title in English")
    title_zh: str = Field(description="its title in Chinese")
    counted: str = Field(description="what it counts (households or persons)")
    protected_unit: str = Field("household", description="the unit its guarantee protects: household")
    description: str = Field(description="what it measures and how")
    releases: list[ReleaseOut] = Field(description="its DP releases, each one query")


class PackMemberOut(BaseModel):
    """One indicator of a pack."""

    indicator: str = Field(description="the indicator's name")
    share: str = Field(description="its share of the pack's epsilon, as a fraction")
    months: str = Field(description="the months it covers, relative to the reference month")


class PackOut(BaseModel):
    """A pack of the monitoring calendar: indicators run together for one reference month."""

    name: str = Field(description="the pack's name: monthly or year_end")
    title: str = Field(description="its title in English")
    title_zh: str = Field(description="its title in Chinese")
    default_epsilon: str | None = Field(
        description="the monitoring calendar's epsilon for one run; null: the smallest department cap"
    )
    runs_for: str = Field(description="the reference months it runs for")
    members: list[PackMemberOut] = Field(description="its indicators and their shares")


class LibraryOut(BaseModel):
    """The indicator library and the monitoring calendar's packs."""

    indicators: list[IndicatorOut] = Field(description="every indicator")
    packs: list[PackOut] = Field(description="every pack")
    monitoring: MonitoringOut | None = Field(
        description="the monitoring configuration in force; none loaded: releases are not listed"
    )


def library(record: monitoring.MonitoringRecord | None) -> LibraryOut:
    """Every indicator with its releases and epsilon split, and every pack with its split, as the
    monitoring configuration in force builds them (without one, the indicators without releases)."""
    probe = IndicatorParams(
        period_start="2025-01",
        period_end="2025-12",
        epsilon=Decimal(1),
        analyst="-",
        groups=(),
    )
    config: MonitoringConfig | None = record.config if record is not None else None
    out = []
    for t in INDICATORS.values():
        releases: list[ReleaseOut] = []
        try:
            if config is not None:
                decls = t.releases(probe, config)
                whole = sum((d.weight for d in decls), Fraction(0))
                releases = [ReleaseOut(role=d.role, what=d.what, share=str(d.weight / whole)) for d in decls]
        except ValueError:
            releases = [ReleaseOut(role="group:<name>", what="one histogram per key group", share="1/groups")]
        out.append(
            IndicatorOut(
                name=t.name,
                title=t.title,
                title_zh=t.title_zh,
                counted=t.counted,
                description=t.description,
                releases=releases,
            )
        )
    packs = []
    for declared in PACKS.values():
        p = declared if config is None else configured_pack(declared, config)
        packs.append(
            PackOut(
                name=p.name,
                title=p.title,
                title_zh=p.title_zh,
                default_epsilon=None if p.default_epsilon is None else str(p.default_epsilon),
                runs_for="every month"
                if len(p.reference_months) == 12
                else ", ".join(calendar.month_name[m] for m in p.reference_months) + " only",
                members=[PackMemberOut(**m) for m in p.description(config)],
            )
        )
    return LibraryOut(
        indicators=out, packs=packs, monitoring=None if record is None else monitoring_out(record)
    )


@router.get("/indicators", responses=error_responses(), response_model=LibraryOut)
def list_indicators(who: CurrentPrincipal, ctx: ContextDep) -> LibraryOut:
    """The indicator library: what each releases, how its epsilon is split; the packs and their splits;
    the monitoring configuration in force."""
    return library(monitoring.current(ctx.engine))


def _out(doc: dict[str, Any]) -> IndicatorsRunOut:
    return IndicatorsRunOut.model_validate(doc)


@router.post(
    "/indicators/{name}/run",
    responses=error_responses(403, 404, 409, 413, 422, 502),
    response_model=IndicatorsRunOut,
)
def run_indicator(
    name: str,
    body: Annotated[IndicatorRunIn, Body(openapi_examples=examples.INDICATOR_RUN)],
    ctx: ContextDep,
    analyst: Analyst,
    slot: RunSlot,
) -> IndicatorsRunOut:
    """Run one indicator: its queries are submitted, must be approved, are charged together, and its
    figures come with 95% intervals. Running it again returns the same figures and charges nothing."""
    doc = indicators.run_indicator(
        ctx,
        analyst,
        name,
        period=body.period,
        epsilon=body.epsilon,
        bands=body.bands,
        groups=body.groups,
        baseline=body.baseline,
        drop_share=body.drop_share,
    )
    return _out(doc)


@router.post(
    "/packs/{name}/run",
    responses=error_responses(403, 404, 409, 413, 422, 502),
    response_model=IndicatorsRunOut,
)
def run_pack(
    name: str,
    body: Annotated[PackRunIn, Body(openapi_examples=examples.PACK_RUN)],
    ctx: ContextDep,
    analyst: Analyst,
    slot: RunSlot,
) -> IndicatorsRunOut:
    """Run a pack of the monitoring calendar (`monthly`: the month's increments; `year_end`: a data year's
    December) within one epsilon, split as documented."""
    doc = indicators.run_pack(
        ctx, analyst, name, period=body.period, epsilon=body.epsilon, groups=body.groups
    )
    return _out(doc)
