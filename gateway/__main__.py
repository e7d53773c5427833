"""`python -m gateway serve`: the gateway's own entry point (the same as `fedgate gateway serve`)."""

from gateway.cli.main import gateway_app

if __name__ == "__main__":
    gateway_app()
