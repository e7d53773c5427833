"""What every `fedgate` command talking to a gateway shares: the URL and key options, the consoles, the
output language, and how a gateway error is printed (code, status, message, field) before exiting with
status 1.

The language is `fedgate --lang zh|en`, else FEDGATE_LANG, else LANG, else Chinese (zh-CN); `say(key)`
is the command line's message `cli.<key>` in it, `lang()` the language itself (for headers and charts).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from gateway.i18n import Lang, negotiate, translate

console = Console()
errors = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="FEDGATE_URL", help="the gateway's base URL")]
KeyOpt = Annotated[str, typer.Option("--api-key", envvar="FEDGATE_API_KEY", help="your API key")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

LANG_ENV = "FEDGATE_LANG"
LangOpt = Annotated[
    str | None,
    typer.Option(
        "--lang",
        metavar="zh|en",
        help="language of the output (default: FEDGATE_LANG, LANG, else zh) / 输出语言",
        show_default=False,
    ),
]

T = TypeVar("T")
_chosen: list[Lang] = []


def set_lang(value: str | None) -> Lang:
    """Fix the output language for this command: the option, else FEDGATE_LANG, else LANG."""
    given = value or os.environ.get(LANG_ENV) or os.environ.get("LANG") or ""
    chosen = negotiate(given.replace("_", "-").split(".")[0])
    _chosen[:] = [chosen]
    return chosen


def lang() -> Lang:
    """The output language (set by `fedgate --lang`, or read from the environment)."""
    return _chosen[0] if _chosen else set_lang(None)


def say(key: str, /, **params: object) -> str:
    """The command line's message `cli.<key>` in the output language."""
    return translate(f"cli.{key}", lang(), **params)


def call_gateway(fn: Callable[[], T]) -> T:
    """Run one client call; a gateway error is printed as the gateway worded it and exits 1."""
    import httpx

    from gateway.client import GatewayError

    try:
        return fn()
    except httpx.TransportError as exc:
        reason = say("unreachable", kind=type(exc).__name__)
        errors.print(f"[red]unreachable[/red]: {reason}", highlight=False)
        raise typer.Exit(1) from None
    except GatewayError as exc:
        errors.print(
            f"[red]{exc.code}[/red] ({exc.status}): {exc.message}"
            + (f" [field {exc.field}]" if exc.field else ""),
            highlight=False,
        )
        raise typer.Exit(1) from None
