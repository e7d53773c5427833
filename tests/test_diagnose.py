"""Database failures name their cause for the department, without values or secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from connector_fixture import make_department

from connectors.config import load_config
from connectors.errors import ConnectorError
from connectors.extract import rollup_spec
from connectors.sources.diagnose import SourceFailure, scrub
from connectors.sources.sql import SqlSource


def _failure(url: str) -> SourceFailure:
    with pytest.raises(ConnectorError) as info:
        SqlSource(url)._table("wages")
    assert isinstance(info.value, SourceFailure)
    assert "s3cret" not in str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("url", "cause", "shown"),
    [
        ("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x", "connection_refused", "port 1"),
        (
            "postgresql+psycopg://postgres:s3cret@no-such-host.invalid/x",
            "unknown_host",
            "no-such-host.invalid",
        ),
        ("mysql+pymysql://root:s3cret@127.0.0.1:1/x", "connection_refused", "Can't connect"),
        ("sqlite:////nonexistent-dir/x.db", "unknown_database", "unable to open"),
    ],
)
def test_unreachable_sources_name_their_cause(url: str, cause: str, shown: str) -> None:
    failure = _failure(url)
    assert failure.diagnosis.cause == cause
    assert shown in failure.diagnosis.detail
    assert failure.diagnosis.fix


@pytest.mark.postgres
def test_an_unknown_postgresql_database_is_named() -> None:
    failure = _failure("postgresql+psycopg://postgres:s3cret@127.0.0.1:5432/fedgate_no_such_db")
    assert failure.diagnosis.cause == "unknown_database"
    assert "fedgate_no_such_db" in failure.diagnosis.detail


@pytest.mark.mariadb
def test_a_wrong_mariadb_user_is_an_authentication_failure() -> None:
    failure = _failure("mysql+pymysql://fedgate_nobody:s3cret@127.0.0.1:3306/x")
    assert failure.diagnosis.cause == "authentication_failed"
    assert failure.diagnosis.error_class == "pymysql.OperationalError"
    assert "Access denied" in failure.diagnosis.detail and "fedgate_nobody" in failure.diagnosis.detail


def test_scrub_elides_values_and_credentials_but_keeps_known_names() -> None:
    message = (
        'invalid input syntax for type integer: "330922197503140011"\n'
        "DETAIL:  Key (pid)=(330922197503140011) already exists."
    )
    assert scrub(message) == 'invalid input syntax for type integer: "…"'
    assert scrub("could not connect to postgresql://u:pw@db/x password=hunter2") == (
        "could not connect to postgresql://u:***@db/x password=***"
    )
    assert scrub('relation "wages" does not exist', keep=["wages"]) == 'relation "wages" does not exist'
    assert scrub("amount 123456 out of range") == "amount … out of range"


def test_a_column_dropped_after_start_is_named_at_the_roll_up(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    loaded = load_config(dept.config_path)
    source = SqlSource(loaded.config.source.url)
    dataset = loaded.config.dataset("wages")
    assert dataset is not None
    source.check(dataset)
    engine = sa.create_engine(loaded.config.source.url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE wages RENAME COLUMN amount TO amount_yuan"))
    engine.dispose()
    with pytest.raises(SourceFailure) as info:
        list(source.rollup(rollup_spec(dataset, dept.request("q-diag-0001"), 1_000)))
    source.close()
    assert info.value.diagnosis.cause == "unknown_column"
    assert info.value.diagnosis.error_class == "sqlite3.OperationalError"
    assert "amount" in info.value.diagnosis.detail
