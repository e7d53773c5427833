"""The analyst's pages: catalog, query builder with the accuracy preview, own queries with their
approval state, results as tables and charts with downloads, and the budget per data year.

Every action calls the services the JSON API calls (`gateway.queries.submit`, the preview route's
function, `gateway.runner.run_query` inside one of the analyst's run slots, the ledger's view), so the
roles, limits and audit events are the API's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from aggregation.bands import band_shares
from aggregation.distribution import lorenz_from_release
from aggregation.planner import PlanError, plan_query
from aggregation.query import SIZE_BAND, QuerySpec
from connectors.protocol import ConnectorSchema
from gateway import queries, runner
from gateway.api.queries import preview_query, query_view
from gateway.auth import Role
from gateway.console import charts
from gateway.console.deps import AnalystSession, CsrfChecked, PageLang, require_role
from gateway.console.names import ConsoleLabels
from gateway.console.render import nav, render
from gateway.context import GatewayContext, get_context
from gateway.errors import Invalid, NotFound
from gateway.exports import workbook_bytes
from gateway.frames import localized, query_frame
from gateway.i18n import Lang, translate
from gateway.lifecycle import QueryState
from gateway.registry import catalog
from privacy.vocabulary import histogram_bin_labels

router = APIRouter(prefix="/analyst")

nav(Role.ANALYST, "/console/analyst/catalog", "console.nav_catalog")
nav(Role.ANALYST, "/console/analyst/queries/new", "console.nav_builder")
nav(Role.ANALYST, "/console/analyst/queries", "console.nav_queries")
nav(Role.ANALYST, "/console/analyst/budget", "console.nav_budget")

STATISTICS = ("count", "sum", "mean", "histogram", "quantiles", "lorenz")
# The seed document's two income bands (yuan per household per year).
SEED_BANDS = {"100k–500k": (100_000, 500_000), "200k–600k": (200_000, 600_000)}
DEFAULT_EDGES = "100000,200000,500000,600000"


def _ctx(request: Request) -> GatewayContext:
    return get_context(request)


def _ints(text: str, field: str) -> tuple[int, ...]:
    try:
        return tuple(int(x.strip().replace("_", "")) for x in text.split(",") if x.strip())
    except ValueError:
        raise Invalid(
            f"{field}: give whole numbers separated by commas, e.g. {DEFAULT_EDGES}", field
        ) from None


def _floats(text: str, field: str) -> tuple[float, ...]:
    try:
        return tuple(float(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise Invalid(
            f"{field}: give numbers between 0 and 1 separated by commas, e.g. 0.25,0.5", field
        ) from None


def _text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


def spec_from_form(form: FormData) -> QuerySpec:
    """The query the builder's form describes (the one reading of it, for preview and submission)."""
    terms = []
    for key, sign in form.multi_items():
        if key.startswith("sign:") and sign in ("+", "-"):
            dataset, _, measure = key.removeprefix("sign:").rpartition(".")
            terms.append({"dataset": dataset, "measure": measure, "sign": 1 if sign == "+" else -1})
    statistics: list[dict[str, Any]] = []
    chosen = [s for s in form.getlist("statistic") if isinstance(s, str) and s in STATISTICS]
    edges = _ints(_text(form, "edges", DEFAULT_EDGES), "edges")
    for kind in chosen:
        stat: dict[str, Any] = {"kind": kind}
        if kind in ("histogram", "quantiles", "lorenz"):
            stat["edges"] = edges
        if kind == "quantiles":
            stat["probs"] = _floats(_text(form, "probs", "0.25,0.5,0.75"), "probs")
        statistics.append(stat)
    doc: dict[str, Any] = {
        "purpose": _text(form, "purpose"),
        "unit": _text(form, "unit", "household"),
        "period_start": _text(form, "period_start"),
        "period_end": _text(form, "period_end"),
        "group_by": [g for g in form.getlist("group_by") if isinstance(g, str) and g],
        "statistics": statistics,
        "epsilon": _text(form, "epsilon", "1"),
    }
    if terms:
        doc["measure"] = {
            "terms": terms,
            "lower": _ints(_text(form, "lower", "0"), "lower")[0] if _text(form, "lower") else 0,
            "upper": _ints(_text(form, "upper", "0"), "upper")[0] if _text(form, "upper") else 0,
            "label": _text(form, "label"),
            "per_capita": _text(form, "per_capita") == "1",
        }
    dimension, values = _text(form, "filter_dimension"), _text(form, "filter_values")
    if dimension and values:
        doc["filters"] = [
            {"dimension": dimension, "values": [v.strip() for v in values.split(",") if v.strip()]}
        ]
    if doc["unit"] == "person" and _text(form, "member_cap"):
        doc["member_cap"] = _ints(_text(form, "member_cap"), "member_cap")[0]
    try:
        return QuerySpec.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        raise Invalid(f"{field}: {first.get('msg', 'invalid value')}", field or None) from None


def _dimensions(cat: Mapping[str, ConnectorSchema]) -> list[dict[str, Any]]:
    out = []
    for schema in cat.values():
        for d in schema.datasets:
            for dim in d.dimensions:
                out.append(
                    {
                        "ref": f"{schema.connector}.{d.name}.{dim.name}",
                        "household": dim.household_level,
                        "description": dim.description,
                    }
                )
    out.append({"ref": SIZE_BAND, "household": True, "description": ""})
    return out


def _measures(cat: Mapping[str, ConnectorSchema]) -> list[dict[str, Any]]:
    return [
        {
            "ref": f"{schema.connector}.{d.name}.{m.name}",
            "lower": m.lower,
            "upper": m.upper,
            "unit": m.unit,
            "description": m.description,
        }
        for schema in cat.values()
        for d in schema.datasets
        for m in d.measures
    ]


@router.get("/catalog")
def catalog_page(request: Request, session: AnalystSession, lang: PageLang) -> Response:
    cat = catalog(_ctx(request).engine)
    names = ConsoleLabels.of(cat)
    return render(request, "analyst_catalog.html", lang, session, catalog=list(cat.values()), names=names)


def _builder_defaults(ctx: GatewayContext, cat: Mapping[str, ConnectorSchema]) -> dict[str, Any]:
    """The builder starts from the monitoring plan's household income bands by village, if one is in force."""
    from gateway import monitoring

    record = monitoring.current(ctx.engine)
    signs: dict[str, str] = {}
    lower, upper = -200_000, 5_000_000
    if record is not None:
        for term in record.config.income_terms:
            signs[f"{term.dataset}.{term.measure}"] = "+" if term.sign == 1 else "-"
        lower, upper = record.config.income_lower, record.config.income_upper
    village = next(
        (d["ref"] for d in _dimensions(cat) if d["household"] and d["ref"].endswith(".village")), None
    )
    return {
        "purpose": "",
        "unit": "household",
        "period_start": "2025-01",
        "period_end": "2025-12",
        "signs": signs,
        "lower": lower,
        "upper": upper,
        "label": "",
        "group_by": [village] if village else [],
        "statistics": ["histogram"],
        "edges": DEFAULT_EDGES,
        "probs": "0.25,0.5,0.75",
        "epsilon": "1",
    }


@router.get("/queries/new")
def builder(request: Request, session: AnalystSession, lang: PageLang) -> Response:
    ctx = _ctx(request)
    cat = catalog(ctx.engine)
    return render(
        request,
        "analyst_builder.html",
        lang,
        session,
        measures=_measures(cat),
        dimensions=_dimensions(cat),
        statistics=STATISTICS,
        form=_builder_defaults(ctx, cat),
    )


@router.post("/queries/preview")
async def preview(request: Request, session: CsrfChecked, lang: PageLang) -> Response:
    """The accuracy preview of the builder's form, as an HTML fragment the page shows in place."""
    require_role(session, Role.ANALYST)
    spec = spec_from_form(await request.form())
    from starlette.concurrency import run_in_threadpool

    result = await run_in_threadpool(preview_query, spec, _ctx(request), session.principal)
    return render(request, "analyst_preview.html", lang, session, preview=result)


@router.post("/queries")
async def submit(request: Request, session: CsrfChecked) -> Response:
    require_role(session, Role.ANALYST)
    spec = spec_from_form(await request.form())
    from starlette.concurrency import run_in_threadpool

    record, _ = await run_in_threadpool(queries.submit, _ctx(request).audit, spec, session.principal)
    return RedirectResponse(f"/console/analyst/queries/{record.id}", status_code=303)


def _approval(
    ctx: GatewayContext, record: queries.QueryRecord, cat: Mapping[str, ConnectorSchema]
) -> dict[str, Any]:
    view = query_view(ctx, record, dict(cat))
    try:
        plan = plan_query(record.spec, cat)
    except PlanError:
        return {"view": view, "waiting": [], "rejected": []}
    found, rejected = queries.covers(ctx.engine, record, plan)
    return {
        "view": view,
        "waiting": [d for d in plan.departments if d not in found]
        if record.state is QueryState.SUBMITTED
        else [],
        "rejected": rejected,
    }


@router.get("/queries")
def my_queries(request: Request, session: AnalystSession, lang: PageLang) -> Response:
    ctx = _ctx(request)
    cat = catalog(ctx.engine)
    rows = [_approval(ctx, r, cat) for r in queries.list_queries(ctx.engine, session.principal)]
    return render(request, "analyst_queries.html", lang, session, rows=rows)


def _own(ctx: GatewayContext, query_id: str, analyst: str) -> queries.QueryRecord:
    record = queries.get_query(ctx.engine, query_id)
    if record.analyst != analyst:
        raise NotFound("no query with that id", "query_id")
    return record


def _charts(doc: Mapping[str, Any], spec: QuerySpec, names: ConsoleLabels, lang: Lang) -> list[Any]:
    """The charts a release supports: band shares by its first group with error bars, the Lorenz curve."""
    out: list[Any] = []
    group = (doc.get("group_names") or [None])[0]
    for stat in spec.statistics:
        if stat.kind.value == "histogram" and stat.edges is not None:
            bands = {k: v for k, v in SEED_BANDS.items() if v[0] in stat.edges and v[1] in stat.edges}
            if not bands:
                labels = list(histogram_bin_labels(stat.edges))
                inner = list(zip(stat.edges, stat.edges[1:], strict=False))
                bands = {labels[i + 1]: pair for i, pair in enumerate(inner[:2])}
            if not bands:
                continue
            shares = band_shares(doc, edges=stat.edges, bands=bands, group_key=group)
            for band in bands:
                items = [
                    charts.Bar(
                        label=names.label(group, s.group if s.group != "None" else None, lang)
                        if group
                        else "",
                        value=s.share,
                        low=s.low,
                        high=s.high,
                    )
                    for s in shares
                    if s.band == band
                ]
                out.append(charts.bars(items, title=translate("console.chart_band_share", lang, band=band)))
        if stat.kind.value == "lorenz":
            try:
                estimates = lorenz_from_release(doc)
            except (ValueError, KeyError):
                continue
            for estimate in list(estimates.values())[:1]:
                points = [
                    charts.Point(x=p.value, y=q.value, low=q.low, high=q.high)
                    for p, q in zip(estimate.population_shares, estimate.income_shares, strict=True)
                ]
                out.append(
                    charts.lorenz(
                        points,
                        title=translate("console.chart_lorenz", lang, gini=f"{estimate.gini.value:.3f}"),
                        x_label=translate("console.chart_population_share", lang),
                        y_label=translate("console.chart_income_share", lang),
                    )
                )
    return out


@router.get("/queries/{query_id}")
def query_page(request: Request, query_id: str, session: AnalystSession, lang: PageLang) -> Response:
    ctx = _ctx(request)
    record = _own(ctx, query_id, session.principal.name)
    cat = catalog(ctx.engine)
    names = ConsoleLabels.of(cat)
    doc = ctx.ledger.result(record.id) if record.state is QueryState.RELEASED else None
    table = charts_list = None
    if doc is not None:
        table = _table(record.id, doc, names, lang)
        charts_list = _charts(doc["release"], record.spec, names, lang)
    return render(
        request,
        "analyst_query.html",
        lang,
        session,
        record=record,
        approval=_approval(ctx, record, cat),
        spec_json=json.dumps(record.spec.model_dump(mode="json"), ensure_ascii=False, indent=2),
        doc=doc,
        table=table,
        charts=charts_list or [],
    )


DOWNLOADS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
}


def _frame(query_id: str, doc: Mapping[str, Any], names: ConsoleLabels) -> Any:
    """The release as the one labelled frame the CLI, the client and the downloads share."""
    return query_frame({**doc, "query_id": query_id}, names.codes)


def _table(query_id: str, doc: Mapping[str, Any], names: ConsoleLabels, lang: Lang) -> tuple[list, list]:
    frame = localized(_frame(query_id, doc, names), lang)
    return list(frame.columns), frame.astype(object).where(frame.notna(), "").values.tolist()


@router.get("/queries/{query_id}/result.{fmt}")
def download(request: Request, query_id: str, fmt: str, session: AnalystSession, lang: PageLang) -> Response:
    if fmt not in DOWNLOADS:
        raise NotFound("downloads are .csv, .xlsx or .json", "fmt")
    ctx = _ctx(request)
    record = _own(ctx, query_id, session.principal.name)
    doc = runner.stored_result(ctx, record)
    names = ConsoleLabels.of(catalog(ctx.engine))
    if fmt == "json":
        body = json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8")
    elif fmt == "csv":
        # A byte-order mark, so Excel and WPS open the Chinese names as UTF-8.
        body = localized(_frame(record.id, doc, names), lang).to_csv(index=False).encode("utf-8-sig")
    else:
        body = workbook_bytes(_frame(record.id, doc, names), lang)
    filename = f"fedgate-{record.id[:12]}.{fmt}"
    return Response(
        body, media_type=DOWNLOADS[fmt], headers={"content-disposition": f'attachment; filename="{filename}"'}
    )


@router.get("/budget")
def budget_page(
    request: Request, session: AnalystSession, lang: PageLang, year: str | None = None
) -> Response:
    ctx = _ctx(request)
    years = [year] if year and len(year) == 4 and year.isdigit() else None
    view = ctx.ledger.remaining(session.principal.name, years)
    return render(request, "analyst_budget.html", lang, session, view=view)


__all__ = ["router", "spec_from_form"]
