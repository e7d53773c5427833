"""`fedgate jobs`, `fedgate schedules`, `fedgate archive`, and how run commands follow a job.

    fedgate jobs list|show|cancel                       the caller's jobs (an operator: every job)
    fedgate schedules add|list|pause|resume|remove|run  the operator's monthly schedules
    fedgate archive list|show|diff                      archived scheduled results, month on month

`follow(gw, job)` shows a rich progress bar of a job's steps from its server-sent events and returns the
final job; `query run` and `indicators run` submit a job and follow it (`--no-wait`: print the job id).
Labels come from the message catalog (`gateway/i18n/jobs.*.json`) in the language `FEDGATE_LANG` names
(zh-CN by default).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gateway.cli.common import JsonOpt, KeyOpt, UrlOpt, call_gateway, console, errors
from gateway.i18n import translate

if TYPE_CHECKING:
    from gateway.client import GatewayClient

__all__ = ["archive_app", "follow", "jobs_app", "require_success", "schedules_app", "t"]

jobs_app = typer.Typer(
    help="Jobs: runs of queries, indicators and packs. 作业：查询、指标和指标包的运行。", no_args_is_help=True
)
schedules_app = typer.Typer(
    help="Monthly schedules of packs (operators). 指标包的定时运行（运维人员）。", no_args_is_help=True
)
archive_app = typer.Typer(
    help="Archived results of scheduled runs, month on month. 定时运行结果归档与环比。", no_args_is_help=True
)

NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="print the job id and return at once / 只提交")]
FINAL = ("succeeded", "failed", "cancelled", "interrupted")


def t(key: str, **params: object) -> str:
    """A message of the `jobs` area in the language `FEDGATE_LANG` names (zh-CN by default)."""
    return translate(f"jobs.{key}", os.environ.get("FEDGATE_LANG", "zh-CN"), **params)


def _client(url: str, key: str) -> GatewayClient:
    from gateway.client import GatewayClient

    return GatewayClient(url, key)


def follow(gw: GatewayClient, job: dict[str, Any], *, out: Console | None = None) -> dict[str, Any]:
    """A progress bar of the job's steps until it is final (from its events); the final job."""
    shown = out or errors
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=shown,
        transient=False,
    ) as bar:
        task = bar.add_task(t("queued"), total=None)

        def update(j: dict[str, Any]) -> None:
            label = j["current_step"] or t(j["state"])
            bar.update(task, description=label, completed=j["steps_done"], total=j["steps_total"] or None)

        final = call_gateway(lambda: gw.wait_job(job["id"], on_progress=update))
    return dict(final)


def require_success(job: dict[str, Any]) -> None:
    """A job that did not succeed is printed as its public error, and the command exits 1."""
    if job["state"] == "succeeded":
        return
    error = job.get("error") or {}
    errors.print(
        f"[red]{error.get('code', job['state'])}[/red] ({t(job['state'])}): {error.get('message', '')}"
        + (f" [field {error['field']}]" if error.get("field") else "")
        + f"\n{t('job_id')}: {job['id']}",
        highlight=False,
    )
    raise typer.Exit(1)


def _jobs_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title=t("jobs_title"))
    for col in ("id", "kind", "target", "state", "progress", "step", "created"):
        table.add_column(t(f"col_{col}"), overflow="fold")
    for j in items:
        progress = f"{j['steps_done']}/{j['steps_total']}" if j["steps_total"] else "-"
        table.add_row(
            j["id"],
            j["kind"],
            j["target"],
            t(j["state"]),
            progress,
            j["current_step"] or "",
            j["created_at"][:19],
        )
    return table


@jobs_app.command("list")
def jobs_list(
    url: UrlOpt,
    api_key: KeyOpt,
    state: Annotated[str | None, typer.Option("--state", help="only jobs in this state")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Your jobs, newest first (an operator sees every job)."""
    with _client(url, api_key) as gw:
        doc = call_gateway(lambda: gw.jobs(state))
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    console.print(_jobs_table(doc["jobs"]))


@jobs_app.command("show")
def jobs_show(
    job_id: str,
    url: UrlOpt,
    api_key: KeyOpt,
    wait: Annotated[bool, typer.Option("--wait", help="follow it until it is final / 等待完成")] = False,
    as_json: JsonOpt = False,
) -> None:
    """One job: its state, progress, error and the path of its result."""
    with _client(url, api_key) as gw:
        job = call_gateway(lambda: gw.job(job_id))
        if wait and job["state"] not in FINAL:
            job = follow(gw, job)
    if as_json:
        typer.echo(json.dumps(job, indent=2, ensure_ascii=False))
        return
    console.print(_jobs_table([job]))
    if job.get("error"):
        console.print(f"[red]{job['error']['code']}[/red]: {job['error']['message']}", highlight=False)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: UrlOpt, api_key: KeyOpt) -> None:
    """Cancel a job: a queued one at once, a running one at its next step before data arrives (what no
    data reached is refunded, the rest stays charged)."""
    with _client(url, api_key) as gw:
        job = call_gateway(lambda: gw.cancel_job(job_id))
    key = "cancelled_now" if job["state"] == "cancelled" else "cancel_asked"
    console.print(t(key, job=job["id"]), highlight=False)


# --- schedules


def _schedules_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title=t("schedules_title"))
    for col in ("id", "name", "pack", "cron", "run_as", "state", "next_run", "last_job", "last_missed"):
        table.add_column(t(f"col_{col}"), overflow="fold")
    for s in items:
        cron = " ".join(f"{k}={v}" for k, v in s["cron"].items() if v not in ("*",))
        last = s.get("last_job")
        table.add_row(
            s["id"],
            s["name"],
            s["pack"],
            f"{cron} ({s['timezone']})",
            s["run_as"],
            t(s["state"]),
            (s["next_run_at"] or "-")[:19],
            f"{last['id']} {t(last['state'])}" if last else "-",
            (s["last_missed_at"] or "-")[:19],
        )
    return table


@schedules_app.command("add")
def schedules_add(
    url: UrlOpt,
    api_key: KeyOpt,
    name: Annotated[str, typer.Option("--name", help="what you call it, e.g. 'monthly pack'")],
    run_as: Annotated[
        str, typer.Option("--run-as", help="the analyst the runs are made as / 以该分析员身份运行")
    ],
    pack: Annotated[str, typer.Option("--pack", help="the pack: monthly or year_end")] = "monthly",
    day: Annotated[str, typer.Option("--day", help="cron day of month, e.g. 5")] = "5",
    hour: Annotated[str, typer.Option("--hour", help="cron hour, e.g. 2")] = "2",
    minute: Annotated[str, typer.Option("--minute", help="cron minute")] = "0",
    month: Annotated[str, typer.Option("--month", help="cron month (year_end: 1)")] = "*",
    epsilon: Annotated[
        str | None, typer.Option("--epsilon", help="default: the pack's calendar epsilon")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Schedule a pack for the previous month, e.g. on the 5th at 02:00 (the defaults), as an analyst."""
    with _client(url, api_key) as gw:
        doc = call_gateway(
            lambda: gw.create_schedule(
                name=name,
                pack=pack,
                cron={"day": day, "hour": hour, "minute": minute, "month": month},
                run_as=run_as,
                epsilon=epsilon,
            )
        )
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    console.print(_schedules_table([doc]))


@schedules_app.command("list")
def schedules_list(
    url: UrlOpt,
    api_key: KeyOpt,
    include_removed: Annotated[bool, typer.Option("--all", help="removed schedules too")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every schedule with its status: next run, last run and its job, last missed run."""
    with _client(url, api_key) as gw:
        doc = call_gateway(lambda: gw.schedules(include_removed=include_removed))
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    console.print(_schedules_table(doc["schedules"]))


def _change(action: str) -> Any:
    def command(schedule_id: str, url: UrlOpt, api_key: KeyOpt) -> None:
        with _client(url, api_key) as gw:
            doc = call_gateway(lambda: getattr(gw, f"{action}_schedule")(schedule_id))
        console.print(_schedules_table([doc]))

    command.__doc__ = {
        "pause": "Pause a schedule: runs falling due while paused are skipped.",
        "resume": "Resume a paused schedule from its next run time.",
        "remove": "Remove a schedule for good (its jobs and archived results stay).",
    }[action]
    return command


for _action in ("pause", "resume", "remove"):
    schedules_app.command(_action)(_change(_action))


@schedules_app.command("run")
def schedules_run(
    schedule_id: str,
    url: UrlOpt,
    api_key: KeyOpt,
    no_wait: NoWaitOpt = False,
) -> None:
    """Run a schedule once now, for the period its rule names today: what a systemd timer or a Kubernetes
    CronJob calls when the gateway's own scheduler is off (FEDGATE_SCHEDULES_ENABLED=false)."""
    with _client(url, api_key) as gw:
        job = call_gateway(lambda: gw.run_schedule(schedule_id))
        if no_wait:
            typer.echo(job["id"])
            return
        final = follow(gw, job, out=console)
    require_success(final)
    console.print(t("archived", job=final["id"]), highlight=False)


# --- archive


@archive_app.command("list")
def archive_list(
    url: UrlOpt,
    api_key: KeyOpt,
    pack: Annotated[str | None, typer.Option("--pack", help="only this pack")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Archived results of scheduled runs, newest period first."""
    with _client(url, api_key) as gw:
        doc = call_gateway(lambda: gw.archive(pack))
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    table = Table(title=t("archive_title"))
    for col in ("id", "pack", "period", "job", "created"):
        table.add_column(t(f"col_{col}"), overflow="fold")
    for a in doc["archived"]:
        table.add_row(a["id"], a["pack"], a["period"], a["job_id"], a["created_at"][:19])
    console.print(table)


@archive_app.command("show")
def archive_show(archive_id: str, url: UrlOpt, api_key: KeyOpt, as_json: JsonOpt = False) -> None:
    """One archived run's figures, as `fedgate indicators run` prints them."""
    with _client(url, api_key) as gw:
        doc = call_gateway(lambda: gw.archived(archive_id))
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    from gateway.cli.indicators_view import print_run

    print_run(console, doc["run"])


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4g}"


@archive_app.command("diff")
def archive_diff(archive_id: str, url: UrlOpt, api_key: KeyOpt, as_json: JsonOpt = False) -> None:
    """Each released figure against the same pack's previous month (differences of released figures)."""
    with _client(url, api_key) as gw:
        doc = call_gateway(lambda: gw.archive_diff(archive_id))
    if as_json:
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    previous = doc["previous"]
    title = t(
        "diff_title",
        pack=doc["archived"]["pack"],
        period=doc["archived"]["period"],
        previous=previous["period"] if previous else t("none"),
    )
    table = Table(title=title)
    for col in ("indicator", "figure", "label", "group", "value", "previous", "change"):
        table.add_column(
            t(f"col_{col}"),
            overflow="fold",
            justify="right" if col in ("value", "previous", "change") else "left",
        )
    for f in doc["figures"]:
        table.add_row(
            f["indicator"],
            f["figure"],
            f["label"],
            f["group"],
            _number(f["value"]),
            _number(f["previous"]),
            _number(f["change"]),
        )
    console.print(table)
