"""The gateway's folders hold what they say: the service never imports its command line (`gateway/cli/`) or
its loopback harness (`gateway/dev/`), and every pydantic schema of the HTTP API lives in `gateway/api/`."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
ENTRY_POINTS = {"__main__.py"}  # `python -m gateway` is the command line's own entry point


def _service_modules() -> list[Path]:
    paths = [*GATEWAY.glob("*.py"), *(GATEWAY / "api").glob("*.py")]
    return sorted(p for p in paths if p.name not in ENTRY_POINTS)


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def test_the_service_imports_neither_the_command_line_nor_the_dev_harness() -> None:
    offenders = [
        f"{path.relative_to(GATEWAY)}: {name}"
        for path in _service_modules()
        for name in _imported(ast.parse(path.read_text(encoding="utf-8")))
        if name.startswith(("gateway.cli", "gateway.dev"))
    ]
    assert offenders == []


def test_pydantic_models_of_the_gateway_live_in_api() -> None:
    offenders = [
        f"{path.name}: {node.name}"
        for path in sorted(GATEWAY.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and any(isinstance(base, ast.Name) and base.id == "BaseModel" for base in node.bases)
    ]
    assert offenders == []


def test_the_checks_see_an_offender() -> None:
    tree = ast.parse("from gateway.cli.common import console\nfrom gateway import dev\n")
    assert [n for n in _imported(tree) if n.startswith(("gateway.cli", "gateway.dev"))] == [
        "gateway.cli.common",
        "gateway.cli.common.console",
        "gateway.dev",
    ]
