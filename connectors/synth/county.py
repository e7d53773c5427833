"""`generate_county`: one synthetic island county, from geography to connector configurations.

The output directory holds everything a demo federation needs:

    codelists/            public code lists (villages, townships, urban-rural, occupations, regions, ...)
    register.db           household register (SQLite)
    tax.db, social.db     tax and social insurance, unless PostgreSQL / MariaDB URLs are given
    utility/              electricity.parquet, water.parquet
    civil/                assistance.csv
    keys/                 demo keys (marked DEMO-KEYS-DO-NOT-USE-IN-PRODUCTION) and the federation keyring
    connectors/           register.yaml, tax.yaml, social.yaml, utility.yaml, civil.yaml
    monitoring.yaml       the monitoring configuration the gateway's indicators are built from
    truth.json            exact raw and as-linked indicators, for tests and the demo only

`layout` names things as another county's departments might (`connectors.synth.layout`): the same data
under other connector, dataset, measure, dimension, table and column names.

The data is a deterministic function of the seed (numpy's PCG64, one independent stream per stage);
the keys are fresh on every run.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from connectors.synth.codelists import write_codelists
from connectors.synth.configs import CONNECTORS, connector_configs, write_configs
from connectors.synth.departments import DEPARTMENTS, build_departments
from connectors.synth.geography import build_geography
from connectors.synth.keys import write_demo_keys
from connectors.synth.layout import STANDARD, Layout, layout_named
from connectors.synth.monitoring import write_monitoring_config
from connectors.synth.population import build_population
from connectors.synth.records import build_records
from connectors.synth.stores import write_csv, write_parquet, write_sql
from connectors.synth.truth import build_truth, write_truth
from connectors.synth.utilities import build_utilities

__all__ = ["MIN_PERSONS", "CountySummary", "generate_county"]

MIN_PERSONS = 100
_STAGES = ("geography", "population", "records", "utilities", *(f"defects:{d}" for d in DEPARTMENTS))


@dataclass(frozen=True)
class CountySummary:
    """What `generate_county` wrote."""

    out: Path
    seed: int
    year: int
    persons: int
    """registered persons"""
    floating: int
    """floating population: in the tax wage records, not in the register"""
    households: int
    villages: int
    townships: int
    rows: dict[str, int] = field(default_factory=dict)
    """rows per store table, as 'department.table'"""
    configs: dict[str, Path] = field(default_factory=dict)
    """connector name -> configuration file"""
    truth: Path = Path()
    monitoring: Path = Path()
    """the monitoring configuration"""
    layout: str = STANDARD.name
    elapsed_seconds: float = 0.0


def _sqlite_url(path: Path) -> str:
    for stale in (path, path.with_name(path.name + "-journal")):
        stale.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def generate_county(
    out: Path,
    *,
    persons: int,
    seed: int,
    year: int = 2025,
    tax_url: str | None = None,
    social_url: str | None = None,
    progress: Callable[[str], None] | None = None,
    layout: Layout | str = STANDARD,
) -> CountySummary:
    """Generate a synthetic county of `persons` registered residents into `out`.

    With `tax_url` (a SQLAlchemy PostgreSQL URL) the tax tables go to that database, and with
    `social_url` (MariaDB/MySQL) the social-insurance tables; their tables are dropped and recreated.
    Otherwise both are SQLite files in `out`. `layout` (a `Layout` or its name) renames what the
    departments expose; the data are the same.
    """
    names = layout_named(layout) if isinstance(layout, str) else layout
    if persons < MIN_PERSONS:
        raise ValueError(f"persons must be at least {MIN_PERSONS} (a county needs villages and households)")
    if not 1950 <= year <= 2100:
        raise ValueError(f"year {year} is out of range; expected 1950-2100")
    started = time.perf_counter()

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    streams = dict(
        zip(
            _STAGES,
            (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(_STAGES))),
            strict=True,
        )
    )
    # Birth dates are drawn back from the start of the year, and never from the future.
    reference = min(datetime.date(year, 1, 1), datetime.date.today())

    geography = build_geography(streams["geography"], persons)
    say(f"geography: {len(geography.township_codes)} townships, {len(geography)} villages")
    population = build_population(streams["population"], geography, persons, reference)
    say(
        f"population: {population.registered} registered in {population.households} households, "
        f"{population.floating} floating"
    )
    records = build_records(streams["records"], geography, population)
    utilities = build_utilities(streams["utilities"], population)
    say("records: wages, business income, contributions, pensions, occupations, assistance, utilities")
    departments = build_departments(
        {d: streams[f"defects:{d}"] for d in DEPARTMENTS}, geography, population, records, utilities, year
    )
    say("defects: invalid, legacy and sloppy ID forms, duplicate rows")

    codelists = write_codelists(out / "codelists", geography)
    say(f"code lists: {len(codelists)} files")

    rows: dict[str, int] = {}
    tables = {d: tuple(names.table(d, t) for t in ts) for d, ts in departments.tables.items()}
    sql_targets = {
        "register": _sqlite_url(out / "register.db"),
        "tax": tax_url or _sqlite_url(out / "tax.db"),
        "social": social_url or _sqlite_url(out / "social.db"),
    }
    for department, url in sql_targets.items():
        loaded = write_sql(url, tables[department])
        rows.update({f"{department}.{t}": n for t, n in loaded.items()})
        say(f"store {department}: {sum(loaded.values())} rows ({url.split(':', 1)[0]})")
    for table in tables["utility"]:
        write_parquet(out / "utility", table)
        rows[f"utility.{table.name}"] = len(table.frame)
    for table in tables["civil"]:
        write_csv(out / "civil", table)
        rows[f"civil.{table.name}"] = len(table.frame)
    say("store utility: Parquet; store civil: CSV")

    keys = write_demo_keys(
        out / "keys", [names.connector(c) for c in CONNECTORS], [names.connector(d) for d in DEPARTMENTS]
    )
    sources = {
        "register": {"url": "sqlite:///../register.db", "kind": "sql"},
        "tax": {"url": tax_url or "sqlite:///../tax.db", "kind": "sql"},
        "social": {"url": social_url or "sqlite:///../social.db", "kind": "sql"},
        "utility": {"url": "../utility", "kind": "files"},
        "civil": {"url": "../civil", "kind": "files"},
    }
    configs = write_configs(out / "connectors", connector_configs(sources, keys, names))
    monitoring = write_monitoring_config(out / "monitoring.yaml", names)
    say(f"keys, {len(configs)} connector configurations and the monitoring configuration")

    truth = build_truth(geography, population, records, departments.defects, year=year, seed=seed)
    truth_path = write_truth(out / "truth.json", truth)
    elapsed = time.perf_counter() - started
    say(f"truth.json written; {elapsed:.1f} s")
    return CountySummary(
        out=out,
        seed=seed,
        year=year,
        persons=population.registered,
        floating=population.floating,
        households=population.households,
        villages=len(geography),
        townships=len(geography.township_codes),
        rows=rows,
        configs=configs,
        truth=truth_path,
        monitoring=monitoring,
        layout=names.name,
        elapsed_seconds=elapsed,
    )
