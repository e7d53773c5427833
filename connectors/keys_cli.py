"""`fedgate keys`, `fedgate keyring` and `fedgate admin-key`: every key a federation needs, made without code.

    keys new --kind connector|approval|gateway --out FILE   Ed25519 private key (PEM, mode 0600); prints
                                                            the `ed25519:` public text and its fingerprint
    keys new --kind audit --name ORIGIN --out FILE          the gateway's audit (signed-note) key; prints
                                                            the verifier key connectors and auditors pin
    keys show FILE                                          the public text and fingerprint of a key file
    keyring new --federation-id ID --out FILE               the federation keyring (connectors only)
    admin-key new                                           a connector admin key and its SHA-256

The key, fingerprint and signing functions are the wire protocol's (`connectors.protocol`) and the audit
log's (`audit.checkpoint`); this module only writes files and prints. Imports are deferred into the
commands, so loading it (as the main CLI does) never loads the federation keyring module. Help texts
are in English and Chinese: department staff read them.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

keys_app = typer.Typer(help="Create and inspect keys. 生成和查看密钥。", no_args_is_help=True)
keyring_app = typer.Typer(
    help="The federation keyring (connectors only). 联邦令牌密钥环（仅供连接器）。", no_args_is_help=True
)
admin_key_app = typer.Typer(help="A connector's admin key. 连接器管理员密钥。", no_args_is_help=True)
errors = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON / 以 JSON 输出")]
OutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="where to write the private key (mode 0600) / 私钥写入的文件")
]


class KeyKind(StrEnum):
    """Who holds a key, which decides what it signs."""

    CONNECTOR = "connector"  # the connector's answers; pinned by fingerprint at registration
    APPROVAL = "approval"  # the department admin's approvals and rules
    GATEWAY = "gateway"  # the gateway's requests to connectors
    AUDIT = "audit"  # the gateway's audit checkpoints (signed notes)


def write_private(out: Path, text: bytes) -> None:
    """Write a secret file that never existed before, readable by its owner only."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(text)


def _refuse_existing(out: Path) -> None:
    if out.exists():
        errors.print(f"[red]refusing to overwrite[/red] {out} / 文件已存在，不会覆盖", highlight=False)
        raise typer.Exit(2)


def _print(values: dict[str, str], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    for key, value in values.items():
        typer.echo(f"{key}: {value}")


@keys_app.callback()
def keys_group() -> None:
    """Create and inspect keys. 生成和查看密钥。"""


@keys_app.command("new")
def keys_new(
    kind: Annotated[KeyKind, typer.Option("--kind", help="whose key / 密钥用途")],
    out: OutOpt,
    name: Annotated[
        str | None,
        typer.Option(help="audit keys: the key name, also the checkpoints' origin / 审计密钥名称"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a private key file (mode 0600) and print what others need of it.

    生成私钥文件（权限 0600），并打印需要交给他人的公钥与指纹。"""
    _refuse_existing(out)
    if kind is KeyKind.AUDIT:
        from audit.checkpoint import NoteSigner
        from audit.errors import CheckpointError

        try:
            signer = NoteSigner.generate(name or "fedgate-audit")
        except CheckpointError as exc:
            errors.print(f"[red]bad key name / 名称无效:[/red] {exc}")
            raise typer.Exit(2) from None
        write_private(out, (signer.skey() + "\n").encode())
        _print({"kind": kind.value, "file": str(out), "verifier_key": signer.vkey}, as_json)
        return
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from connectors.protocol import fingerprint, private_key_pem, public_key_text

    key = Ed25519PrivateKey.generate()
    write_private(out, private_key_pem(key))
    public = key.public_key()
    _print(
        {
            "kind": kind.value,
            "file": str(out),
            "public_key": public_key_text(public),
            "fingerprint": fingerprint(public),
        },
        as_json,
    )


@keys_app.command("show")
def keys_show(
    key_file: Annotated[Path, typer.Argument(help="an Ed25519 private key (PEM) / 私钥文件")],
    as_json: JsonOpt = False,
) -> None:
    """Print the public text and fingerprint of a private key file. 打印私钥文件对应的公钥与指纹。"""
    from connectors.protocol import SignatureError, fingerprint, load_private_key, public_key_text

    try:
        public = load_private_key(key_file.read_bytes()).public_key()
    except OSError as exc:
        errors.print(f"[red]cannot read / 无法读取[/red] {key_file}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from None
    except (ValueError, TypeError, SignatureError):
        errors.print(
            f"[red]not an Ed25519 private key (PEM) / 不是 Ed25519 私钥:[/red] {key_file}", highlight=False
        )
        raise typer.Exit(2) from None
    _print({"public_key": public_key_text(public), "fingerprint": fingerprint(public)}, as_json)


@keyring_app.callback()
def keyring_group() -> None:
    """The federation keyring (connectors only). 联邦令牌密钥环（仅供连接器）。"""


@keyring_app.command("new")
def keyring_new(
    federation_id: Annotated[str, typer.Option("--federation-id", help="the federation's name / 联邦名称")],
    out: OutOpt,
) -> None:
    """Create the federation keyring (mode 0600): give the same file to every connector, never to the
    gateway.

    生成联邦密钥环（权限 0600）：把同一份文件交给每个连接器，绝不交给网关。"""
    from connectors.errors import KeyringError
    from connectors.federation_keys import generate_keyring, write_keyring

    _refuse_existing(out)
    try:
        write_keyring(generate_keyring(federation_id), out)
    except KeyringError as exc:
        errors.print(f"[red]cannot create the keyring / 无法生成:[/red] {exc}")
        raise typer.Exit(2) from None
    typer.echo(f"federation keyring {federation_id!r} written to {out} (epoch 0)")


@admin_key_app.callback()
def admin_key_group() -> None:
    """A connector's admin key. 连接器管理员密钥。"""


@admin_key_app.command("new")
def admin_key_new(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="also write the key to this file (mode 0600) / 写入文件"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a connector admin key: give the key to the department admin, put its SHA-256 in the
    connector's `policy.admin_key_sha256`.

    生成连接器管理员密钥：密钥交给部门管理员，其 SHA-256 写入配置 policy.admin_key_sha256。"""
    import hashlib
    import secrets

    if out is not None:
        _refuse_existing(out)
    key = secrets.token_urlsafe(32)
    if out is not None:
        write_private(out, (key + "\n").encode())
    _print({"admin_key": key, "admin_key_sha256": hashlib.sha256(key.encode()).hexdigest()}, as_json)
