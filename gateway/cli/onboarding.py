"""Onboarding a department without code: the allow-list, registration, the catalog, rules, batch approval.

    fedgate endpoints allow|list|remove URL          the operator's allow-list of connector endpoints
    fedgate connectors register|list|disable|enable  a department admin registers its connector under the
                                                     fingerprint confirmed out of band; the operator
                                                     disables and enables
    fedgate catalog                                  datasets, measures with bounds, dimensions (no counts)
    fedgate rules sign|list|revoke                   pre-approval rules signed with the department's key
    fedgate approve [QUERY | --pending]              (in gateway/cli/main.py) one query, or every query
                                                     waiting for your department: each planned again
                                                     against your own connectors' schemas, shown, and
                                                     signed as planned (refused if the gateway reports more)

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
        list[str] | None,
        typer.Option(
            "--analyst",
            help="an analyst's key fingerprint (`fedgate analysts list`; confirm it with the analyst), or "
            '"*" for every analyst (the default; connectors refuse it unless they accept such rules) '
            "/ 分析人员密钥指纹",
        ),
    ] = None,
    household_only: Annotated[
        bool, typer.Option(help="only household-level dimensions / 仅户级维度")
    ] = False,
    expires_days: Annotated[
        int | None, typer.Option(min=1, help="void after this many days / 有效天数")
    ] = None,
    max_queries: Annotated[
        int,
        typer.Option(
            "--max-queries", min=1, help="queries the rule opens per budget window / 每个预算周期最多查询次数"
        ),
    ] = 0,
    window_epsilon: Annotated[
        Decimal | None,
        typer.Option(
            "--window-epsilon",
            help="epsilon the rule opens per window (default: your window cap) / 周期 ε 上限",
        ),
    ] = None,
    analyst_max_queries: Annotated[
        int | None,
        typer.Option(
            "--analyst-max-queries", min=1, help="with --analyst: per analyst and window / 每人次数"
        ),
    ] = None,
    analyst_window_epsilon: Annotated[
        Decimal | None,
        typer.Option("--analyst-window-epsilon", help="with --analyst: per analyst and window / 每人 ε 上限"),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="sign without asking / 不再确认")] = False,
) -> None:
    """Sign a pre-approval rule with your department's key and register it (department admin).

    A rule opens at most --max-queries queries and --window-epsilon per budget window (your connector
    counts them); a rule naming analysts also states --analyst-max-queries (and --analyst-window-epsilon)
    for each of them. The register's household mapping is covered only by a rule over the register.

    用本部门审批私钥签署预授权规则并登记（部门管理员）。签署前显示其覆盖范围；
    连接器按预算周期统计次数和 ε。"""
    from connectors.protocol import ApprovedDataset, WindowLimits

    if max_queries < 1 or (analyst and analyst_max_queries is None):
        errors.print(
            "[red]invalid_request[/red]: a rule states how many queries it opens per budget window "
            "(--max-queries N), and with --analyst how many per analyst (--analyst-max-queries N) "
            "/ 需指定每周期最多查询次数 [field --max-queries]",
            highlight=False,
        )
        raise typer.Exit(2)

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
                household=own[n]["household_mapping"],
            )
            for n in names
        ]
        units = tuple(unit or ("household", "person"))
        epsilon = max_epsilon if max_epsilon is not None else _department_cap(gw, department)
        table = Table(title=f"rule {rule_id} of {department} / 预授权规则", show_header=False)
        window_cap = window_epsilon if window_epsilon is not None else _department_window(gw, department)
        window = WindowLimits(max_queries=max_queries, max_epsilon=window_cap)
        per_analyst = (
            WindowLimits(
                max_queries=analyst_max_queries,
                max_epsilon=analyst_window_epsilon if analyst_window_epsilon is not None else window_cap,
            )
            if analyst and analyst_max_queries is not None
            else None
        )
        for s in scopes:
            table.add_row(
                s.dataset,
                "measures: " + ", ".join(s.measures),
                "dimensions: " + ", ".join(s.dimensions) + ("; household mapping" if s.household else ""),
            )
        table.add_row("units", ", ".join(units), "")
        table.add_row("max epsilon per query", str(epsilon), "")
        table.add_row(
            "per window / 每周期", f"{window.max_queries} queries, epsilon {window.max_epsilon}", ""
        )
        if per_analyst is not None:
            table.add_row(
                "per analyst and window",
                f"{per_analyst.max_queries} queries, epsilon {per_analyst.max_epsilon}",
                "",
            )
        table.add_row("analysts", ", ".join(analyst or ["*"]), "")
        if not analyst or "*" in analyst:
            table.add_row(
                "warning / 注意",
                "every analyst, signed or not: a compromised gateway could invent queries under it; your "
                "connector refuses it unless policy.accept_any_analyst_rules is set (docs/security.md)",
                "",
            )
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
                window=window,
                per_analyst=per_analyst,
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


def _department_window(gw: Any, department: str) -> Decimal:
    caps = [
        Decimal(str(s["policy"]["max_epsilon_per_window"]))
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


def own_schemas(connectors: list[str], admin_key_file: Path | None) -> list[Any]:
    """The department's schemas, from its own connectors with its admin key (never from the gateway)."""
    from gateway.approval_plan import ScopeRefused, own_schema

    if not connectors or admin_key_file is None:
        errors.print(
            "[red]invalid_request[/red]: give your connector(s) with --connector URL and the department "
            "admin key with --connector-admin-key-file: the query is planned against your own schema before "
            "signing / 需指定本部门连接器地址及管理员密钥 [field --connector]",
            highlight=False,
        )
        raise typer.Exit(2)
    admin_key = admin_key_file.read_text(encoding="utf-8").strip()
    try:
        return [own_schema(url, admin_key) for url in connectors]
    except ScopeRefused as exc:
        errors.print(f"[red]forbidden[/red]: {exc.reason}", highlight=False)
        raise typer.Exit(1) from None


def _planned(view: dict[str, Any], department: str, schemas: list[Any], expires_at: int | None) -> Any:
    from gateway.approval_plan import ScopeRefused, planned_approval, reported_scopes
    from gateway.client import QuerySpec

    try:
        return planned_approval(
            QuerySpec.model_validate(view["spec"]),
            department,
            schemas,
            reported_scopes(view, department),
            digest=view.get("digest"),
            expires_at=expires_at,
        )
    except ScopeRefused as exc:
        errors.print(f"[red]not_signed[/red] ({view['id']}): {exc.reason}", highlight=False)
        raise typer.Exit(1) from None


def approve_one(
    gw: Any,
    key_pem: bytes,
    department: str,
    view: dict[str, Any],
    schemas: list[Any],
    *,
    yes: bool,
    expires_at: int | None = None,
) -> dict[str, Any]:
    """Plan one query against the department's own schemas, show exactly what is signed, ask, sign it."""
    from gateway.approval_plan import scope_rows

    planned = _planned(view, department, schemas, expires_at)
    table = Table(title=f"approval of {department} / 审批范围", show_header=False)
    for label, value in scope_rows(planned):
        table.add_row(label, value)
    console.print(table)
    if not yes and not typer.confirm("sign exactly this scope? / 确认按此范围签署？"):
        raise typer.Exit(1)
    signed: dict[str, Any] = call_gateway(lambda: gw.sign_planned(planned, key_pem))
    return signed


def approve_batch(
    gw: Any,
    key_pem: bytes,
    department: str,
    views: list[dict[str, Any]],
    schemas: list[Any],
    *,
    yes: bool,
    expires_at: int | None = None,
) -> list[dict[str, Any]]:
    """Plan every query against the department's own schemas, show what the batch covers, ask, then sign
    one approval per query; one query whose reported scope is wider than its plan stops the whole batch
    before anything is signed."""
    if not views:
        console.print("nothing waits for your approval / 没有待审批的查询")
        return []
    plans = [_planned(v, department, schemas, expires_at) for v in views]
    table = Table(title=f"{len(views)} queries waiting for {department} / 待审批查询")
    for col in ("query", "unit", "period", "ε", "datasets and fields (planned here)", "purpose"):
        table.add_column(col)
    total = Decimal(0)
    for planned in plans:
        a = planned.approval
        total += a.epsilon
        scopes = "; ".join(
            f"{s.dataset}: "
            + (
                ", ".join([*s.measures, *s.dimensions, *(["household mapping"] if s.household else [])])
                or "(presence only)"
            )
            for s in a.datasets
        )
        table.add_row(
            a.query_id,
            a.unit.value,
            f"{a.period_start}..{a.period_end}",
            str(a.epsilon),
            scopes,
            planned.purpose,
        )
    console.print(table)
    console.print(f"total epsilon of the batch / 合计 ε: {total}", highlight=False)
    if not yes and not typer.confirm("sign an approval for every query above? / 确认全部签署？"):
        raise typer.Exit(1)

    def sign(planned: Any) -> dict[str, Any]:
        out: dict[str, Any] = call_gateway(lambda: gw.sign_planned(planned, key_pem))
        return out

    return [sign(p) for p in plans]
