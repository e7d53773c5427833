"""`fedgate groups`: list, show, add and retire the gateway's named key groups ("X" groups).

    fedgate groups list [--all]              the latest version of every group (retired ones with --all)
    fedgate groups show NAME [--version N]   one group, its definition and who registered it
    fedgate groups add FILE.json             register one group (a JSON object) or several (an array)
    fedgate groups retire NAME               retire a group (operator)

Talks to the gateway's HTTP API (FEDGATE_URL, FEDGATE_API_KEY) like `fedgate query`. A file holds what
`POST /v1/groups` takes: {"definition": {"name": ..., "measure": ..., "at_least": ...}, "title": ...,
"title_zh": ..., "description": ...}.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from gateway.cli.common import JsonOpt, KeyOpt, UrlOpt, call_gateway, console, errors

if TYPE_CHECKING:
    from gateway.api.schemas import KeyGroupIn

__all__ = ["describe_definition", "groups_app"]

groups_app = typer.Typer(
    help="List, show, register and retire named key groups (household.has_<name>).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


T = TypeVar("T")
# Past this many codes a definition's summary shows the first few and the count.
_SHOWN_CODES = 4


def describe_definition(definition: Mapping[str, Any]) -> str:
    """A one-line reading of a MemberGroup definition, e.g. 'no member: tax.wages.wage_income >= 1'."""
    if definition.get("dimension"):
        values = [str(v) for v in definition.get("values") or ()]
        shown = ", ".join(values[:_SHOWN_CODES])
        if len(values) > _SHOWN_CODES:
            shown += f", … ({len(values)} codes)"
        rule = f"{definition['dimension']} in {{{shown}}}"
    else:
        rule = f"{definition.get('measure')} >= {definition.get('at_least')}"
    return ("no member: " if definition.get("negate") else "a member: ") + rule


def _print_group(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(view, indent=2, ensure_ascii=False))
        return
    status = "retired" if view["retired"] else "active"
    table = Table(title=f"key group {view['name']} (version {view['version']}, {status})", show_header=False)
    table.add_row("household attribute", view["household_attribute"])
    table.add_row("title", view["title"])
    table.add_row("title (zh)", view["title_zh"])
    table.add_row("definition", describe_definition(view["definition"]))
    table.add_row("description", view["description"] or "-")
    table.add_row("digest", view["definition_digest"])
    table.add_row("registered", f"{view['created_at']} by {view['created_by']}")
    if view["retired"]:
        table.add_row("retired", f"{view['retired_at']} by {view['retired_by']}")
    console.print(table)


def _client(url: str, key: str) -> Any:
    from gateway.client import GatewayClient

    return GatewayClient(url, key)


@groups_app.command("list")
def list_groups(
    url: UrlOpt,
    api_key: KeyOpt,
    include_retired: Annotated[bool, typer.Option("--all", help="also list retired groups")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The registered key groups, latest version of each."""
    with _client(url, api_key) as gw:
        rows = call_gateway(lambda: gw.list_groups(include_retired=include_retired))
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title="key groups")
    for col in ("name", "version", "status", "title", "title (zh)", "definition"):
        table.add_column(col, justify="right" if col == "version" else "left")
    for g in rows:
        table.add_row(
            g["name"],
            str(g["version"]),
            "retired" if g["retired"] else "active",
            g["title"],
            g["title_zh"],
            describe_definition(g["definition"]),
        )
    console.print(table)
    if not rows:
        console.print("[dim]no key groups registered yet: `fedgate groups add FILE.json`[/dim]")


@groups_app.command("show")
def show(
    name: str,
    url: UrlOpt,
    api_key: KeyOpt,
    version: Annotated[int | None, typer.Option("--version", min=1, help="an older version")] = None,
    as_json: JsonOpt = False,
) -> None:
    """One key group: its definition, titles and history."""
    with _client(url, api_key) as gw:
        _print_group(call_gateway(lambda: gw.group(name, version)), as_json)


def _read_groups(path: Path) -> list[KeyGroupIn]:
    from pydantic import ValidationError

    from gateway.api.schemas import KeyGroupIn

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        errors.print(f"[red]error:[/red] cannot read {path}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    items = doc if isinstance(doc, list) else [doc]
    groups = []
    for i, item in enumerate(items):
        try:
            groups.append(KeyGroupIn.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            prefix = f"[{i}]." if isinstance(doc, list) else ""
            errors.print(
                f"[red]invalid_request[/red]: {path} {prefix}{where}: {first.get('msg')}", highlight=False
            )
            raise typer.Exit(2) from None
    return groups


@groups_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="a key group as JSON (an object, or an array of them)")],
    url: UrlOpt,
    api_key: KeyOpt,
    as_json: JsonOpt = False,
) -> None:
    """Register key groups (operator or department admin); an identical one again changes nothing."""
    groups = _read_groups(file)
    with _client(url, api_key) as gw:
        for group in groups:
            _print_group(call_gateway(functools.partial(gw.register_group, group)), as_json)


@groups_app.command("retire")
def retire(name: str, url: UrlOpt, api_key: KeyOpt, as_json: JsonOpt = False) -> None:
    """Retire a key group (operator): it stays readable; new queries can no longer use it."""
    with _client(url, api_key) as gw:
        _print_group(call_gateway(lambda: gw.retire_group(name)), as_json)
