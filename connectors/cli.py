"""`fedgate connector ...` and `fedgate synth`: the commands a department (or a demo) runs.

Imports are deferred into the commands so that loading this module (as the main CLI does) pulls in
neither the connector service nor the federation keyring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from connectors.init_cli import init

connector_app = typer.Typer(help="Run and inspect a department connector.", no_args_is_help=True)
connector_app.command("init")(init)
console = Console(stderr=True)


@connector_app.command("serve")
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="the connector's YAML/TOML configuration")],
    host: Annotated[str | None, typer.Option(help="listen address (default: from the configuration)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default: from the configuration)")] = None,
) -> None:
    """Serve a connector on its configured address until interrupted."""
    import uvicorn

    from connectors.config import load_config
    from connectors.errors import ConnectorError
    from connectors.logs import configure_logging
    from connectors.service import build_service, create_app, log

    configure_logging()
    try:
        loaded = load_config(config)
        service = build_service(loaded)
    except ConnectorError as exc:
        console.print(f"[red]cannot start connector:[/red] {exc}")
        raise typer.Exit(2) from None
    listen = loaded.config.listen
    log.info(
        "connector.start",
        connector=loaded.config.name,
        department=loaded.config.department,
        host=host or listen.host,
        port=listen.port if port is None else port,
        datasets=[d.name for d in loaded.config.datasets],
    )
    uvicorn.run(
        create_app(service),
        host=host or listen.host,
        port=listen.port if port is None else port,
        log_level="warning",
        access_log=False,
    )


@connector_app.command("check")
def check(
    config: Annotated[Path, typer.Option("--config", "-c", help="the connector's YAML/TOML configuration")],
) -> None:
    """Validate a configuration against its source and print the schema it would publish."""
    from connectors.config import load_config
    from connectors.errors import ConnectorError
    from connectors.service import build_service

    try:
        service = build_service(load_config(config))
    except ConnectorError as exc:
        console.print(f"[red]invalid:[/red] {exc}")
        raise typer.Exit(2) from None
    typer.echo(service.schema.model_dump_json(indent=2))


@connector_app.command("export-log")
def export_log(
    config: Annotated[Path, typer.Option("--config", "-c", help="the connector's YAML/TOML configuration")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the JSON Lines file to write")],
) -> None:
    """Export the local log (requests served, checkpoints witnessed) for `fedgate audit reconcile`."""
    from audit.export import export_connector_log
    from connectors.config import load_config
    from connectors.errors import ConnectorError
    from connectors.state import ConnectorState

    try:
        cfg = load_config(config).config
    except ConnectorError as exc:
        console.print(f"[red]invalid:[/red] {exc}")
        raise typer.Exit(2) from None
    state = ConnectorState(cfg.state_dir)
    try:
        verified = state.verify_log()
        count = export_connector_log(state, out, connector=cfg.name)
    except ValueError as exc:
        console.print(f"[red]the local log does not verify:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        state.close()
    console.print(f"local log verified ({verified} entries) and {count} entries written to {out}")


def synth(
    out: Annotated[Path, typer.Option("--out", help="directory to write the county into")],
    persons: Annotated[int, typer.Option(min=100, max=5_000_000, help="registered persons")] = 20_000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same county)")] = 1,
    year: Annotated[int, typer.Option(min=2000, max=2100, help="the year of monthly records")] = 2025,
    tax_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL for the tax store (PostgreSQL)")] = None,
    social_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL for social insurance (MariaDB)")
    ] = None,
) -> None:
    """Generate a synthetic island county: five department stores, code lists, configs and demo keys."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from connectors.synth import generate_county

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("generating", total=None)
        summary = generate_county(
            out,
            persons=persons,
            seed=seed,
            year=year,
            tax_url=tax_url,
            social_url=social_url,
            progress=lambda step: bar.update(task, description=step),
        )
    console.print(
        f"county written to {out}: {summary.persons:,} persons, {summary.households:,} households, "
        f"{summary.villages} villages in {summary.elapsed_seconds:.1f} s"
    )
