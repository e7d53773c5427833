"""`fedgate connector ...` and `fedgate synth`: the commands a department (or a demo) runs.

Imports are deferred into the commands so that loading this module (as the main CLI does) pulls in
neither the connector service nor the federation keyring.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from connectors.init_cli import init

if TYPE_CHECKING:
    from connectors.dry_run import CheckReport

connector_app = typer.Typer(help="Run and inspect a department connector.", no_args_is_help=True)
connector_app.command("init")(init)
console = Console(stderr=True)


@connector_app.command("serve")
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="the connector's YAML/TOML configuration")],
    host: Annotated[str | None, typer.Option(help="listen address (default: from the configuration)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default: from the configuration)")] = None,
) -> None:
    """Serve a connector on its configured address until interrupted."""
    import uvicorn

    from connectors.config import load_config
    from connectors.errors import ConnectorError
    from connectors.logs import configure_logging
    from connectors.service import build_service, create_app, log

    configure_logging()
    try:
        loaded = load_config(config)
        service = build_service(loaded)
    except ConnectorError as exc:
        console.print(f"[red]cannot start connector:[/red] {exc}")
        raise typer.Exit(2) from None
    listen = loaded.config.listen
    log.info(
        "connector.start",
        connector=loaded.config.name,
        department=loaded.config.department,
        host=host or listen.host,
        port=listen.port if port is None else port,
        datasets=[d.name for d in loaded.config.datasets],
    )
    uvicorn.run(
        create_app(service),
        host=host or listen.host,
        port=listen.port if port is None else port,
        log_level="warning",
        access_log=False,
    )


@connector_app.command("check")
def check(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="the connector's YAML/TOML configuration / 连接器配置文件")
    ],
    end: Annotated[
        str | None,
        typer.Option(help="last trial month YYYY-MM (default: last complete month) / 试算的最后一个月"),
    ] = None,
    months: Annotated[int, typer.Option(min=1, max=24, help="trial months / 试算月数")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON / 以 JSON 输出")] = False,
    schema: Annotated[
        bool, typer.Option("--schema", help="also print the schema it would publish / 同时输出将发布的模式")
    ] = False,
) -> None:
    """Dry run against the real source, printed here only: keys, IDs, periods, bounds, code lists.

    试运行：用真实数据源做一次试算汇总，只在本机显示（不发送给网关）。有错误时以非零状态退出。
    """
    import json
    import re

    from connectors.config import load_config
    from connectors.dry_run import run_check
    from connectors.errors import ConnectorError

    if end is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", end):
        console.print("[red]--end:[/red] expected a month as YYYY-MM, e.g. 2025-12 / 月份格式应为 YYYY-MM")
        raise typer.Exit(2)
    try:
        loaded = load_config(config)
    except ConnectorError as exc:
        console.print(f"[red]invalid / 配置无效:[/red] {exc}")
        raise typer.Exit(2) from None
    report = run_check(loaded, end=end, months=months)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        _print_check(report)
    if schema and report.ok and report.public_key is not None:
        # Built from the configuration alone: opening the state file could disturb a running connector.
        from connectors.service import build_schema

        typer.echo(build_schema(loaded, report.public_key).model_dump_json(indent=2))
    raise typer.Exit(0 if report.ok else 1)


def _print_check(report: CheckReport) -> None:
    from rich.table import Table

    out = Console()
    months = ", ".join(report.months)
    # soft_wrap: paths, keys and messages stay whole lines (the terminal wraps them), so they can be copied.
    out.print(
        f"connector [bold]{report.connector}[/bold] ({report.config}), trial months {months}", soft_wrap=True
    )
    out.print(f"public key / 公钥: {report.public_key or '-'}", soft_wrap=True)
    out.print(f"fingerprint / 指纹: {report.fingerprint or '-'}", soft_wrap=True)
    if report.public_key:
        # What auditors pass to `fedgate audit verify --witness-key` to check this connector's cosignatures.
        out.print(
            f"witness key / 见证公钥 (--witness-key): {report.connector}={report.public_key}", soft_wrap=True
        )
    colour = {"error": "red", "warning": "yellow", "info": "cyan"}
    for f in report.findings:
        out.print(f"[{colour[f.level]}]{f.level}:[/{colour[f.level]}] {f.message}", soft_wrap=True)
    for d in report.datasets:
        table = Table(title=f"dataset {d.name}", show_header=True)
        table.add_column("check / 检查")
        table.add_column("result / 结果")
        table.add_row("rows, entities / 行数, 实体数", f"{d.rows:,}, {d.entities:,}")
        if d.valid_share is not None:
            legacy = d.legacy_ids / d.raw_ids if d.raw_ids else 0.0
            invalid = d.invalid_ids / d.raw_ids if d.raw_ids else 0.0
            table.add_row(
                "IDs valid / legacy / invalid / 证件号", f"{d.valid_share:.1%} / {legacy:.1%} / {invalid:.1%}"
            )
        if d.period_read_as:
            table.add_row("period / 期间", d.period_read_as)
        if d.null_periods:
            table.add_row("rows without a period / 无期间的行", f"{d.null_periods:,}")
        if d.rows_per_month:
            table.add_row(
                "rows per month / 每月行数", ", ".join(f"{m}: {n:,}" for m, n in d.rows_per_month.items())
            )
        for m in d.measures:
            low = "-" if m.minimum is None else f"{m.minimum:,.0f}"
            high = "-" if m.maximum is None else f"{m.maximum:,.0f}"
            table.add_row(
                f"measure {m.name} / 指标",
                f"{low} .. {high} against [{m.lower_bound:,}, {m.upper_bound:,}];"
                f" {m.below} below, {m.above} above",
            )
        for name, n in d.outside_codelist.items():
            table.add_row(f"dimension {name} outside code list / 代码表外", f"{n:,}")
        if d.household_coverage is not None:
            table.add_row("household coverage / 户号覆盖", f"{d.household_coverage:.1%}")
        if d.bad_values:
            table.add_row("values that are not numbers / 非数值", f"{d.bad_values:,}")
        if d.snapshot is not None:
            table.add_row("snapshot / 快照", _snapshot_line(d.snapshot))
        out.print(table)
        for f in d.findings:
            out.print(f"[{colour[f.level]}]{f.level}:[/{colour[f.level]}] {d.name}: {f.message}")
    out.print("[green]ok / 通过[/green]" if report.ok else "[red]errors found / 发现错误[/red]")


def _snapshot_line(s: dict[str, Any]) -> str:
    months = " .. ".join(s["months"]) if s["months"] else "no period / 无期间"
    skipped = s["skipped_at_build"]
    return (
        f"{s['snapshot']}, data as of / 数据截至 {s['data_as_of']},"
        f" age / 已有 {s['age_seconds'] / 3600:.1f} h,"
        f" months / 月份 {months}, {s['rows']:,} rows, skipped at build / 生成时跳过:"
        f" {skipped['invalid_ids']:,} invalid IDs, {skipped['bad_values']:,} bad values"
    )


@connector_app.command("refresh")
def refresh(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="the connector's YAML/TOML configuration / 连接器配置文件")
    ],
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", "-d", help="only this dataset (repeatable) / 仅此数据集")
    ] = None,
) -> None:
    """Rebuild the datasets' snapshots from the source now, e.g. from the department's monthly scheduler.

    立即从数据源重建快照（例如由本部门的定时任务每月运行）。运行中的连接器在下次提取时使用新快照。
    """
    from connectors.config import load_config
    from connectors.errors import ConnectorError
    from connectors.snapshot import SnapshotStore, snapshot_summary
    from connectors.sources import open_source

    try:
        loaded = load_config(config)
    except ConnectorError as exc:
        console.print(f"[red]invalid / 配置无效:[/red] {exc}")
        raise typer.Exit(2) from None
    wanted = [d for d in loaded.config.datasets if not dataset or d.name in dataset]
    unknown = sorted(set(dataset or ()) - {d.name for d in wanted})
    if unknown:
        names = ", ".join(d.name for d in loaded.config.datasets)
        console.print(
            f"[red]no such dataset / 无此数据集:[/red] {', '.join(unknown)} (this connector has {names})"
        )
        raise typer.Exit(2)
    try:
        source = open_source(loaded.config.source)
    except ConnectorError as exc:
        console.print(f"[red]source / 数据源:[/red] {exc}")
        raise typer.Exit(1) from None
    store = SnapshotStore(loaded, source)
    try:
        for ds in wanted:
            try:
                source.check(ds)
                built = store.refresh(ds)
            except ConnectorError as exc:
                console.print(f"[red]{ds.name}:[/red] {exc}")
                raise typer.Exit(1) from None
            typer.echo(f"{ds.name}: {_snapshot_line(snapshot_summary(built.info))}")
    finally:
        source.close()


@connector_app.command("quality")
def quality(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="the connector's YAML/TOML configuration / 连接器配置文件")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON / 以 JSON 输出")] = False,
) -> None:
    """The department's own data-quality report and recent failures, read from the local state.

    本部门的数据质量报告和最近的失败记录（读取本地状态，不经过网关）。
    """
    import datetime
    import json

    from rich.table import Table

    from connectors.config import load_config
    from connectors.errors import ConnectorError
    from connectors.state import ConnectorState

    try:
        cfg = load_config(config).config
    except ConnectorError as exc:
        console.print(f"[red]invalid / 配置无效:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        state = ConnectorState(cfg.state_dir, read_only=True)
    except FileNotFoundError:
        console.print(f"no state yet in {cfg.state_dir}: the connector has not served / 连接器尚未运行")
        raise typer.Exit(1) from None
    try:
        datasets, recent = state.quality(), state.failures()
    finally:
        state.close()
    from connectors.snapshot import read_manifest, snapshot_summary

    manifests = {ds.name: read_manifest(cfg.state_dir, ds.name) for ds in cfg.datasets}
    snapshots = {name: snapshot_summary(info) for name, info in manifests.items() if info is not None}
    if as_json:
        report = {
            "connector": cfg.name,
            "datasets": datasets,
            "recent_failures": recent,
            "snapshots": snapshots,
        }
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    out = Console()

    def when(at: int) -> str:
        return datetime.datetime.fromtimestamp(at, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    table = Table(title=f"data quality of {cfg.name} / 数据质量 (last extract per dataset)")
    for column in (
        "dataset",
        "raw IDs",
        "invalid",
        "legacy",
        "cleaned",
        "duplicate",
        "bad values",
        "updated",
    ):
        table.add_column(column)
    for name, q in sorted(datasets.items()):
        table.add_row(
            name,
            *(
                f"{q.get(k, 0):,}"
                for k in ("raw_ids", "invalid_ids", "legacy_ids", "cleaned_ids", "duplicate_ids")
            ),
            f"{q.get('bad_values', 0):,}",
            when(q["updated_at"]),
        )
    out.print(table)
    for name, summary in sorted(snapshots.items()):
        out.print(f"snapshot / 快照 {name}: {_snapshot_line(summary)}", soft_wrap=True)
    out.print("recent failures / 最近的失败:" if recent else "no recent failures / 无失败记录")
    for f in recent:
        out.print(f"  {when(f['at'])}  {f['dataset']}  query {f['query_id']}  [bold]{f['cause']}[/bold]")
        out.print(f"    {f['error_class']}: {f['detail']}", markup=False)
        out.print(f"    fix / 处理: {f['fix']}", markup=False)


@connector_app.command("revoke-rule")
def revoke_rule(
    rule_id: Annotated[str, typer.Argument(help="the rule's id / 规则编号")],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="the connector's configuration / 连接器配置")
    ],
    key: Annotated[Path, typer.Option("--key", help="the department's approval key (PEM) / 部门审批私钥")],
    admin_key_file: Annotated[
        Path, typer.Option("--admin-key-file", help="the connector's admin key / 连接器管理密钥文件")
    ],
    url: Annotated[
        str | None,
        typer.Option("--url", help="the connector's URL (default: listen.public_url) / 连接器地址"),
    ] = None,
    digest: Annotated[
        str | None, typer.Option("--digest", help="revoke only this version (its SHA-256) / 仅吊销该版本")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="kept in the local log / 原因")] = "",
) -> None:
    """Revoke one of your department's rules at your own connector: signed with the department's key,
    held by the connector, and in its local log. Every version issued until now opens nothing there
    afterwards, whatever the gateway sends; a replacement you sign later is in force.

    在本部门连接器上吊销预授权规则：此后网关无论发送什么，该规则都不再放行。"""
    import time

    import httpx

    from connectors.config import load_config
    from connectors.errors import ConnectorError
    from connectors.protocol import Revocation, load_private_key, sign_revocation

    try:
        cfg = load_config(config).config
    except ConnectorError as exc:
        console.print(f"[red]invalid / 配置无效:[/red] {exc}")
        raise typer.Exit(2) from None
    target = url or cfg.listen.public_url
    if target is None:
        console.print("[red]give --url: the configuration has no listen.public_url / 请指定 --url[/red]")
        raise typer.Exit(2)
    revocation = Revocation(
        department=cfg.department,
        rule_id=rule_id,
        rule_digest=digest,
        issued_at=int(time.time()),
        reason=reason,
    )
    signed = sign_revocation(load_private_key(key.read_bytes()), revocation)
    admin = admin_key_file.read_text(encoding="utf-8").strip()
    try:
        r = httpx.post(
            target.rstrip("/") + "/v1/admin/revocations",
            content=signed.model_dump_json(),
            headers={"authorization": f"Bearer {admin}", "content-type": "application/json"},
            timeout=30,
        )
    except httpx.TransportError as exc:
        console.print(f"[red]unreachable / 无法连接:[/red] {type(exc).__name__} at {target}")
        raise typer.Exit(1) from None
    if r.status_code >= 400:
        console.print(f"[red]refused ({r.status_code}) / 被拒绝:[/red] {r.json().get('message', '')}")
        raise typer.Exit(1)
    console.print(f"rule {rule_id} revoked at connector {cfg.name} / 规则已吊销")


@connector_app.command("export-log")
def export_log(
    config: Annotated[Path, typer.Option("--config", "-c", help="the connector's YAML/TOML configuration")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the JSON Lines file to write")],
) -> None:
    """Export the local log (requests served, checkpoints witnessed) for `fedgate audit reconcile`."""
    from audit.export import export_connector_log
    from connectors.config import load_config
    from connectors.errors import ConnectorError
    from connectors.state import ConnectorState

    try:
        cfg = load_config(config).config
    except ConnectorError as exc:
        console.print(f"[red]invalid:[/red] {exc}")
        raise typer.Exit(2) from None
    # Read only: run beside a live connector (the scheduled reconcile), it must not release the
    # reservations of extracts in flight.
    try:
        state = ConnectorState(cfg.state_dir, read_only=True)
    except FileNotFoundError:
        console.print(f"[red]no state file in {cfg.state_dir}: the connector has not run yet[/red]")
        raise typer.Exit(2) from None
    try:
        verified = state.verify_log()
        count = export_connector_log(state, out, connector=cfg.name)
    except ValueError as exc:
        console.print(f"[red]the local log does not verify:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        state.close()
    console.print(f"local log verified ({verified} entries) and {count} entries written to {out}")


def synth(
    out: Annotated[Path, typer.Option("--out", help="directory to write the county into")],
    persons: Annotated[int, typer.Option(min=100, max=5_000_000, help="registered persons")] = 20_000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same county)")] = 1,
    year: Annotated[int, typer.Option(min=2000, max=2100, help="the year of monthly records")] = 2025,
    tax_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL for the tax store (PostgreSQL)")] = None,
    social_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL for social insurance (MariaDB)")
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            help="how the departments name things: standard, or renamed (other connector, dataset, "
            "measure and column names; the same data)"
        ),
    ] = "standard",
) -> None:
    """Generate a synthetic island county: five department stores, code lists, configs, a monitoring
    configuration and demo keys."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from connectors.synth import generate_county
    from connectors.synth.layout import LAYOUTS

    if layout not in LAYOUTS:
        raise typer.BadParameter(f"expected one of {', '.join(LAYOUTS)}", param_hint="'--layout'")
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("generating", total=None)
        summary = generate_county(
            out,
            persons=persons,
            seed=seed,
            year=year,
            tax_url=tax_url,
            social_url=social_url,
            progress=lambda step: bar.update(task, description=step),
            layout=layout,
        )
    console.print(
        f"county written to {out}: {summary.persons:,} persons, {summary.households:,} households, "
        f"{summary.villages} villages in {summary.elapsed_seconds:.1f} s"
    )
