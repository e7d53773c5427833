"""What every `fedgate` command talking to a gateway shares: the URL and key options, the consoles, and
how a gateway error is printed (code, status, message, field) before exiting with status 1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

console = Console()
errors = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="FEDGATE_URL", help="the gateway's base URL")]
KeyOpt = Annotated[str, typer.Option("--api-key", envvar="FEDGATE_API_KEY", help="your API key")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

T = TypeVar("T")


def call_gateway(fn: Callable[[], T]) -> T:
    """Run one client call; a gateway error is printed as the gateway worded it and exits 1."""
    import httpx

    from gateway.client import GatewayError

    try:
        return fn()
    except httpx.TransportError as exc:
        errors.print(
            f"[red]unreachable[/red]: cannot reach the gateway ({type(exc).__name__}); check --url / "
            "FEDGATE_URL and that the gateway is running / 无法连接网关",
            highlight=False,
        )
        raise typer.Exit(1) from None
    except GatewayError as exc:
        errors.print(
            f"[red]{exc.code}[/red] ({exc.status}): {exc.message}"
            + (f" [field {exc.field}]" if exc.field else ""),
            highlight=False,
        )
        raise typer.Exit(1) from None
