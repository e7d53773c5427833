"""The `fedgate` command line."""

from __future__ import annotations

import typer

from connectors.cli import connector_app, synth

app = typer.Typer(
    help="fedgate: a privacy-preserving data federation gateway.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(connector_app, name="connector")
app.command("synth")(synth)


@app.command("demo")
def demo(
    workdir: str = typer.Option(".demo", help="where the demo county and state live"),
    persons: int = typer.Option(20_000, min=100, help="persons in the demo county"),
    fresh: bool = typer.Option(False, help="regenerate the county even if one exists"),
) -> None:
    """Generate a county (once), start the five connectors on loopback and show what they publish."""
    from pathlib import Path

    from gateway.demo import run_demo

    run_demo(Path(workdir), persons=persons, fresh=fresh)


def main() -> None:
    app()
