"""`fedgate analysts`: an analyst's own signing key, and its registration by the operator.

    fedgate analysts keygen --out analyst.key        on the analyst's machine: prints the public key
    fedgate analysts register NAME --public-key K    the operator pins it at the gateway (audited)
    fedgate analysts list                            registered keys (departments name them in rules)
    fedgate analysts revoke FINGERPRINT              the operator revokes one

`fedgate query submit` signs with the key in FEDGATE_ANALYST_KEY_FILE (or --analyst-key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gateway.cli.common import JsonOpt, KeyOpt, UrlOpt, call_gateway, console, errors

analysts_app = typer.Typer(help="Analysts' own signing keys / 分析人员签名密钥", no_args_is_help=True)

AnalystKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--analyst-key",
        envvar="FEDGATE_ANALYST_KEY_FILE",
        help="your own private key (`fedgate analysts keygen`): queries are signed with it / 本人签名私钥",
    ),
]


@analysts_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="where to write the private key (PEM) / 私钥文件")],
    as_json: JsonOpt = False,
) -> None:
    """Make your own Ed25519 key on this machine; give the printed public key to the operator, and its
    fingerprint to the departments whose rules should name you.

    在本机生成本人的签名密钥；将显示的公钥交给运维人员登记。"""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from connectors.protocol import fingerprint, private_key_pem, public_key_text

    if out.exists():
        errors.print(f"[red]refused[/red]: {out} exists; choose another --out / 文件已存在", highlight=False)
        raise typer.Exit(1)
    key = Ed25519PrivateKey.generate()
    out.write_bytes(private_key_pem(key))
    out.chmod(0o600)
    doc = {
        "file": str(out),
        "public_key": public_key_text(key.public_key()),
        "fingerprint": fingerprint(key.public_key()),
    }
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    console.print(f"private key / 私钥: {doc['file']}", highlight=False)
    console.print(f"public key / 公钥 (for the operator): {doc['public_key']}", highlight=False)
    console.print(f"fingerprint / 指纹 (for the departments' rules): {doc['fingerprint']}", highlight=False)


@analysts_app.command("register")
def register(
    analyst: Annotated[str, typer.Argument(help="the analyst's user name / 分析人员用户名")],
    public_key: Annotated[str, typer.Option("--public-key", help="ed25519:BASE64 / 公钥")],
    url: UrlOpt,
    api_key: KeyOpt,
    as_json: JsonOpt = False,
) -> None:
    """Pin an analyst's public key at the gateway (operator; audited). 登记分析人员公钥（运维）。"""
    from gateway.client import GatewayClient

    with GatewayClient(url, api_key) as gw:
        doc = call_gateway(lambda: gw.register_analyst_key(analyst, public_key))
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    console.print(f"registered {doc['fingerprint']} for {doc['analyst']}", highlight=False)


@analysts_app.command("list")
def list_keys(url: UrlOpt, api_key: KeyOpt, as_json: JsonOpt = False) -> None:
    """Registered analyst keys: a department names them by fingerprint in its rules. 已登记的公钥。"""
    from gateway.client import GatewayClient

    with GatewayClient(url, api_key) as gw:
        keys = call_gateway(gw.analyst_keys)
    if as_json:
        typer.echo(json.dumps(keys, indent=2))
        return
    table = Table("analyst", "fingerprint", "registered", "revoked")
    for k in keys:
        table.add_row(k["analyst"], k["fingerprint"], k["registered_at"][:10], (k["revoked_at"] or "")[:10])
    console.print(table)


@analysts_app.command("revoke")
def revoke(
    key_fingerprint: Annotated[str, typer.Argument(help="the key's fingerprint / 指纹")],
    url: UrlOpt,
    api_key: KeyOpt,
) -> None:
    """Revoke an analyst key (operator; audited): it signs no new query. 吊销分析人员公钥。"""
    from gateway.client import GatewayClient

    with GatewayClient(url, api_key) as gw:
        call_gateway(lambda: gw.revoke_analyst_key(key_fingerprint))
    console.print(f"revoked {key_fingerprint}", highlight=False)
