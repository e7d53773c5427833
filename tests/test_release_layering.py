"""The release vocabulary and the aggregation package load without OpenDP: only building a release does.
The vocabulary loads no polars either, so a result can be read anywhere."""

from __future__ import annotations

import subprocess
import sys

LOADS = (
    "import importlib, pkgutil, sys\n"
    "top = importlib.import_module({module!r})\n"
    "for info in pkgutil.walk_packages(getattr(top, '__path__', []), top.__name__ + '.'):\n"
    "    importlib.import_module(info.name)\n"
    "print({heavy!r} in sys.modules)"
)


def _loads(module: str, heavy: str = "opendp") -> bool:
    code = LOADS.format(module=module, heavy=heavy)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.strip() == "True"


def test_the_vocabulary_and_every_aggregation_module_leave_opendp_unloaded() -> None:
    assert not _loads("privacy.vocabulary")
    assert not _loads("privacy.vocabulary", "polars")
    assert not _loads("privacy.postprocess")
    assert not _loads("aggregation")


def test_the_check_sees_opendp_when_the_release_build_loads_it() -> None:
    assert _loads("privacy.release")
