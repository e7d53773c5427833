"""`python -m connectors`: the connector's own command line, for a department that installs it alone."""

from connectors.cli import connector_app

if __name__ == "__main__":
    connector_app()
