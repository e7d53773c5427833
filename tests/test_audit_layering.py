"""Importing `audit` (as the CLI does to mount its commands) loads neither SQLAlchemy nor cryptography.

That the package imports no higher layer is one of the rules of `tests/test_layering.py`."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_package_and_its_cli_is_light() -> None:
    code = (
        "import sys, audit, audit.cli\n"
        "heavy = [m for m in ('sqlalchemy', 'cryptography', 'audit.store') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
