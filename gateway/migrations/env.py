"""Alembic environment for the gateway's database.

`gateway.db.migrate` passes an open connection in `config.attributes["connection"]`; run by hand
(`alembic -c <ini with script_location = gateway/migrations>`), the URL comes from the gateway settings.
The target metadata combines the gateway's tables with the budget ledger's and the audit store's, each
only if that package exists yet, so autogenerate can compare all of them against a database.
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import context

from gateway.db import gateway_metadata, make_engine

# (module, attribute) of the other packages whose tables live in the gateway's database.
OPTIONAL_METADATA = (("privacy.ledger", "ledger_metadata"), ("audit.store", "audit_metadata"))


def target_metadata() -> list[sa.MetaData]:
    found = [gateway_metadata]
    for module_name, attribute in OPTIONAL_METADATA:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only the module (or its package) being absent is tolerated; a broken import inside it,
            # such as a missing third-party dependency, must surface.
            parts = module_name.split(".")
            if exc.name not in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
                raise
            continue
        metadata = getattr(module, attribute, None)
        if isinstance(metadata, sa.MetaData):
            found.append(metadata)
    return found


def run_migrations(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata(), render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
    from gateway.settings import get_settings

    engine = make_engine(get_settings().database_url_resolved())
    try:
        with engine.connect() as own_connection:
            run_migrations(own_connection)
            own_connection.commit()
    finally:
        engine.dispose()


# Alembic installs `context.config` only while it runs this file; importing it elsewhere (a test that
# imports every gateway module, a type checker) must do nothing.
if hasattr(context, "config"):
    main()
