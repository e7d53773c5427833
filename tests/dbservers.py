"""Fixtures for tests against the real PostgreSQL and MariaDB servers on loopback.

Each fixture creates a private, empty database (``fedgate_t_<random hex>``), yields its SQLAlchemy URL
and drops the database afterwards, so tests never see each other's tables. Use them with the markers:

    from dbservers import mariadb_url, postgres_url  # noqa: F401 (fixtures)

    @pytest.mark.postgres
    def test_something(postgres_url: str) -> None:  # noqa: F811
        ...

When a server cannot be reached the test is skipped with the command that starts it, except under CI
(``CI=true``), where a missing server is a failure: CI must not go green by skipping. The admin URLs can
be overridden with FEDGATE_TEST_POSTGRES_ADMIN_URL and FEDGATE_TEST_MARIADB_ADMIN_URL.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import NoReturn

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["mariadb_url", "postgres_url", "private_database"]

POSTGRES_ADMIN_URL = os.environ.get(
    "FEDGATE_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get("FEDGATE_TEST_MARIADB_ADMIN_URL", "mysql+pymysql://root@127.0.0.1:3306/")

START_COMMANDS = {
    "postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "mariadb": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
}


def _admin_engine(kind: str) -> sa.Engine:
    if kind == "postgres":
        return sa.create_engine(
            POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
    return sa.create_engine(MARIADB_ADMIN_URL, connect_args={"connect_timeout": 3})


def _unreachable(kind: str, exc: Exception) -> NoReturn:
    name = "PostgreSQL" if kind == "postgres" else "MariaDB"
    url = make_url(POSTGRES_ADMIN_URL if kind == "postgres" else MARIADB_ADMIN_URL)
    message = (
        f"{name} is not reachable at {url.host}:{url.port} ({type(exc).__name__}); "
        f"start it with: {START_COMMANDS[kind]}"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a missing database server fails the run)")
    pytest.skip(message)


def private_database(kind: str) -> Iterator[str]:
    """Create a fresh database on the `kind` ("postgres" or "mariadb") server, yield its URL, drop it."""
    name = f"fedgate_t_{secrets.token_hex(6)}"
    engine = _admin_engine(kind)
    try:
        with engine.connect() as conn:
            # The name is generated here from hex digits only; CREATE DATABASE takes no bound parameter.
            if kind == "postgres":
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except SQLAlchemyError as exc:
        engine.dispose()
        _unreachable(kind, exc)
    url = make_url(POSTGRES_ADMIN_URL if kind == "postgres" else MARIADB_ADMIN_URL).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            if kind == "postgres":
                # FORCE ends sessions a test left open (pools not yet disposed).
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                # A session a test left open would hold a metadata lock and make DROP wait forever.
                sessions = conn.execute(
                    sa.text(
                        "SELECT id FROM information_schema.processlist"
                        " WHERE db = :db AND id <> CONNECTION_ID()"
                    ),
                    {"db": name},
                ).scalars()
                for session in sessions.all():
                    conn.execute(sa.text(f"KILL {int(session)}"))
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a private, empty PostgreSQL database on 127.0.0.1:5432, dropped after the test."""
    yield from private_database("postgres")


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """URL of a private, empty MariaDB database on 127.0.0.1:3306, dropped after the test."""
    yield from private_database("mariadb")
