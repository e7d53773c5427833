"""The audit package stands alone: it never imports the gateway, aggregation or privacy packages, and
importing `audit` (as the CLI does to mount its commands) loads neither SQLAlchemy nor cryptography."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

AUDIT = Path(__file__).resolve().parent.parent / "audit"
FORBIDDEN = ("gateway", "aggregation", "privacy")


def test_audit_imports_no_higher_layer() -> None:
    offenders = []
    for path in sorted(AUDIT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_the_package_and_its_cli_is_light() -> None:
    code = (
        "import sys, audit, audit.cli\n"
        "heavy = [m for m in ('sqlalchemy', 'cryptography', 'audit.store') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
