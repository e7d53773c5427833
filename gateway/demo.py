"""`make demo`: a synthetic county, its five department connectors on loopback, and what they publish."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.table import Table

from connectors.config import load_config
from connectors.process import RunningConnector, start_connector
from connectors.protocol import ConnectorSchema, load_private_key
from gateway.connector_client import ConnectorClient

CONNECTORS = ("register", "tax", "social", "utility", "civil")
console = Console()


def _ensure_county(county: Path, persons: int, fresh: bool) -> None:
    if not fresh and (county / "truth.json").exists():
        console.print(f"using the county in {county} (pass --fresh to regenerate)")
        return
    from connectors.synth import generate_county

    with console.status(f"generating a county of {persons:,} persons"):
        summary = generate_county(county, persons=persons, seed=1)
    console.print(
        f"generated {summary.persons:,} persons in {summary.households:,} households and "
        f"{summary.villages} villages in {summary.elapsed_seconds:.1f} s -> {county}"
    )


def _show(schema: ConnectorSchema, url: str) -> None:
    table = Table(
        title=f"[bold]{schema.connector}[/bold] ({schema.department}) at {url}",
        caption=f"connector key {schema.signing_key[:24]}…  max ε per query "
        f"{schema.policy.max_epsilon_per_query}, per {schema.policy.budget_window} "
        f"{schema.policy.max_epsilon_per_window}",
        show_lines=True,
    )
    for col in (
        "dataset",
        "entity",
        "period",
        "measures (public clip bounds)",
        "dimensions (public domain size)",
    ):
        table.add_column(col)
    for ds in schema.datasets:
        measures = "\n".join(
            f"{m.name}: {m.rollup.value} [{m.lower:,}, {m.upper:,}] {m.unit}" for m in ds.measures
        )
        dims = "\n".join(
            f"{d.name}: {len(d.domain)}{' (from ID)' if d.derived_from_id else ''}" for d in ds.dimensions
        )
        if ds.household_mapping:
            dims += "\nhousehold mapping"
        table.add_row(ds.name, ds.entity_kind.value, ds.period_grain or "snapshot", measures, dims)
    console.print(table)


def run_demo(workdir: Path, *, persons: int, fresh: bool) -> None:
    county = workdir / "county"
    _ensure_county(county, persons, fresh)
    gateway_key = load_private_key((county / "keys" / "gateway.key").read_bytes())
    with ExitStack() as stack:
        running: list[RunningConnector] = []
        started = time.perf_counter()
        with console.status("starting the five connectors on loopback"):
            for name in CONNECTORS:
                conn = start_connector(county / "connectors" / f"{name}.yaml", log_dir=workdir / "logs")
                stack.callback(conn.stop)
                running.append(conn)
        console.print(
            f"five connectors up in {time.perf_counter() - started:.1f} s (logs in {workdir / 'logs'})"
        )
        for conn in running:
            cfg = load_config(county / "connectors" / f"{conn.name}.yaml").config
            # The connector's key is pinned from its own file here; in production it is confirmed out of band.
            pinned = load_private_key(cfg.signing_key_file.read_bytes()).public_key()
            with ConnectorClient(
                conn.url, connector=conn.name, gateway_key=gateway_key, connector_key=pinned
            ) as c:
                _show(c.schema(), conn.url)
    console.print("each schema above was fetched with a gateway-signed request and its signature verified.")
