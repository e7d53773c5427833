"""`fedgate audit ...`: export, tail, verify and reconcile the audit log, and manage the audit key.

`verify` exits 0 when every entry re-hashes, chains and is covered by checkpoints signed with the given
key, and reproduces every saved checkpoint and department cosignature given, and 1 otherwise, naming the
first bad sequence number and what is wrong (2 for unusable arguments). `reconcile` exits 0 when the
gateway's and the connector's logs agree, 1 on any difference: run it on a schedule
(deploy/systemd/fedgate-reconcile.timer, deploy/k8s/reconcile-cronjob.yaml).

Imports are deferred into the commands so that mounting this app in the main CLI loads neither
SQLAlchemy nor the cryptography library.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console

if TYPE_CHECKING:
    from audit.store import AuditLog
    from audit.verify import VerifyReport

audit_app = typer.Typer(help="Export, inspect and verify the tamper-evident audit log.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


def _default_db() -> str:
    # The gateway keeps its audit log in its own database: the same settings find it.
    import os

    url = os.environ.get("FEDGATE_DATABASE_URL")
    if url:
        return url
    state = Path(os.environ.get("FEDGATE_STATE_DIR", ".fedgate")).resolve()
    return f"sqlite:///{state / 'gateway.sqlite3'}"


DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        default_factory=_default_db,
        help="SQLAlchemy URL of the audit store (default: the gateway's database from FEDGATE_DATABASE_URL, "
        "or FEDGATE_STATE_DIR/gateway.sqlite3)",
    ),
]


class _Stderr:
    """Whatever `sys.stderr` is when a line is written: a test runner swaps it for every command."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _configure_logging() -> None:
    import structlog

    from connectors.logs import configure_logging

    if not structlog.is_configured():
        configure_logging()
    # Log lines go to stderr, keeping stdout for results (notes, tables) that may be piped.
    factory: Any = structlog.PrintLoggerFactory(cast(Any, _Stderr()))
    structlog.configure(logger_factory=factory, cache_logger_on_first_use=False)


def _open_log(db: str) -> AuditLog:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from audit.errors import AuditUnavailable
    from audit.store import AuditLog

    _configure_logging()
    try:
        url = make_url(db)
    except ArgumentError:
        errors.print(f"[red]not a database URL:[/red] {db}")
        raise typer.Exit(2) from None
    file_db = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if file_db and not Path(str(url.database)).is_file():
        errors.print(f"[red]no audit store at[/red] {url.database}")
        raise typer.Exit(2)
    try:
        return AuditLog.open(db, create=False)
    except AuditUnavailable as exc:
        errors.print(f"[red]cannot open the audit store:[/red] {exc}")
        raise typer.Exit(2) from None


@audit_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="the JSON Lines file to write")],
    db: DbOption,
    start: Annotated[int, typer.Option(min=1, help="first sequence number")] = 1,
    end: Annotated[int | None, typer.Option(min=0, help="last sequence number (default: the head)")] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            envvar="FEDGATE_AUDIT_KEY_FILE",
            help="sign a checkpoint of the head first with this audit key file (PRIVATE+KEY+...)",
        ),
    ] = None,
) -> None:
    """Export a range of entries, with the checkpoints that cover it, as JSON Lines."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from audit.checkpoint import Checkpointer, load_signer
    from audit.errors import AuditError
    from audit.export import export_log

    log = _open_log(db)
    try:
        checkpointer = Checkpointer(log, load_signer(signing_key)) if signing_key else None
        size = log.head().size
        last = size if end is None else min(end, size)
        with Progress(
            TextColumn("export"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=errors
        ) as progress:
            task = progress.add_task("export", total=max(last - start + 1, 0))
            summary = export_log(
                log,
                out,
                start=start,
                end=end,
                checkpointer=checkpointer,
                progress=lambda n: progress.update(task, completed=n),
            )
    except (AuditError, ValueError, OSError) as exc:
        errors.print(f"[red]export failed:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"wrote entries {summary.start}..{summary.end} ({summary.entries} entries, "
        f"{summary.checkpoints} checkpoint(s)) to {summary.path}"
    )


@audit_app.command("tail")
def tail(
    db: DbOption,
    n: Annotated[int, typer.Option("-n", "--lines", min=1, max=10_000, help="how many entries")] = 20,
) -> None:
    """Show the last entries of the log."""
    from rich.table import Table

    from audit.errors import AuditError

    log = _open_log(db)
    try:
        size, root = log.head()
        entries = list(log.entries(max(size - n + 1, 1), size))
    except AuditError as exc:
        errors.print(f"[red]cannot read the audit log:[/red] {exc}")
        raise typer.Exit(1) from None
    table = Table(title=f"audit log: {size} entries, root {root.hex()[:16]}…")
    for column in ("seq", "time (UTC)", "action", "actor", "outcome", "query", "connector", "hash"):
        table.add_column(column, no_wrap=column in ("seq", "hash"))
    for e in entries:
        event = e.event
        table.add_row(
            str(e.seq),
            e.time.strftime("%Y-%m-%d %H:%M:%S"),
            *(str(event.get(k) or "") for k in ("action", "actor", "outcome", "query_id", "connector")),
            e.hash[:12],
        )
    console.print(table)


@audit_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="an export written by `fedgate audit export`")],
    public_key: Annotated[
        list[str],
        typer.Option(
            "--public-key",
            "-k",
            help="trusted audit key: a verifier key (name+id+base64), a PEM or base64 Ed25519 key, or a file",
        ),
    ],
    origin: Annotated[str | None, typer.Option(help="require the checkpoints to name this origin")] = None,
    strict: Annotated[
        bool, typer.Option(help="also fail when the newest entries are not yet signed")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the report as JSON here")
    ] = None,
    trusted_checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--trusted-checkpoint",
            help="a signed checkpoint saved earlier (GET /v1/audit/checkpoint's note): the export must "
            "reproduce it; repeatable",
        ),
    ] = None,
    witness_key: Annotated[
        list[str] | None,
        typer.Option(
            "--witness-key",
            help="a department's connector key, to check its cosignatures: name=ed25519:<base64> (as "
            "its schema shows it) or a cosignature/v1 verifier key, or a file; repeatable",
        ),
    ] = None,
    cosigned: Annotated[
        list[Path] | None,
        typer.Option(
            "--cosigned",
            help="cosignatures a department handed over: a cosigned checkpoint note or its connector's "
            "local log export; repeatable",
        ),
    ] = None,
    save_checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="after a successful check, save the export's latest checkpoint here, to pass as "
            "--trusted-checkpoint next time (a scheduled run pins what the previous one saw)",
        ),
    ] = None,
) -> None:
    """Verify an export offline: re-hash every entry, recompute chain and Merkle roots, check signatures,
    and check it against saved checkpoints and the departments' cosignatures."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from audit.errors import AuditError
    from audit.verify import verify_export
    from audit.witnessed import load_witness_key

    if not file.is_file():
        errors.print(f"[red]no such export:[/red] {file}")
        raise typer.Exit(2)
    try:
        saved = [
            (p.read_text(encoding="utf-8"), f"the trusted checkpoint {p}") for p in trusted_checkpoint or []
        ]
        witnesses = [load_witness_key(k) for k in witness_key or []]
    except (AuditError, OSError, ValueError) as exc:
        errors.print(f"[red]cannot read the outside evidence:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=errors
        ) as progress:
            task = progress.add_task("verifying", total=None)
            report = verify_export(
                file,
                public_key,
                origin=origin,
                progress=lambda n: progress.update(task, description=f"verified {n:,} entries"),
                trusted_checkpoints=saved,
                witness_keys=witnesses,
                cosigned=cosigned or [],
            )
    except (AuditError, ValueError) as exc:
        errors.print(f"[red]cannot verify:[/red] {exc}")
        raise typer.Exit(2) from None
    if json_out is not None:
        _write_report(report, json_out)
    if report.witnessed:
        _print_witnessed(report)
    if not report.ok:
        first = report.first_problem
        assert first is not None
        console.print(f"[red]FAILED[/red] first bad sequence number {first.seq}: {first.message}")
        if report.problem_count > 1:
            console.print(f"{report.problem_count - 1} more problem(s):")
            for p in sorted(report.problems, key=lambda p: p.seq)[1:20]:
                console.print(f"  seq {p.seq} [{p.kind.value}] {p.message}")
        raise typer.Exit(1)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if strict and report.uncovered_from is not None:
        console.print(f"[red]FAILED[/red] first bad sequence number {report.uncovered_from}: not yet signed")
        raise typer.Exit(1)
    if save_checkpoint is not None:
        _save_latest_checkpoint(file, save_checkpoint)
    last = report.start + report.entries - 1
    console.print(
        f"[green]OK[/green] entries {report.start}..{last} re-hashed and chained; "
        f"{report.checkpoints_verified} signed checkpoint(s) verified, covering up to {report.covered_to}"
        + (f"; origin {report.origin}" if report.origin else "")
    )


def _save_latest_checkpoint(export: Path, out: Path) -> None:
    """Write the largest checkpoint note of a verified export (its lines precede the first entry)."""
    import json
    import os

    best: tuple[int, str] | None = None
    with export.open("rb") as f:
        for raw in f:
            if raw.startswith(b'{"kind":"entry"'):
                break
            line = json.loads(raw)
            if line.get("kind") == "checkpoint" and (best is None or line["size"] > best[0]):
                best = (line["size"], line["note"])
    if best is not None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(best[1], encoding="utf-8")
        os.replace(tmp, out)


def _print_witnessed(report: VerifyReport) -> None:
    from rich.table import Table

    table = Table(title="latest checkpoint cosigned by each department's connector")
    for column in ("connector", "department", "size", "cosigned at (UTC)", "agrees with the export"):
        table.add_column(column)
    for w in sorted(report.witnessed.values(), key=lambda w: w.connector):
        when = datetime.datetime.fromtimestamp(w.timestamp, tz=datetime.UTC).isoformat(timespec="seconds")
        table.add_row(
            w.connector, w.department or "", str(w.size), when, "yes" if w.agrees else "[red]NO[/red]"
        )
    console.print(table)


def _write_report(report: VerifyReport, path: Path) -> None:
    import dataclasses
    import json

    data = dataclasses.asdict(report)
    data["path"] = str(data["path"])
    data["ok"] = report.ok
    data["first_bad_seq"] = report.first_bad_seq
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


@audit_app.command("reconcile")
def reconcile(
    gateway_export: Annotated[Path, typer.Argument(help="the gateway's audit export")],
    connector_export: Annotated[Path, typer.Argument(help="the connector's local log export")],
    connector: Annotated[
        str | None, typer.Option(help="the connector's name (default: from the connector export)")
    ] = None,
) -> None:
    """List connector calls and checkpoints present on one side and missing or different on the other."""
    from rich.table import Table

    from audit.errors import AuditError
    from audit.reconcile import reconcile as run_reconcile

    try:
        differences = run_reconcile(gateway_export, connector_export, connector=connector)
    except (AuditError, ValueError, OSError) as exc:
        errors.print(f"[red]cannot reconcile:[/red] {exc}")
        raise typer.Exit(2) from None
    if not differences:
        console.print("[green]OK[/green] the gateway's log and the connector's log agree")
        return
    table = Table(title=f"{len(differences)} difference(s)")
    for column in ("kind", "gateway seq", "connector seq", "request digest", "what"):
        table.add_column(column)
    for d in differences:
        table.add_row(
            d.kind.value,
            "" if d.gateway_seq is None else str(d.gateway_seq),
            "" if d.connector_seq is None else str(d.connector_seq),
            (d.request_digest or "")[:16],
            d.message,
        )
    console.print(table)
    raise typer.Exit(1)


@audit_app.command("fetch")
def fetch(
    url: Annotated[str, typer.Option(help="the gateway's base URL, e.g. https://fedgate.example.internal")],
    api_key_file: Annotated[Path, typer.Option(help="a file holding an auditor API key")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the JSON Lines file to write")],
    ca_file: Annotated[
        Path | None, typer.Option(help="CA bundle that signed the gateway's certificate")
    ] = None,
) -> None:
    """Download the gateway's whole audit log (with the checkpoints that cover it) as an auditor."""
    import httpx

    try:
        key = api_key_file.read_text(encoding="utf-8").strip()
        verify: str | bool = str(ca_file) if ca_file is not None else True
        headers = {"authorization": f"Bearer {key}"}
        with httpx.stream(
            "GET", url.rstrip("/") + "/v1/audit/export", headers=headers, verify=verify, timeout=300
        ) as response:
            if response.status_code != 200:
                errors.print(f"[red]the gateway answered {response.status_code}[/red]")
                raise typer.Exit(1)
            tmp = out.with_name(out.name + ".tmp")
            with tmp.open("wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
            tmp.replace(out)
    except (httpx.HTTPError, OSError) as exc:
        errors.print(f"[red]cannot fetch the audit log:[/red] {type(exc).__name__}")
        raise typer.Exit(1) from None
    console.print(f"wrote {out}")


@audit_app.command("keygen")
def keygen(
    name: Annotated[str, typer.Option(help="the key name, which is also the checkpoints' origin")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the private key (mode 0600)")],
) -> None:
    """Create an audit signing key; prints the verifier key to give auditors and connectors."""
    import os

    from audit.checkpoint import NoteSigner
    from audit.errors import CheckpointError

    if out.exists():
        errors.print(f"[red]refusing to overwrite[/red] {out}")
        raise typer.Exit(2)
    try:
        signer = NoteSigner.generate(name)
    except CheckpointError as exc:
        errors.print(f"[red]bad key name:[/red] {exc}")
        raise typer.Exit(2) from None
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(signer.skey() + "\n")
    typer.echo(signer.vkey)


@audit_app.command("checkpoint")
def checkpoint(
    db: DbOption,
    signing_key: Annotated[Path, typer.Option(help="the audit key file (PRIVATE+KEY+...)")],
) -> None:
    """Sign and store a checkpoint of the current head now."""
    from audit.checkpoint import Checkpointer, load_signer
    from audit.errors import AuditError

    log = _open_log(db)
    try:
        cp = Checkpointer(log, load_signer(signing_key)).checkpoint()
    except (AuditError, OSError) as exc:
        errors.print(f"[red]cannot sign a checkpoint:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(cp.note, nl=False)  # verbatim: a wrapped signature line would not verify


@audit_app.command("rotate")
def rotate(
    db: DbOption,
    old_key: Annotated[Path, typer.Option("--old-key", help="the current audit key file (PRIVATE+KEY+...)")],
    new_key: Annotated[Path, typer.Option("--new-key", help="the new audit key file (fedgate audit keygen)")],
    actor: Annotated[str, typer.Option(help="who rotates, for the entry")] = "operator",
    reason: Annotated[str | None, typer.Option(help="why, for the entry")] = None,
) -> None:
    """Rotate the audit key: the rotation is an entry signed by both keys; then restart the gateway with
    FEDGATE_AUDIT_KEY_FILE pointing at the new key and give connectors and auditors its verifier key."""
    from audit.checkpoint import Checkpointer, load_signer, rotate_key
    from audit.errors import AuditError

    log = _open_log(db)
    try:
        new = load_signer(new_key)
        entry = rotate_key(Checkpointer(log, load_signer(old_key)), new, actor=actor, reason=reason)
    except (AuditError, OSError, ValueError) as exc:
        errors.print(f"[red]cannot rotate the audit key:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"rotation logged as entry {entry.seq}; the new verifier key is:")
    typer.echo(new.vkey)
