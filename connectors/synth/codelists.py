"""The published code lists that give the connectors' dimensions their public domains.

Each is a UTF-8 CSV file whose first column is headed `code`, as `connectors.config.read_codelist`
requires. They hold only public facts (division codes, national classifications), never anything
counted from the data.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from connectors.synth.geography import REGION_CODES, URBAN_RURAL, Geography
from connectors.synth.occupations import MAJOR, MEDIUM
from connectors.synth.population import RELATIONS

__all__ = ["CODELISTS", "write_codelists"]

CODELISTS = (
    "villages.csv",
    "townships.csv",
    "urban_rural.csv",
    "occupation_major.csv",
    "occupation_medium.csv",
    "region_codes.csv",
    "relations.csv",
)


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_codelists(directory: Path, geography: Geography) -> dict[str, Path]:
    """Write every code list into `directory`; returns file name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    g = geography
    contents: dict[str, tuple[Sequence[str], Iterable[Sequence[str]]]] = {
        "villages.csv": (
            ("code", "name", "township_code", "urban_rural_code"),
            zip(
                g.village_codes.tolist(),
                g.village_names.tolist(),
                g.village_township.tolist(),
                g.village_urban_rural.tolist(),
                strict=True,
            ),
        ),
        "townships.csv": (("code", "name"), zip(g.township_codes, g.township_names, strict=True)),
        "urban_rural.csv": (("code", "label"), URBAN_RURAL.items()),
        "occupation_major.csv": (("code", "label"), MAJOR.items()),
        "occupation_medium.csv": (("code", "label", "major"), ((c, n, c[0]) for c, n in MEDIUM.items())),
        "region_codes.csv": (("code", "name"), sorted(REGION_CODES.items())),
        "relations.csv": (("code", "label"), RELATIONS.items()),
    }
    paths: dict[str, Path] = {}
    for name in CODELISTS:
        header, rows = contents[name]
        paths[name] = directory / name
        _write(paths[name], header, rows)
    return paths
