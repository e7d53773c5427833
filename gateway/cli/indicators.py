"""`fedgate indicators`: the indicator library and the monitoring packs, listed and run through the gateway.

    fedgate indicators list [--json]                 indicators with their releases and epsilon split; packs;
                                                     the monitoring configuration in force
    fedgate indicators check --config FILE           the file against the live catalog: every missing
                                                     dataset, measure or dimension (exit 1), or ok
    fedgate indicators configure FILE                set it as the configuration in force (operator)
    fedgate indicators run NAME --period P [...]     one indicator (income_bands, urban_rural_ratio, ...)
    fedgate indicators run --pack monthly --period P the month's increments (year_end: a data year's December)

    run options: --epsilon E, --band LABEL=LOW:HIGH (repeat), --group NAME (repeat), --baseline P,
                 --drop-share S; output: --json (print JSON) or --json FILE, --csv FILE, --xlsx FILE,
                 --plot FILE.png|.svg

Talks to the gateway's HTTP API (FEDGATE_URL, FEDGATE_API_KEY) like `fedgate query`. Arguments that cannot
be right are refused before any request (exit 2), a configuration file that cannot be read or has the
wrong shape too; gateway errors print their code and exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from gateway.cli.common import KeyOpt, UrlOpt, call_gateway, console, errors, lang, say

if TYPE_CHECKING:
    from gateway.client import GatewayClient
    from gateway.codenames import CodeNames

__all__ = ["client_factory", "indicators_app", "normalized_shares", "parse_bands", "save"]

indicators_app = typer.Typer(
    help="List the indicator library and run indicators or the monitoring calendar's packs (monthly, "
    "year_end). 列出指标库，运行指标或监测日历中的指标包（月度、年末）。",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


T = TypeVar("T")
STDOUT = "-"
"""`--json` without a file (or `--json -`): the run's JSON on stdout instead of the tables."""
PLOT_SUFFIXES = (".png", ".svg")


def _default_client(url: str, key: str) -> GatewayClient:
    from gateway.client import GatewayClient

    return GatewayClient(url, key)


client_factory: Callable[[str, str], GatewayClient] = _default_client
"""Builds the client for a URL and API key; tests put one here that talks to an in-process gateway."""


class _OptionalJsonValue(TyperCommand):
    """Lets `--json` stand alone (print to stdout) or take a FILE, which typer options cannot express:
    a bare `--json` (last, or followed by another option) becomes `--json -` before parsing."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        fixed: list[str] = []
        for i, arg in enumerate(args):
            fixed.append(arg)
            following = args[i + 1] if i + 1 < len(args) else None
            if arg == "--json" and (following is None or (following.startswith("-") and following != STDOUT)):
                fixed.append(STDOUT)
        return super().parse_args(ctx, fixed)


def parse_bands(values: list[str]) -> dict[str, tuple[int, int]]:
    """`LABEL=LOW:HIGH` (yuan, integers; `100_000` is fine) into the bands the gateway takes."""
    bands: dict[str, tuple[int, int]] = {}
    for text in values:
        label, sep, ends = text.partition("=")
        low, colon, high = ends.partition(":")
        try:
            if not (sep and colon and label.strip()):
                raise ValueError
            pair = (int(low), int(high))
        except ValueError:
            raise typer.BadParameter(
                f"{text!r}: give LABEL=LOW:HIGH with LOW and HIGH in yuan, e.g. 100k–500k=100000:500000",
                param_hint="'--band'",
            ) from None
        if label.strip() in bands:
            raise typer.BadParameter(f"band {label.strip()!r} is given twice", param_hint="'--band'")
        bands[label.strip()] = pair
    return bands


def _decimal(text: str | None, option: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise typer.BadParameter(f"{text!r} is not a number", param_hint=f"'{option}'") from None
    if not value.is_finite():
        raise typer.BadParameter(f"{text!r} is not a finite number", param_hint=f"'{option}'")
    return value


def normalized_shares(releases: list[dict[str, Any]]) -> list[str]:
    """Each release's fraction of the indicator's epsilon. The library lists declared weights, which need
    not add up to 1; a share that is not a number (one per key group) is shown as listed."""
    try:
        weights = [Fraction(r["share"]) for r in releases]
    except (ValueError, ZeroDivisionError):
        return [str(r["share"]) for r in releases]
    whole = sum(weights, Fraction(0))
    return [str(w / whole) if whole > 0 else str(w) for w in weights]


def _read_config(path: Path) -> tuple[Any, Any]:
    """The file's document and its validated configuration; a bad file ends the command (exit 2)."""
    from aggregation.indicators.config_file import MonitoringConfigError, load_monitoring_config

    try:
        config = load_monitoring_config(path)
    except MonitoringConfigError as exc:
        errors.print(f"[red]error:[/red] {exc.source}", highlight=False)
        for field, message in exc.problems:
            errors.print(f"  {field or '(top level)'}: {message}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    return config.model_dump(mode="json"), config


ConfigFile = Annotated[
    Path,
    typer.Option(
        "--config",
        metavar="FILE",
        help="the monitoring configuration (YAML) / 监测配置文件（YAML）",
        exists=True,
        dir_okay=False,
    ),
]


@indicators_app.command("check")
def check_config(url: UrlOpt, api_key: KeyOpt, config_path: ConfigFile) -> None:
    """Check a monitoring configuration against the live catalog: each dataset, measure or dimension it
    names that the catalog lacks, and what it should be (exit 1); nothing is stored.
    对照目录检查监测配置：列出缺少的数据集、度量或维度及应填内容（有问题时退出码为 1）。"""
    from aggregation.indicators.catalog_check import problems
    from connectors.protocol import ConnectorSchema

    _, config = _read_config(config_path)
    with client_factory(url, api_key) as gw:
        doc = call_gateway(gw.catalog)
    catalog = {c["connector"]: ConnectorSchema.model_validate(c) for c in doc["connectors"]}
    found = problems(config, catalog)
    if not found:
        console.print(
            f"{config_path}: ok — the calendar's packs can be built on the catalog of {len(catalog)} "
            f"connectors / 检查通过",
            highlight=False,
        )
        return
    table = Table(title=f"{config_path}: {len(found)} problem(s) / 问题")
    table.add_column("field / 字段")
    table.add_column("what is wrong and what it should be / 原因与应填内容")
    for p in found:
        table.add_row(p.field, p.message)
    errors.print(table)
    raise typer.Exit(1)


@indicators_app.command("configure")
def configure(
    url: UrlOpt,
    api_key: KeyOpt,
    config_path: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="the monitoring configuration (YAML)", exists=True, dir_okay=False
        ),
    ],
) -> None:
    """Set the monitoring configuration in force (operator): checked against the catalog, stored as a new
    version and audited; the same file again changes nothing.
    设置生效的监测配置（运营方）：对照目录检查、存为新版本并记入审计日志。"""
    doc, _ = _read_config(config_path)
    with client_factory(url, api_key) as gw:
        before = call_gateway(gw.monitoring_versions)["versions"]
        record = call_gateway(lambda: gw.set_monitoring(doc))
    changed = not before or before[-1]["version"] != record["version"]
    state = "now in force" if changed else "already in force, unchanged"
    console.print(
        f"monitoring configuration version {record['version']} {state} "
        f"(sha256 {record['config_digest'][:16]}…)",
        highlight=False,
    )


def _print_monitoring(record: dict[str, Any] | None) -> None:
    if record is None:
        console.print(
            "no monitoring configuration is loaded: `fedgate indicators configure FILE` (operator) / "
            "尚未加载监测配置"
        )
        return
    c = record["config"]
    table = Table(
        title=f"monitoring configuration v{record['version']} (sha256 {record['config_digest'][:16]}…, "
        f"{record['source']}, by {record['created_by']})"
    )
    table.add_column("setting")
    table.add_column("value")
    terms = "\n".join(
        f"{'+' if t['sign'] > 0 else '−'} {t['dataset']}.{t['measure']}" for t in c["income_terms"]
    )
    table.add_row("income proxy / 收入口径", terms)
    table.add_row(
        "household income bounds",
        f"[{c['income_lower']}, {c['income_upper']}] yuan; sums ≤ {c['income_sum_upper']}; "
        f"distribution [{c['distribution_lower']}, {c['distribution_upper']}]",
    )
    table.add_row("per-capita bounds", f"[{c['per_capita_lower']}, {c['per_capita_upper']}] yuan")
    table.add_row("village / 村（社区）", c["village"])
    table.add_row("urban-rural / 城乡", f"{c['urban_rural']} (urban: {', '.join(c['urban_prefixes'])}…)")
    table.add_row("members cap", str(c["size_cap"]))
    table.add_row("coverage datasets", "\n".join(c["coverage_datasets"]))
    table.add_row("bands", "\n".join(f"{k}: [{lo}, {hi})" for k, (lo, hi) in c["bands"].items()))
    table.add_row("edges", f"household {len(c['household_edges'])}, per capita {len(c['per_capita_edges'])}")
    groups = "\n".join(f"{g['definition']['name']}: {g['title']} / {g['title_zh']}" for g in c["key_groups"])
    table.add_row("key groups / 重点群体", groups or "none")
    table.add_row("early warning drop share", str(c["drop_share"]))
    if c.get("pack_shares"):
        table.add_row("year-end pack split", ", ".join(f"{k} {v}" for k, v in c["pack_shares"].items()))
    console.print(table)


@indicators_app.command("list")
def list_indicators(
    url: UrlOpt,
    api_key: KeyOpt,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """The indicators with the releases each makes and their share of its epsilon; the packs; the
    monitoring configuration in force."""
    with client_factory(url, api_key) as gw:
        library = call_gateway(gw.indicators)
    if as_json:
        typer.echo(json.dumps(library, indent=2, ensure_ascii=False))
        return
    _print_monitoring(library.get("monitoring"))
    table = Table(title="indicators (each release is one DP query; shares of the indicator's ε)")
    for col in ("name", "title", "counted", "release", "share of ε", "what"):
        table.add_column(col, justify="right" if col == "share of ε" else "left")
    for i, ind in enumerate(library["indicators"]):
        shares = normalized_shares(ind["releases"])
        for j, (rel, share) in enumerate(zip(ind["releases"], shares, strict=True)):
            first = j == 0
            table.add_row(
                ind["name"] if first else "",
                f"{ind['title']}\n{ind['title_zh']}" if first else "",
                ind["counted"] if first else "",
                rel["role"],
                share,
                rel["what"],
                end_section=j == len(ind["releases"]) - 1 and i < len(library["indicators"]) - 1,
            )
    console.print(table)
    packs = Table(title="packs (shares of the pack's ε)")
    for col in ("pack", "title", "indicator", "share of ε", "months"):
        packs.add_column(col, justify="right" if col == "share of ε" else "left")
    for pack in library["packs"]:
        for j, member in enumerate(pack["members"]):
            packs.add_row(
                f"{pack['name']}\nε {pack['default_epsilon']}, {pack['runs_for']}" if j == 0 else "",
                f"{pack['title']}\n{pack['title_zh']}" if j == 0 else "",
                member["indicator"],
                member["share"],
                member["months"],
            )
    console.print(packs)


@indicators_app.command("run", cls=_OptionalJsonValue)
def run(
    url: UrlOpt,
    api_key: KeyOpt,
    period: Annotated[
        str,
        typer.Option(
            "--period",
            metavar="P",
            help="YYYY-MM (the 12 months ending then; early_warning: 3) or YYYY-MM..YYYY-MM; "
            "a pack takes one reference month",
        ),
    ],
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="the indicator (see `fedgate indicators list`); or use --pack"),
    ] = None,
    pack: Annotated[
        str | None,
        typer.Option("--pack", metavar="PACK", help="run a pack instead: monthly or year_end / 运行指标包"),
    ] = None,
    epsilon: Annotated[
        str | None,
        typer.Option(
            "--epsilon",
            metavar="E",
            help="the total ε of the run; default: a pack's calendar ε (monthly 0.7, year_end 1), an "
            "indicator's the smallest department cap",
        ),
    ] = None,
    band: Annotated[
        list[str] | None,
        typer.Option(
            "--band",
            metavar="LABEL=LOW:HIGH",
            help="an income band LABEL=LOW:HIGH in yuan (repeat; not with --pack)",
        ),
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", metavar="NAME", help="a registered key group (repeat; key_groups, packs)"),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option("--baseline", metavar="P", help="early_warning: the earlier period to compare with"),
    ] = None,
    drop_share: Annotated[
        str | None,
        typer.Option("--drop-share", metavar="S", help="early_warning: the fall that counts, e.g. 0.3"),
    ] = None,
    json_out: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="[FILE]",
            help="print the run as JSON instead of tables, or (with FILE) also write it there",
        ),
    ] = None,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", metavar="FILE", help="also write every figure (all groups) to this CSV file"),
    ] = None,
    xlsx_path: Annotated[
        Path | None,
        typer.Option(
            "--xlsx",
            metavar="FILE",
            help="also write an Excel workbook: a sheet per indicator and a notes sheet / 另存为 Excel",
        ),
    ] = None,
    plot_path: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE", help="also draw the figures to this .png or .svg file"),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="print the job id and return at once / 只提交，不等待")
    ] = False,
) -> None:
    """Run an indicator or a pack as a job, with a progress bar of its steps: its queries must be approved;
    they are charged together and the figures come with 95% intervals. Running the same again returns
    the same figures and charges nothing. --no-wait prints the job id (`fedgate jobs show ID --wait`)."""
    if name is not None and pack is not None:
        raise typer.BadParameter("give an indicator NAME or --pack, not both", param_hint="NAME / '--pack'")
    if name is None and pack is None:
        raise typer.BadParameter(
            "give an indicator NAME (see `fedgate indicators list`) or --pack monthly",
            param_hint="NAME / '--pack'",
        )
    if pack is not None:
        for given, option in ((band, "--band"), (baseline, "--baseline"), (drop_share, "--drop-share")):
            if given:
                raise typer.BadParameter("applies to one indicator, not to a pack", param_hint=f"'{option}'")
    if plot_path is not None and plot_path.suffix.lower() not in PLOT_SUFFIXES:
        raise typer.BadParameter("the plot is written as .png or .svg", param_hint="'--plot'")
    total = _decimal(epsilon, "--epsilon")
    share = _decimal(drop_share, "--drop-share")
    bands = parse_bands(band) if band else None
    groups = list(group) if group else None
    to_stdout = json_out == STDOUT
    # With JSON on stdout, progress and file notices go to stderr so stdout stays parseable.
    info = errors if to_stdout else console

    def submit(gw: GatewayClient) -> Any:
        if pack is not None:
            return gw.submit_job("pack", pack, period=period, epsilon=total, groups=groups)
        return gw.submit_job(
            "indicator",
            name or "",
            period=period,
            epsilon=total,
            bands={k: list(v) for k, v in bands.items()} if bands else None,
            groups=groups,
            baseline=baseline,
            drop_share=share,
        )

    from gateway.cli.jobs import follow, require_success

    with client_factory(url, api_key) as gw:
        job = call_gateway(lambda: submit(gw))
        if no_wait:
            typer.echo(job["id"])
            return
        final = follow(gw, job, out=errors)
        require_success(final)
        doc = call_gateway(lambda: gw.job_result(final["id"]))["run"]
        names = call_gateway(gw.code_names)
    if to_stdout:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        from gateway.cli.indicators_view import print_run

        print_run(console, doc, names=names, lang=lang())
    save(
        doc,
        json_out=None if to_stdout else json_out,
        csv_path=csv_path,
        plot_path=plot_path,
        info=info,
        xlsx_path=xlsx_path,
        names=names,
    )


def save(
    doc: dict[str, Any],
    *,
    json_out: str | None,
    csv_path: Path | None,
    plot_path: Path | None,
    info: Console,
    xlsx_path: Path | None = None,
    names: CodeNames | None = None,
) -> None:
    """Write the files asked for; a file that cannot be written ends the command with exit code 2.
    CSV and XLSX headers are in the output language (`fedgate --lang`)."""
    from gateway.cli.indicators_view import write_csv, write_plot

    writers: list[tuple[Path, Callable[[Path], object]]] = []
    if json_out is not None:
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        writers.append((Path(json_out), lambda p: p.write_text(text, encoding="utf-8")))
    if csv_path is not None:
        writers.append((csv_path, lambda p: write_csv(doc, p, lang=lang())))
    if xlsx_path is not None:
        from gateway.exports import write_xlsx
        from gateway.frames import run_frame

        frame = run_frame(doc, names, lang=lang())
        writers.append((xlsx_path, lambda p: write_xlsx(frame, p, lang())))
    if plot_path is not None:
        writers.append((plot_path, lambda p: write_plot(doc, p)))
    for path, write in writers:
        try:
            write(path)
        except (OSError, ValueError) as exc:
            errors.print(f"[red]error:[/red] {say('cannot_write', path=path, reason=exc)}", highlight=False)
            raise typer.Exit(2) from None
        info.print(say("wrote", path=path), highlight=False)
