"""The `fedgate` command line.

fedgate gateway serve                      run the gateway (settings from FEDGATE_* variables)
fedgate users create|revoke|list           principals and API keys (operator, on the gateway host)
fedgate query submit|show|run|result|list  an analyst's queries (FEDGATE_URL, FEDGATE_API_KEY)
fedgate approve QUERY_ID --key FILE        a department admin signs an approval with the department key
fedgate approve --pending --key FILE       every query waiting for the department, shown, then signed
fedgate keys|keyring|admin-key new         keys, the federation keyring, a connector admin key
fedgate analysts keygen|register|list|revoke  an analyst's own signing key and its registration
fedgate endpoints|connectors|catalog|rules the allow-list, registration, the catalog, pre-approval rules
fedgate budget [--year YYYY]               spent and remaining epsilon per data year
fedgate groups list|show|add|retire        named key groups (household.has_<name>)
fedgate indicators list|run                the indicator library; run an indicator or the monthly pack
fedgate jobs list|show|cancel              runs as jobs: `query run` and `indicators run` submit one
fedgate schedules add|list|pause|resume|remove|run   monthly schedules of packs (operators)
fedgate archive list|show|diff             archived scheduled results, month on month
fedgate connector init|serve|check         a department's connector
fedgate synth                              a synthetic county
fedgate demo                               everything above on loopback
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from audit.cli import audit_app
from connectors.cli import connector_app, synth
from connectors.keys_cli import admin_key_app, keyring_app, keys_app
from gateway.cli.analysts import AnalystKeyOpt, analysts_app
from gateway.cli.common import (
    JsonOpt,
    KeyOpt,
    LangOpt,
    UrlOpt,
    call_gateway,
    console,
    errors,
    lang,
    say,
    set_lang,
)
from gateway.cli.groups import groups_app
from gateway.cli.indicators import indicators_app
from gateway.cli.jobs import NoWaitOpt, archive_app, follow, jobs_app, require_success, schedules_app
from gateway.cli.onboarding import (
    approve_batch,
    approve_one,
    catalog,
    connectors_app,
    endpoints_app,
    own_schemas,
    rules_app,
    waiting_for,
)
from gateway.cli.tables import Col, fitted_table, unclipped
from gateway.cli.users import users_app

LANG_CHOICES = ("zh", "zh-CN", "en")

app = typer.Typer(
    help="fedgate: a privacy-preserving data federation gateway.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
gateway_app = typer.Typer(help="Run the gateway.", no_args_is_help=True)
query_app = typer.Typer(help="Submit, inspect and run queries (analysts).", no_args_is_help=True)
app.add_typer(gateway_app, name="gateway")
app.add_typer(users_app, name="users")
app.add_typer(query_app, name="query")
app.add_typer(connector_app, name="connector")
app.add_typer(groups_app, name="groups")
app.add_typer(indicators_app, name="indicators")
app.add_typer(jobs_app, name="jobs")
app.add_typer(schedules_app, name="schedules")
app.add_typer(archive_app, name="archive")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(keyring_app, name="keyring")
app.add_typer(admin_key_app, name="admin-key")
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(connectors_app, name="connectors")
app.add_typer(rules_app, name="rules")
app.add_typer(analysts_app, name="analysts")
app.command("catalog")(catalog)
app.command("synth")(synth)

CsvOpt = Annotated[
    Path | None, typer.Option("--csv", help="also write the result cells to this CSV file / 另存为 CSV")
]
XlsxOpt = Annotated[
    Path | None,
    typer.Option("--xlsx", help="also write the result and a notes sheet to this Excel file / 另存为 Excel"),
]
PlotOpt = Annotated[
    Path | None,
    typer.Option("--plot", metavar="FILE", help="also draw the result to this .png or .svg file / 绘图"),
]


@app.callback()
def root(lang_option: LangOpt = None) -> None:
    """fedgate: a privacy-preserving data federation gateway. / 隐私保护数据联邦网关。"""
    if lang_option is not None and lang_option not in LANG_CHOICES:
        raise typer.BadParameter(f"{lang_option!r}: give zh or en / 请指定 zh 或 en", param_hint="'--lang'")
    set_lang(lang_option)


@gateway_app.callback()
def gateway_group() -> None:
    """Run the gateway."""


@gateway_app.command("serve")
def serve() -> None:
    """Serve the gateway on FEDGATE_HOST:FEDGATE_PORT until interrupted."""
    import uvicorn
    from pydantic import ValidationError

    from connectors.logs import configure_logging
    from gateway.app import build_context, create_app
    from gateway.settings import GatewaySettings, SettingsError

    configure_logging()
    try:
        settings = GatewaySettings()
        ctx = build_context(settings)
    except (SettingsError, ValidationError) as exc:
        errors.print(f"[red]cannot start the gateway:[/red] {exc}")
        raise typer.Exit(2) from None
    tls: dict[str, Any] = {}
    if settings.tls_cert_file and settings.tls_key_file:
        tls = {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
    uvicorn.run(
        create_app(ctx), host=settings.host, port=settings.port, log_level="warning", access_log=False, **tls
    )


def _client(url: str, key: str) -> Any:
    from gateway.client import GatewayClient

    return GatewayClient(url, key)


def _print_query(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(view, indent=2, default=str))
        return
    table = Table(title=say("query_title", query_id=view["id"]), show_header=False)
    table.add_row(say("query_state"), view["state"])
    table.add_row(say("query_analyst"), view["analyst"])
    table.add_row(say("query_purpose"), view["spec"]["purpose"])
    table.add_row(say("query_unit_epsilon"), f"{view['spec']['unit']} / {view['spec']['epsilon']}")
    table.add_row(say("query_departments"), ", ".join(view.get("departments", [])))
    covered = ", ".join(f"{d}: {c}" for d, c in view.get("covered_by", {}).items()) or "-"
    table.add_row(say("query_covered_by"), covered)
    console.print(unclipped(table))


def print_result(
    doc: dict[str, Any],
    names: Any,
    *,
    as_json: bool,
    csv_path: Path | None,
    xlsx_path: Path | None = None,
    plot_path: Path | None = None,
) -> None:
    """The result as a table (or JSON), and the files asked for; one that cannot be written exits 2."""
    from gateway.cli.query_view import print_result as show
    from gateway.cli.query_view import write_csv, write_plot
    from gateway.exports import write_xlsx
    from gateway.frames import query_frame

    frame = query_frame(doc, names)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str, ensure_ascii=False))
    else:
        show(console, frame, lang())
    info = errors if as_json else console
    writers: list[tuple[Path, Any]] = []
    if csv_path is not None:
        writers.append((csv_path, lambda p: write_csv(frame, p, lang())))
    if xlsx_path is not None:
        writers.append((xlsx_path, lambda p: write_xlsx(frame, p, lang())))
    if plot_path is not None:
        writers.append((plot_path, lambda p: write_plot(frame, p, lang())))
    for path, write in writers:
        try:
            write(path)
        except (OSError, ValueError) as exc:
            errors.print(f"[red]error:[/red] {say('cannot_write', path=path, reason=exc)}", highlight=False)
            raise typer.Exit(2) from None
        info.print(say("wrote", path=path), highlight=False)
    if plot_path is not None:
        from gateway.fonts import NO_FONT_HINT, chart_language

        if chart_language(lang()) is not lang():
            errors.print(f"[yellow]{NO_FONT_HINT}[/yellow]", highlight=False)


@query_app.command("submit")
def query_submit(
    spec_file: Annotated[Path, typer.Argument(help="the query as JSON (fedgate-query/1)")],
    url: UrlOpt,
    api_key: KeyOpt,
    analyst_key: AnalystKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a query, signed with your own key when one is given; prints its id and which departments
    must approve it. A department's rule that names analysts admits only signed queries."""
    from aggregation.query import QuerySpec
    from gateway.client import GatewayClient

    spec = QuerySpec.model_validate_json(spec_file.read_text(encoding="utf-8"))
    pem = analyst_key.read_bytes() if analyst_key is not None else None
    with GatewayClient(url, api_key, analyst_key=pem) as gw:
        _print_query(call_gateway(lambda: gw.submit(spec)), as_json)


def print_preview(doc: dict[str, Any]) -> None:
    """A preview as a table of half-widths, then its warnings."""
    title = (
        f"expected accuracy of {doc['query_id']} at ε = {doc['epsilon']} "
        f"({doc['confidence']:.0%} half-widths; {doc['cells']:,} public cells) / 预计精度"
    )
    table = Table(title=title)
    for col in ("statistic", "±", "unit", "per", "ε share", "note"):
        table.add_column(col, justify="right" if col == "±" else "left")
    for s in doc["statistics"]:
        if s["half_width"] is not None:
            shown = f"{s['half_width']:,.0f}"
        else:
            shown = ", ".join(f"n={n}: {w:,.0f}" for n, w in (s.get("half_width_by_cell_size") or {}).items())
        table.add_row(s["statistic"], shown, s["unit"], s["per"], s["epsilon_share"], s["note"])
    console.print(unclipped(table))
    for warning in doc["warnings"]:
        console.print(f"[yellow]warning / 提示:[/yellow] {warning}")


@query_app.command("estimate")
def query_estimate(
    spec_file: Annotated[Path, typer.Argument(help="the query as JSON (fedgate-query/1) / 查询文件")],
    url: UrlOpt,
    api_key: KeyOpt,
    as_json: JsonOpt = False,
) -> None:
    """Expected 95% half-width of every statistic before spending ε: no data read, nothing charged.
    运行前预估各统计量的 95% 误差范围：不读取数据，不消耗隐私预算。"""
    from aggregation.query import QuerySpec

    spec = QuerySpec.model_validate_json(spec_file.read_text(encoding="utf-8"))
    with _client(url, api_key) as gw:
        doc = call_gateway(lambda: gw.preview(spec))
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    print_preview(doc)


@query_app.command("show")
def query_show(query_id: str, url: UrlOpt, api_key: KeyOpt, as_json: JsonOpt = False) -> None:
    with _client(url, api_key) as gw:
        _print_query(call_gateway(lambda: gw.query(query_id)), as_json)


@query_app.command("list")
def query_list(url: UrlOpt, api_key: KeyOpt) -> None:
    with _client(url, api_key) as gw:
        rows = call_gateway(gw.queries)
    columns = [
        Col(say("queries_id"), whole=True),
        Col(say("queries_state"), whole=True),
        Col(say("queries_unit")),
        Col(say("queries_epsilon"), whole=True, right=True),
        Col(say("queries_purpose")),
    ]
    body = [
        [q["id"], q["state"], q["spec"]["unit"], str(q["spec"]["epsilon"]), escape(q["spec"]["purpose"])]
        for q in rows
    ]
    console.print(fitted_table(say("queries_title"), columns, body))


def _check_plot(plot_path: Path | None) -> None:
    from gateway.cli.query_view import PLOT_SUFFIXES

    if plot_path is not None and plot_path.suffix.lower() not in PLOT_SUFFIXES:
        raise typer.BadParameter(say("plot_suffix"), param_hint="'--plot'")


@query_app.command("run")
def query_run(
    query_id: str,
    url: UrlOpt,
    api_key: KeyOpt,
    as_json: JsonOpt = False,
    csv_path: CsvOpt = None,
    no_wait: NoWaitOpt = False,
    xlsx_path: XlsxOpt = None,
    plot_path: PlotOpt = None,
) -> None:
    """Run an approved query as a job, with a progress bar of its steps (again: returns the stored
    result, charges nothing); --no-wait prints the job id.
    以作业方式运行已批准的查询并显示进度（再次运行返回已存结果，不再扣减预算）；--no-wait 只打印作业编号。"""
    _check_plot(plot_path)
    with _client(url, api_key) as gw:
        job = call_gateway(lambda: gw.submit_job("query", query_id))
        if no_wait:
            typer.echo(job["id"])
            return
        final = follow(gw, job)
        require_success(final)
        doc = call_gateway(lambda: gw.job_result(final["id"]))["query"]
        names = call_gateway(gw.code_names)
    print_result(
        doc["result"], names, as_json=as_json, csv_path=csv_path, xlsx_path=xlsx_path, plot_path=plot_path
    )


@query_app.command("result")
def query_result(
    query_id: str,
    url: UrlOpt,
    api_key: KeyOpt,
    as_json: JsonOpt = False,
    csv_path: CsvOpt = None,
    xlsx_path: XlsxOpt = None,
    plot_path: PlotOpt = None,
) -> None:
    """The stored result of a query that has run. 查看已运行查询的结果。"""
    _check_plot(plot_path)
    with _client(url, api_key) as gw:
        doc = call_gateway(lambda: gw.result(query_id))
        names = call_gateway(gw.code_names)
    print_result(
        doc["result"], names, as_json=as_json, csv_path=csv_path, xlsx_path=xlsx_path, plot_path=plot_path
    )


@app.command("approve")
def approve(
    key: Annotated[Path, typer.Option("--key", help="the department's approval private key (PEM)")],
    url: UrlOpt,
    api_key: KeyOpt,
    query_id: Annotated[str | None, typer.Argument(help="the query (omit with --pending)")] = None,
    department: Annotated[
        str | None, typer.Option("--department", help="your department (default: your API key's)")
    ] = None,
    reject: Annotated[str | None, typer.Option("--reject", help="reject with this reason instead")] = None,
    pending: Annotated[
        bool, typer.Option("--pending", help="every query waiting for you, e.g. a pack run's / 全部待审批")
    ] = False,
    match: Annotated[
        str | None, typer.Option("--match", help="with --pending: only purposes containing this / 按用途筛选")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="sign without asking / 不再确认")] = False,
    connector: Annotated[
        list[str] | None,
        typer.Option(
            "--connector",
            help="your own connector's URL (repeatable): the query is planned against its schema "
            "/ 本部门连接器地址",
        ),
    ] = None,
    connector_admin_key_file: Annotated[
        Path | None,
        typer.Option(
            "--connector-admin-key-file",
            envvar="FEDGATE_CONNECTOR_ADMIN_KEY_FILE",
            help="the department admin key of your connectors / 连接器管理员密钥文件",
        ),
    ] = None,
    expires_days: Annotated[
        int | None, typer.Option(min=1, help="the approval is void after this many days / 有效天数")
    ] = None,
) -> None:
    """Approve (or reject) a query touching your department's data, signing with the department's key;
    with --pending, every query waiting for your department (an indicator or pack run's).

    Each query is planned again here against your own connectors' schemas (fetched from them with the
    department admin key), with the rule your connectors apply to every extract; the scope shown is the
    scope signed, and a query for which the gateway reports more than that plan is refused unsigned.

    用部门审批私钥批准（或拒绝）查询；加 --pending 时处理全部待审批查询。签署前按本部门连接器的数据目录重新
    规划查询并显示签署范围；网关要求的范围超出规划时拒绝签署。"""
    if (query_id is None) == (not pending):
        errors.print("[red]invalid_request[/red]: give a QUERY_ID or --pending [field query_id]")
        raise typer.Exit(2)
    expires_at = int(time.time()) + expires_days * 86_400 if expires_days else None
    with _client(url, api_key) as gw:
        if query_id is not None and reject is not None:
            view = call_gateway(lambda: gw.reject(query_id, reject))
            _print_query(view, False)
            return
        dept = department or call_gateway(gw.me)["department"]
        if not dept:
            errors.print("[red]forbidden[/red]: only a department admin approves queries")
            raise typer.Exit(1)
        schemas = own_schemas(connector or [], connector_admin_key_file)
        if pending:
            views = waiting_for(call_gateway(gw.queries), dept, match)
            done = approve_batch(gw, key.read_bytes(), dept, views, schemas, yes=yes, expires_at=expires_at)
            ready = sum(1 for v in done if v["state"] == "approved")
            console.print(f"{len(done)} approvals signed; {ready} queries now approved", highlight=False)
            return
        assert query_id is not None
        shown = call_gateway(lambda: gw.query(query_id))
        view = approve_one(gw, key.read_bytes(), dept, shown, schemas, yes=yes, expires_at=expires_at)
    _print_query(view, False)


@app.command("budget")
def budget(
    url: UrlOpt,
    api_key: KeyOpt,
    years: Annotated[
        list[str] | None,
        typer.Option("--year", help="data year YYYY to show (repeatable) / 要查看的数据年度（可重复）"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Spent and remaining epsilon per data year, and your own share of each.
    按数据年度显示已用和剩余的隐私预算（ε），以及您本人的份额。"""
    with _client(url, api_key) as gw:
        view = call_gateway(lambda: gw.budget(years))
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    mine = bool(view.get("analyst"))
    table = Table(
        title=f"privacy budget per data year (cap ε {view['year_cap']} each, for the year's lifetime) / "
        "各数据年度隐私预算"
    )
    for column in ("data year / 数据年度", "spent / 已用", "remaining / 剩余"):
        table.add_column(column)
    if mine:
        table.add_column(f"{view['analyst']} remaining / 本人剩余")
    for y in view["years"]:
        row = [y["year"], y["spent"], y["remaining"]]
        if mine:
            row.append(str(y["analyst_remaining"]) if y["analyst_remaining"] is not None else "no quota")
        table.add_row(*row)
    console.print(unclipped(table))
    if not view["years"]:
        console.print("no data year has been charged yet / 尚无数据年度被扣减预算")


@app.command("demo")
def demo(
    workdir: Annotated[str, typer.Option(help="where the demo county and state live")] = ".demo",
    persons: Annotated[int, typer.Option(min=100, help="persons in the demo county")] = 50_000,
    fresh: Annotated[bool, typer.Option(help="regenerate the county even if one exists")] = False,
    once: Annotated[bool, typer.Option("--once", help="exit after printing instead of serving")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the results to this JSON file")
    ] = None,
) -> None:
    """A county, five connectors and the gateway on loopback, the headline query, then serve until Ctrl-C."""
    from gateway.dev.demo import run_demo

    run_demo(Path(workdir), persons=persons, fresh=fresh, once=once, json_out=json_out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
