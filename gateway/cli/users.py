"""`fedgate users`: create, revoke and list the principals that may call the gateway.

A new key is printed once, alone on standard output (so it can be captured by a script); everything
else goes to standard error. Only the key's hash is stored, so a lost key is replaced, never recovered.
Each command applies the database migrations first, so it works on a fresh state directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["users_app"]

ROLE_NAMES = ("operator", "department_admin", "analyst", "auditor")

users_app = typer.Typer(
    help="Create, revoke and list principals and their API keys.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FEDGATE_DATABASE_URL",
        help="SQLAlchemy URL of the gateway database (default: SQLite under FEDGATE_STATE_DIR)",
        show_default=False,
    ),
]


def _engine(database_url: str | None) -> sa.Engine:
    from gateway.db import make_engine, migrate
    from gateway.settings import GatewaySettings, get_settings

    settings = GatewaySettings(database_url=database_url) if database_url else get_settings()
    engine = make_engine(settings.database_url_resolved())
    migrate(engine)
    return engine


def _fail(message: str) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=1)


@users_app.command("create")
def create(
    role: Annotated[str, typer.Option("--role", help=f"one of: {', '.join(ROLE_NAMES)}")],
    name: Annotated[str, typer.Option("--name", help="unique name: lower-case letters, digits, _.@-")],
    department: Annotated[
        str | None, typer.Option("--department", help="required for, and only for, department_admin")
    ] = None,
    expires: Annotated[int, typer.Option("--expires", min=1, help="days until the key expires")] = 90,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a principal and print its API key, once."""
    from rich.console import Console

    from audit.store import AuditLog
    from gateway.audit_trail import AuditTrail
    from gateway.auth import create_principal
    from gateway.errors import AuditUnavailable, GatewayError

    engine = _engine(database_url)
    try:
        # The principal and its audit entry commit together, or neither does.
        principal, key = create_principal(
            engine,
            role=role,
            name=name,
            department=department,
            expires_days=expires,
            trail=AuditTrail(AuditLog(engine)),
            actor="operator (fedgate users)",
        )
    except AuditUnavailable:
        raise _fail("the audit log cannot be written; no principal was created") from None
    except GatewayError as exc:
        raise _fail(exc.message) from None
    finally:
        engine.dispose()
    err = Console(stderr=True, highlight=False)
    scope = f" for department {principal.department}" if principal.department else ""
    err.print(
        f"created {principal.role} [bold]{principal.name}[/bold]{scope}, "
        f"expires {principal.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    err.print(
        "[yellow]This key is shown only now: the gateway stores only its SHA-256 hash. "
        "Keep it in a secret store; if it is lost, revoke the principal and create a new one.[/yellow]"
    )
    typer.echo(key)


@users_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="the principal whose key stops working now")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a principal's API key immediately."""
    from rich.console import Console

    from audit.store import AuditLog
    from gateway.audit_trail import AuditTrail
    from gateway.auth import revoke_principal
    from gateway.errors import AuditUnavailable, GatewayError

    engine = _engine(database_url)
    try:
        record = revoke_principal(
            engine, name, trail=AuditTrail(AuditLog(engine)), actor="operator (fedgate users)"
        )
    except AuditUnavailable:
        raise _fail("the audit log cannot be written; the key was not revoked") from None
    except GatewayError as exc:
        raise _fail(exc.message) from None
    finally:
        engine.dispose()
    assert record.revoked_at is not None
    Console(stderr=True, highlight=False).print(
        f"revoked {record.name} (key {record.key_prefix}…) at {record.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
    )


@users_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List principals with their role, key prefix and status; keys themselves are never shown."""
    import json

    from rich.console import Console
    from rich.table import Table

    from gateway.auth import list_principals
    from gateway.db import utcnow

    engine = _engine(database_url)
    try:
        records = list_principals(engine)
    finally:
        engine.dispose()
    now = utcnow()
    if as_json:
        rows = [
            {
                "name": r.name,
                "role": r.role.value,
                "department": r.department,
                "key_prefix": r.key_prefix,
                "created_at": r.created_at.isoformat(),
                "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                "status": r.status(now),
            }
            for r in records
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="principals")
    for column in ("name", "role", "department", "key prefix", "created (UTC)", "expires (UTC)", "status"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            r.name,
            r.role.value,
            r.department or "",
            r.key_prefix + "…",
            f"{r.created_at:%Y-%m-%d}",
            f"{r.expires_at:%Y-%m-%d}" if r.expires_at else "",
            r.status(now),
        )
    Console(highlight=False).print(table)
