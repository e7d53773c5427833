"""`fedgate connector init`: reflect a department's table, propose a configuration, check it.

The proposal (`connectors.propose`) is written to a local YAML file for the department admin to edit,
with notes on what to review as comments at its top; the command then runs the same dry run as
`fedgate connector check` on it. Imports are deferred into the command, so the main CLI loads
neither the service nor the keyring.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(stderr=True)


def init(
    url: Annotated[
        str,
        typer.Option(
            "--url", help="SQLAlchemy URL, or a directory of CSV/Parquet files / 数据库地址或文件目录"
        ),
    ],
    table: Annotated[str, typer.Option("--table", help="the table (or file name) to read / 表名或文件名")],
    name: Annotated[str, typer.Option("--name", help="the connector's id in the federation / 连接器名称")],
    department: Annotated[str, typer.Option("--department", help="your department's id / 部门名称")],
    signing_key: Annotated[
        Path, typer.Option("--signing-key", help="the connector key file (fedgate keys new --kind connector)")
    ],
    keyring: Annotated[Path, typer.Option("--keyring", help="the federation keyring file / 联邦密钥环")],
    approval_public_key: Annotated[
        str,
        typer.Option("--approval-public-key", help="your department's approval key, ed25519:… / 审批公钥"),
    ],
    gateway_public_key: Annotated[
        list[str], typer.Option("--gateway-public-key", help="the gateway's key, ed25519:… / 网关公钥")
    ],
    admin_key_sha256: Annotated[
        str, typer.Option("--admin-key-sha256", help="from fedgate admin-key new / 管理员密钥哈希")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="the configuration file to write / 配置文件")],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="the dataset's name (default: from the table) / 数据集名称"),
    ] = None,
    port: Annotated[int, typer.Option(help="listen port / 监听端口")] = 8801,
    max_epsilon_per_query: Annotated[
        Decimal, typer.Option(help="your cap per query / 单次查询上限")
    ] = Decimal(1),
    max_epsilon_per_window: Annotated[
        Decimal, typer.Option(help="your cap per calendar year / 年度隐私预算上限")
    ] = Decimal(10),
    audit_public_key: Annotated[
        list[str] | None,
        typer.Option("--audit-public-key", help="the gateway's audit verifier key / 审计公钥"),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="the https URL the gateway calls (your TLS proxy) / 网关访问本连接器的 https 地址"),
    ] = None,
    unsafe_development: Annotated[
        bool,
        typer.Option(help="loopback development only: no https public URL / 仅限本机开发"),
    ] = False,
    end: Annotated[
        str | None,
        typer.Option(
            help="the check's last trial month YYYY-MM (default: last complete month) / 试算的最后一个月"
        ),
    ] = None,
) -> None:
    """Reflect a table, propose a configuration for you to edit, and check it.

    读取数据表结构，生成配置草案供您修改，并立即检查。"""
    import yaml

    from connectors.cli import check
    from connectors.errors import ConnectorError
    from connectors.propose import measure_name, propose, reflect_file, reflect_sql

    if out.exists():
        console.print(f"[red]refusing to overwrite[/red] {out} / 文件已存在，不会覆盖", highlight=False)
        raise typer.Exit(2)
    files = Path(url).is_dir()
    try:
        columns = reflect_file(Path(url), table) if files else reflect_sql(url, table)
    except ConnectorError as exc:
        console.print(f"[red]cannot read the table / 无法读取数据表:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    stem = table.rsplit(".", 1)[0] if files else table
    proposal = propose(dataset or measure_name(stem), {"file" if files else "table": table}, columns)
    base = out.resolve().parent
    source: dict[str, Any] = {"url": str(Path(url).resolve()), "kind": "files"} if files else {"url": url}
    policy: dict[str, Any] = {
        "allowed_units": ["person", "household"],
        "max_epsilon_per_query": str(max_epsilon_per_query),
        "max_epsilon_per_window": str(max_epsilon_per_window),
        "gateway_public_keys": list(gateway_public_key),
        "approval_public_key": approval_public_key,
        "admin_key_sha256": admin_key_sha256,
    }
    if audit_public_key:
        policy["audit_public_keys"] = list(audit_public_key)
    config: dict[str, Any] = {
        "name": name,
        "department": department,
        "description": f"{department} connector",
        "source": source,
        "signing_key_file": str(_relative(signing_key, base)),
        "federation_keyring_file": str(_relative(keyring, base)),
        "state_dir": f"state-{name}",
        "listen": {"host": "127.0.0.1", "port": port, **({"public_url": public_url} if public_url else {})},
        "datasets": [proposal.dataset],
        "policy": policy,
    }
    if unsafe_development:
        config["unsafe_development"] = True
    header = "".join(f"# review: {n}\n" for n in proposal.notes)
    out.write_text(
        "# Proposed by `fedgate connector init`; edit, then `fedgate connector check --config` it.\n"
        + header
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    console.print(f"configuration proposed in {out} / 配置草案已写入", highlight=False)
    for note in proposal.notes:
        console.print(f"  review / 请检查: {note}", highlight=False)
    # The same dry run as `fedgate connector check`; it exits non-zero when it finds errors.
    check(config=out, end=end, months=3, as_json=False, schema=False)


def _relative(path: Path, base: Path) -> Path:
    """Paths in a configuration are resolved against its directory: keep them short where possible."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(base)
    except ValueError:
        return resolved
