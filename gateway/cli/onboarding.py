"""Onboarding a department without code: the allow-list, registration, the catalog, rules, batch approval.

    fedgate endpoints allow|list|remove URL          the operator's allow-list of connector endpoints
    fedgate connectors register|list|disable|enable  a department admin registers its connector under the
                                                     fingerprint confirmed out of band; the operator
                                                     disables and enables
    fedgate catalog                                  datasets, measures with bounds, dimensions (no counts)
    fedgate rules sign|list|revoke                   pre-approval rules signed with the department's key
    fedgate approve --pending                        (in gateway/cli/main.py) every query waiting for your
                                                     department, shown and then signed in one batch

Every command talks to the gateway's HTTP API through `GatewayClient`; signing happens here, on the
admin's machine, with the department's own key (the gateway never holds it). Help texts carry Chinese
beside English: department staff read them.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli.common import JsonOpt, KeyOpt, UrlOpt, call_gateway, console, errors

endpoints_app = typer.Typer(
    help="The operator's allow-list of connector endpoints. 连接器地址白名单（运维）。", no_args_is_help=True
)
connectors_app = typer.Typer(help="Register and manage connectors. 注册和管理连接器。", no_args_is_help=True)
rules_app = typer.Typer(
    help="Pre-approval rules signed with your department's key. 部门预授权规则。", no_args_is_help=True
)

ApprovalKeyOpt = Annotated[
    Path, typer.Option("--key", help="your department's approval private key (PEM) / 部门审批私钥")
]


def _client(url: str, key: str) -> Any:
    from gateway.client import GatewayClient

    return GatewayClient(url, key)


def _dump(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


# --- endpoints --------------------------------------------------------------------------------------------


@endpoints_app.command("allow")
def endpoints_allow(
    endpoint: Annotated[str, typer.Argument(help="the connector's base URL / 连接器地址")],
    url: UrlOpt,
    api_key: KeyOpt,
) -> None:
    """Put a connector endpoint on the allow-list (operator). 将连接器地址加入白名单。"""
    with _client(url, api_key) as gw:
        listed = call_gateway(lambda: gw.allow_endpoint(endpoint))["endpoints"]
    console.print(f"allowed {endpoint}; {len(listed)} endpoints on the allow-list", highlight=False)


@endpoints_app.command("list")
def endpoints_list(url: UrlOpt, api_key: KeyOpt, as_json: JsonOpt = False) -> None:
    """The allow-list (operator). 查看白名单。"""
    with _client(url, api_key) as gw:
        listed = call_gateway(gw.endpoints)
    if as_json:
        _dump(listed)
        return
    for endpoint in listed:
        typer.echo(endpoint)


@endpoints_app.command("remove")
def endpoints_remove(
    endpoint: Annotated[str, typer.Argument(help="the connector's base URL / 连接器地址")],
    url: UrlOpt,
    api_key: KeyOpt,
) -> None:
    """Take an endpoint off the allow-list (operator; audited). 从白名单移除（记入审计日志）。"""
    with _client(url, api_key) as gw:
        call_gateway(lambda: gw.remove_endpoint(endpoint))
    console.print(f"removed {endpoint} from the allow-list", highlight=False)


# --- connectors -------------------------------------------------------------------------------------------


def _connector_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="connectors / 连接器")
    for col in ("name", "department", "endpoint", "version", "enabled", "key_fingerprint"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            r["department"],
            r["endpoint"],
            str(r["version"]),
            str(r["enabled"]),
            r["key_fingerprint"],
        )
    return table


@connectors_app.command("register")
def connectors_register(
    name: Annotated[str, typer.Argument(help="the connector's id / 连接器名称")],
    endpoint: Annotated[str, typer.Option("--endpoint", help="its allowed base URL / 连接器地址")],
    key_fingerprint: Annotated[
        str,
        typer.Option(
            "--fingerprint",
            help="the connector key's fingerprint, confirmed out of band / 线下核对的密钥指纹",
        ),
    ],
    url: UrlOpt,
    api_key: KeyOpt,
    as_json: JsonOpt = False,
) -> None:
    """Register your department's connector under its pinned key (department admin).

    以线下核对的密钥指纹注册本部门的连接器（部门管理员）。若指纹不符，会显示连接器实际出示的指纹。"""
    from gateway.client import GatewayError

    with _client(url, api_key) as gw:
        call_gateway(gw.me)  # an unreachable gateway or a bad key is reported as everywhere else
        try:
            record = gw.register_connector(name, endpoint, key_fingerprint)
        except GatewayError as exc:
            errors.print(f"[red]{exc.code}[/red] ({exc.status}): {exc.message}", highlight=False)
            if "presents key fingerprint" in exc.message:
                errors.print(
                    "the fingerprint does not match: do not register until the department confirms the one "
                    "the connector presents / 指纹不符：请先与部门核对连接器出示的指纹",
                    highlight=False,
                )
            raise typer.Exit(1) from None
    if as_json:
        _dump(record)
        return
    console.print(_connector_table([record]))


@connectors_app.command("list")
def connectors_list(url: UrlOpt, api_key: KeyOpt, as_json: JsonOpt = False) -> None:
    """Registered connectors. 已注册的连接器。"""
    with _client(url, api_key) as gw:
        rows = call_gateway(gw.connectors)
    if as_json:
        _dump(rows)
        return
    console.print(_connector_table(rows))


@connectors_app.command("disable")
def connectors_disable(name: str, url: UrlOpt, api_key: KeyOpt) -> None:
    """Disable a connector: no query plans or runs against it (operator). 停用连接器（运维）。"""
    with _client(url, api_key) as gw:
        call_gateway(lambda: gw.set_connector_enabled(name, False))
    console.print(f"connector {name} disabled", highlight=False)


@connectors_app.command("enable")
def connectors_enable(name: str, url: UrlOpt, api_key: KeyOpt) -> None:
    """Enable a connector again (operator). 重新启用连接器（运维）。"""
    with _client(url, api_key) as gw:
        call_gateway(lambda: gw.set_connector_enabled(name, True))
    console.print(f"connector {name} enabled", highlight=False)


# --- catalog ----------------------------------------------------------------------------------------------


def catalog(url: UrlOpt, api_key: KeyOpt, as_json: JsonOpt = False) -> None:
    """What can be queried: datasets, measures with public bounds, dimensions (never a count).

    可查询的数据集、指标（含公开上下限）和维度（不含任何计数）。"""
    with _client(url, api_key) as gw:
        doc = call_gateway(gw.catalog)
    if as_json:
        _dump(doc)
        return
    table = Table(title="catalog / 数据目录")
    for col in ("dataset", "entity", "period", "measures (bounds)", "dimensions"):
        table.add_column(col)
    for schema in doc["connectors"]:
        for d in schema["datasets"]:
            measures = ", ".join(
                f"{m['name']} [{m['lower']}, {m['upper']}] {m['unit']}" for m in d["measures"]
            )
            dims = ", ".join(f"{x['name']} ({len(x['domain'])} codes)" for x in d["dimensions"])
            table.add_row(
                f"{schema['connector']}.{d['name']}",
                d["entity_kind"],
                d["period_grain"] or "-",
                measures,
                dims,
            )
    console.print(table)
    for note in doc.get("notes", []):
        console.print(f"[dim]{note}[/dim]")


# --- rules ------------------------------------------------------------------------------------------------


def _own_datasets(doc: dict[str, Any], department: str) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for s in doc["connectors"] if s["department"] == department for d in s["datasets"]}


@rules_app.command("sign")
def rules_sign(
    rule_id: Annotated[str, typer.Argument(help="the rule's id / 规则编号")],
    key: ApprovalKeyOpt,
    url: UrlOpt,
    api_key: KeyOpt,
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", help="a dataset it covers (default: all of yours) / 覆盖的数据集"),
    ] = None,
    unit: Annotated[
        list[str] | None, typer.Option("--unit", help="person | household (default: both) / 统计单位")
    ] = None,
    max_epsilon: Annotated[
        Decimal | None, typer.Option("--max-epsilon", help="per query (default: your cap) / 单次上限")
    ] = None,
    analyst: Annotated[
        list[str] | None, typer.Option("--analyst", help='who may use it (default "*") / 分析人员')
    ] = None,
    household_only: Annotated[
        bool, typer.Option(help="only household-level dimensions / 仅户级维度")
    ] = False,
    expires_days: Annotated[
        int | None, typer.Option(min=1, help="void after this many days / 有效天数")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="sign without asking / 不再确认")] = False,
) -> None:
    """Sign a pre-approval rule with your department's key and register it (department admin).

    用本部门审批私钥签署预授权规则并登记（部门管理员）。签署前显示其覆盖范围。"""
    from connectors.protocol import ApprovedDataset

    with _client(url, api_key) as gw:
        department = call_gateway(gw.me)["department"]
        if not department:
            errors.print("[red]forbidden[/red]: only a department admin signs rules / 仅部门管理员可签署")
            raise typer.Exit(1)
        own = _own_datasets(call_gateway(gw.catalog), department)
        names = dataset or sorted(own)
        unknown = [n for n in names if n not in own]
        if unknown or not names:
            errors.print(
                f"[red]invalid_request[/red]: your department has no dataset {', '.join(unknown) or '(none)'}"
                f"; yours: {', '.join(sorted(own)) or '(none registered)'} [field --dataset]",
                highlight=False,
            )
            raise typer.Exit(1)
        scopes = [
            ApprovedDataset(
                dataset=n,
                measures=tuple(m["name"] for m in own[n]["measures"]),
                dimensions=tuple(
                    x["name"] for x in own[n]["dimensions"] if x["household_level"] or not household_only
                ),
            )
            for n in names
        ]
        units = tuple(unit or ("household", "person"))
        epsilon = max_epsilon if max_epsilon is not None else _department_cap(gw, department)
        table = Table(title=f"rule {rule_id} of {department} / 预授权规则", show_header=False)
        for s in scopes:
            table.add_row(
                s.dataset, "measures: " + ", ".join(s.measures), "dimensions: " + ", ".join(s.dimensions)
            )
        table.add_row("units", ", ".join(units), "")
        table.add_row("max epsilon per query", str(epsilon), "")
        table.add_row("analysts", ", ".join(analyst or ["*"]), "")
        console.print(table)
        if not yes and not typer.confirm("sign and register it? / 确认签署并登记？"):
            raise typer.Exit(1)
        expires_at = int(time.time()) + expires_days * 86_400 if expires_days else None
        out = call_gateway(
            lambda: gw.register_rule(
                key.read_bytes(),
                department=department,
                rule_id=rule_id,
                datasets=scopes,
                units=units,
                max_epsilon_per_query=epsilon,
                analysts=tuple(analyst or ("*",)),
                expires_at=expires_at,
            )
        )
    console.print(f"rule {out['rule_id']} registered for {out['department']}", highlight=False)


def _department_cap(gw: Any, department: str) -> Decimal:
    caps = [
        Decimal(str(s["policy"]["max_epsilon_per_query"]))
        for s in call_gateway(gw.catalog)["connectors"]
        if s["department"] == department
    ]
    return min(caps)


@rules_app.command("list")
def rules_list(url: UrlOpt, api_key: KeyOpt, as_json: JsonOpt = False) -> None:
    """Registered rules (a department admin sees its own). 已登记的规则。"""
    with _client(url, api_key) as gw:
        rows = call_gateway(gw.rules)
    if as_json:
        _dump(rows)
        return
    table = Table(title="pre-approval rules / 预授权规则")
    for col in ("rule", "department", "datasets", "units", "max ε", "analysts"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["rule_id"],
            r["department"],
            ", ".join(d["dataset"] for d in r["datasets"]),
            ", ".join(r["units"]),
            str(r["max_epsilon_per_query"]),
            ", ".join(r["analysts"]),
        )
    console.print(table)


@rules_app.command("revoke")
def rules_revoke(rule_id: str, url: UrlOpt, api_key: KeyOpt) -> None:
    """Revoke one of your department's rules (audited). 撤销本部门的规则（记入审计日志）。"""
    with _client(url, api_key) as gw:
        call_gateway(lambda: gw.revoke_rule(rule_id))
    console.print(f"rule {rule_id} revoked", highlight=False)


# --- batch approval ---------------------------------------------------------------------------------------


def waiting_for(views: list[dict[str, Any]], department: str, match: str | None) -> list[dict[str, Any]]:
    """Queries that still wait for `department`'s approval (and whose purpose contains `match`)."""
    out = []
    for v in views:
        decided = {d["department"] for d in v.get("decisions", [])}
        if v["state"] != "submitted" or department not in v.get("required_approvals", {}):
            continue
        if department in v.get("covered_by", {}) or department in decided:
            continue
        if match is not None and match not in v["spec"]["purpose"]:
            continue
        out.append(v)
    return out


def approve_batch(
    gw: Any, key_pem: bytes, department: str, views: list[dict[str, Any]], *, yes: bool
) -> list[dict[str, Any]]:
    """Show what the batch covers, ask, then sign one approval per query with the department's key."""
    if not views:
        console.print("nothing waits for your approval / 没有待审批的查询")
        return []
    table = Table(title=f"{len(views)} queries waiting for {department} / 待审批查询")
    for col in ("query", "unit", "period", "ε", "datasets and fields", "purpose"):
        table.add_column(col)
    total = Decimal(0)
    for v in views:
        spec = v["spec"]
        total += Decimal(str(spec["epsilon"]))
        scopes = "; ".join(
            f"{s['dataset']}: {', '.join([*s['measures'], *s['dimensions']]) or '(presence only)'}"
            for s in v["required_approvals"][department]
        )
        period = f"{spec.get('period_start') or '-'}..{spec.get('period_end') or '-'}"
        table.add_row(v["id"], spec["unit"], period, str(spec["epsilon"]), scopes, spec["purpose"])
    console.print(table)
    console.print(f"total epsilon of the batch / 合计 ε: {total}", highlight=False)
    if not yes and not typer.confirm("sign an approval for every query above? / 确认全部签署？"):
        raise typer.Exit(1)

    def sign(query_id: str) -> dict[str, Any]:
        return call_gateway(lambda: gw.approve(query_id, key_pem, department))

    return [sign(v["id"]) for v in views]
