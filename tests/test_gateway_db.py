"""The gateway's database: migrations on SQLite and PostgreSQL, engine settings, constraints, timestamps."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from dbservers import postgres_url  # noqa: F401 (fixture)

from gateway.db import (
    alembic_config,
    approvals,
    gateway_metadata,
    make_engine,
    migrate,
    principals,
    queries,
)

GATEWAY_TABLES = {
    "principals",
    "allowed_endpoints",
    "connectors",
    "connector_versions",
    "queries",
    "approvals",
    "rule_versions",
    "analyst_keys",
    "query_signatures",
    "audit_simple",
}


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _gateway_objects_only(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object | None
) -> bool:
    # Other packages' tables share the database and come from their own revisions.
    table = obj if isinstance(obj, sa.Table) else getattr(obj, "table", None)
    return isinstance(table, sa.Table) and table.name in GATEWAY_TABLES


def check_migrated(engine: sa.Engine) -> None:
    """The database is at the newest revision and its gateway tables are exactly `gateway_metadata`."""
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) >= GATEWAY_TABLES
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": _gateway_objects_only}
        )
        diffs = compare_metadata(context, gateway_metadata)
        assert diffs == [], f"revisions and gateway.db disagree: {diffs}"


def migrate_twice_and_check(engine: sa.Engine) -> None:
    migrate(engine)
    check_migrated(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(queries).values(_query_row("q1")))
    migrate(engine)  # a second start changes nothing and keeps the data
    check_migrated(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(queries)).scalar_one() == 1


def _query_row(query_id: str, **overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    row: dict[str, object] = {
        "id": query_id,
        "digest": query_id.ljust(64, "0"),
        "spec_json": "{}",
        "analyst": "ana",
        "state": "submitted",
        "created_at": now,
        "updated_at": now,
    }
    row.update(overrides)
    return row


def _principal_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "p1",
        "name": "p1",
        "role": "analyst",
        "department": None,
        "key_hash": "0" * 64,
        "key_prefix": "fgk_abcdefgh",
        "created_at": datetime.now(UTC),
    }
    row.update(overrides)
    return row


def check_constraints(engine: sa.Engine) -> None:
    """Foreign keys and CHECKs hold on the backend, not only in Python."""
    bad_rows = [
        (approvals, {**_approval_row("no-such-query")}),
        (queries, _query_row("q-bad-state", state="paused")),
        (principals, _principal_row(role="superuser")),
        (principals, _principal_row(role="department_admin", department=None)),
        (principals, _principal_row(role="analyst", department="tax")),
        (approvals, _approval_row("q1", decision="maybe")),
    ]
    for table, row in bad_rows:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.insert(table).values(row))
    with engine.begin() as conn:
        conn.execute(sa.insert(principals).values(_principal_row(role="department_admin", department="tax")))
        conn.execute(sa.insert(approvals).values(_approval_row("q1")))


def _approval_row(query_id: str, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "query_id": query_id,
        "department": "tax",
        "decision": "approved",
        "signed_json": "{}",
        "decided_by": "tax-admin",
        "created_at": datetime.now(UTC),
    }
    row.update(overrides)
    return row


def check_timestamps(engine: sa.Engine) -> None:
    """Timestamps come back timezone-aware in UTC, whatever zone they were written in."""
    east = datetime(2024, 3, 1, 16, 0, tzinfo=timezone(timedelta(hours=8)))
    with engine.begin() as conn:
        conn.execute(sa.insert(queries).values(_query_row("q-time", created_at=east, updated_at=east)))
        stored = conn.execute(sa.select(queries.c.created_at).where(queries.c.id == "q-time")).scalar_one()
    assert stored == datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    assert stored.utcoffset() == timedelta(0)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as conn:
        conn.execute(sa.insert(queries).values(_query_row("q-naive", created_at=datetime(2024, 3, 1))))


def test_sqlite_migrates_idempotently(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'gateway.sqlite3'}")
    try:
        migrate_twice_and_check(engine)
        check_constraints(engine)
        check_timestamps(engine)
    finally:
        engine.dispose()
    assert (tmp_path / "nested" / "dir" / "gateway.sqlite3").is_file()


@pytest.mark.postgres
def test_postgres_migrates_idempotently(postgres_url: str) -> None:  # noqa: F811
    engine = make_engine(postgres_url)
    try:
        assert engine.pool._pre_ping
        migrate_twice_and_check(engine)
        check_constraints(engine)
        check_timestamps(engine)
    finally:
        engine.dispose()


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite3'}")
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar_one()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        engine.dispose()
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30_000}


def test_in_memory_sqlite_is_one_database_for_all_threads() -> None:
    engine = make_engine("sqlite://")
    migrate(engine)
    seen: list[set[str]] = []

    def look() -> None:
        with engine.connect() as conn:
            seen.append(set(sa.inspect(conn).get_table_names()))

    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    assert seen[0] >= GATEWAY_TABLES
    engine.dispose()


def _migrate_concurrently(url: str, processes: int = 4) -> None:
    engines = [make_engine(url) for _ in range(processes)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(processes)

    def start(engine: sa.Engine) -> None:
        try:
            barrier.wait()
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        check_migrated(engines[0])
    finally:
        for e in engines:
            e.dispose()


def test_concurrent_starts_migrate_once_on_sqlite(tmp_path: Path) -> None:
    _migrate_concurrently(f"sqlite:///{tmp_path / 'g.sqlite3'}")


@pytest.mark.postgres
def test_concurrent_starts_migrate_once_on_postgres(postgres_url: str) -> None:  # noqa: F811
    _migrate_concurrently(postgres_url)


def test_alembic_check_sees_no_unmigrated_tables(tmp_path: Path) -> None:
    """Autogenerate, through env.py, finds nothing to add: every table in the target metadata is migrated.

    env.py's target metadata includes the budget ledger's and the audit store's tables once those
    packages exist, so this fails until a revision creates their tables too.
    """
    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite3'}")
    migrate(engine)
    config = alembic_config()
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.check(config)
    finally:
        engine.dispose()


def test_revisions_form_one_line_from_0001() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].revision == "0001" and revisions[-1].down_revision is None


def test_revision_0009_keeps_each_rule_as_version_one_of_its_department(tmp_path: Path) -> None:
    """A rule stored before rules had versions becomes version 1 of (department, rule id), same bytes."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    config = alembic_config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0006")
            conn.execute(
                sa.text(
                    "INSERT INTO rules (id, department, signed_json, created_by, created_at) "
                    "VALUES ('tax-std', 'tax', '{\"rule\": 1}', 'tax-admin', '2026-01-01 00:00:00')"
                )
            )
            command.upgrade(config, "head")
            rows = conn.execute(
                sa.text("SELECT department, rule_id, version, signed_json, signed_digest FROM rule_versions")
            ).all()
        assert [tuple(r) for r in rows] == [
            ("tax", "tax-std", 1, '{"rule": 1}', hashlib.sha256(b'{"rule": 1}').hexdigest())
        ]
    finally:
        engine.dispose()
