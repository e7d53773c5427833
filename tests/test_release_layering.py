"""The release vocabulary and the aggregation package load without OpenDP: only building a release does."""

from __future__ import annotations

import subprocess
import sys

LOADS_OPENDP = (
    "import importlib, pkgutil, sys\n"
    "top = importlib.import_module({module!r})\n"
    "for info in pkgutil.walk_packages(getattr(top, '__path__', []), top.__name__ + '.'):\n"
    "    importlib.import_module(info.name)\n"
    "print('opendp' in sys.modules)"
)


def _loads_opendp(module: str) -> bool:
    code = LOADS_OPENDP.format(module=module)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.strip() == "True"


def test_the_vocabulary_and_every_aggregation_module_leave_opendp_unloaded() -> None:
    assert not _loads_opendp("privacy.vocabulary")
    assert not _loads_opendp("privacy.postprocess")
    assert not _loads_opendp("aggregation")


def test_the_check_sees_opendp_when_the_release_build_loads_it() -> None:
    assert _loads_opendp("privacy.release")
