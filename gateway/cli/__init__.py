"""The `fedgate` command line: the Typer app (`main`) and its subcommand groups, one module each."""
