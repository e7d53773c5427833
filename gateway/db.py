"""The gateway's own database: table definitions (SQLAlchemy Core), engines and migrations.

An embedded SQLite file by default, PostgreSQL in production. The schema is created and upgraded only by
the Alembic revisions in `gateway/migrations/`, never by `metadata.create_all`, so every deployment walks
the same history. The tables hold principals (key hashes only), the connector registry, queries,
department-signed approvals, the versions of each department's rules and the analysts' keys and query
signatures (revision 0009), the named key groups (revision 0004), the versions of the monitoring
configuration (revision 0006), the jobs, the monthly schedules (with the scheduler's own job store) and the
archive of scheduled results (revision 0007), the console's sessions (revision 0008), and the simple audit
table
of revision 0001 (superseded by the tamper-evident log of `audit.store`, revision 0003, and left empty).
Nothing token-level or row-level is ever stored here.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

__all__ = [
    "MIGRATIONS_DIR",
    "UtcDateTime",
    "alembic_config",
    "allowed_endpoints",
    "analyst_keys",
    "approvals",
    "archived_results",
    "audit_simple",
    "connector_versions",
    "connectors",
    "console_sessions",
    "gateway_metadata",
    "jobs",
    "key_groups",
    "make_engine",
    "migrate",
    "monitoring_configs",
    "principals",
    "queries",
    "query_signatures",
    "rules",
    "scheduler_jobs",
    "schedules",
    "utcnow",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# SQLite waits this long for another writer (the budget ledger's BEGIN IMMEDIATE) before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000

# Deterministic constraint names, so a later revision can drop or alter a constraint by name on both
# SQLite and PostgreSQL; revision 0001 spells out the same names.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLES = ("operator", "department_admin", "analyst", "auditor")
QUERY_STATES = ("submitted", "approved", "rejected", "running", "released", "failed")
DECISIONS = ("approved", "rejected")
JOB_KINDS = ("query", "indicator", "pack")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
SCHEDULE_STATES = ("active", "paused", "removed")
PERIOD_RULES = ("previous_month",)

# Any fixed 64-bit number; it only has to be the same in every gateway process.
_MIGRATION_LOCK_ID = 0x66656467617465  # "fedgate"


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that `column` holds one of the fixed `values` (plain identifiers only)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no time zone type and returns naive values; this stores UTC and hands back aware
    datetimes everywhere, so an expiry comparison never mixes naive and aware times. Naive input is
    refused rather than guessed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


gateway_metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# Names and roles are short identifiers; 100 leaves room for e-mail-like principal names.
_NAME = 100
_URL = 512

principals = sa.Table(
    "principals",
    gateway_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(_NAME), nullable=False, unique=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("department", sa.String(64), nullable=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key_prefix", sa.String(12), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint(one_of("role", ROLES), name="role"),
    # A department admin acts for exactly one department; nobody else is bound to one.
    sa.CheckConstraint(
        "(role = 'department_admin') = (department IS NOT NULL)", name="department_iff_department_admin"
    ),
)

allowed_endpoints = sa.Table(
    "allowed_endpoints",
    gateway_metadata,
    sa.Column("url", sa.String(_URL), primary_key=True),
    sa.Column("added_by", sa.String(_NAME), nullable=False),
    sa.Column("added_at", UtcDateTime(), nullable=False),
)

connectors = sa.Table(
    "connectors",
    gateway_metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("department", sa.String(64), nullable=False, index=True),
    sa.Column("endpoint", sa.String(_URL), nullable=False),
    sa.Column("key_fingerprint", sa.String(64), nullable=False),
    sa.Column("signing_key", sa.Text(), nullable=False),
    sa.Column("approval_key", sa.Text(), nullable=False),
    sa.Column("schema_json", sa.Text(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("registered_by", sa.String(_NAME), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

connector_versions = sa.Table(
    "connector_versions",
    gateway_metadata,
    sa.Column("name", sa.String(64), sa.ForeignKey("connectors.name"), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("endpoint", sa.String(_URL), nullable=False),
    sa.Column("key_fingerprint", sa.String(64), nullable=False),
    sa.Column("schema_json", sa.Text(), nullable=False),
    sa.Column("changed_by", sa.String(_NAME), nullable=False),
    sa.Column("changed_at", UtcDateTime(), nullable=False),
)

queries = sa.Table(
    "queries",
    gateway_metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("spec_json", sa.Text(), nullable=False),
    sa.Column("analyst", sa.String(_NAME), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error_code", sa.String(32), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint(one_of("state", QUERY_STATES), name="state"),
)

approvals = sa.Table(
    "approvals",
    gateway_metadata,
    sa.Column("query_id", sa.String(64), sa.ForeignKey("queries.id"), primary_key=True),
    sa.Column("department", sa.String(64), primary_key=True),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("signed_json", sa.Text(), nullable=False),
    sa.Column("decided_by", sa.String(_NAME), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint(one_of("decision", DECISIONS), name="decision"),
)

# One row per version of a department's rule, identified by (department, rule_id, version): never deleted,
# only revoked or superseded by the next version (revision 0009).
rules = sa.Table(
    "rule_versions",
    gateway_metadata,
    sa.Column("department", sa.String(64), primary_key=True),
    sa.Column("rule_id", sa.String(80), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("signed_json", sa.Text(), nullable=False),
    sa.Column("signed_digest", sa.String(64), nullable=False),
    sa.Column("created_by", sa.String(_NAME), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_by", sa.String(_NAME), nullable=True),
    sa.Column("superseded_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint("version >= 1", name="version_positive"),
)

# The analysts' own Ed25519 public keys, registered by the operator (revision 0009); a key is revoked,
# never deleted, so the queries it signed stay attributable.
analyst_keys = sa.Table(
    "analyst_keys",
    gateway_metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("analyst", sa.String(_NAME), nullable=False, index=True),
    sa.Column("public_key", sa.Text(), nullable=False),
    sa.Column("registered_by", sa.String(_NAME), nullable=False),
    sa.Column("registered_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_by", sa.String(_NAME), nullable=True),
)

# The analyst's signature of a query, forwarded with every extract so connectors can verify who asked.
query_signatures = sa.Table(
    "query_signatures",
    gateway_metadata,
    sa.Column("query_id", sa.String(64), sa.ForeignKey("queries.id"), primary_key=True),
    sa.Column("key_fingerprint", sa.String(64), sa.ForeignKey("analyst_keys.fingerprint"), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
)

# One row per version of a named key group ("X" group); a version never changes once written, except that
# retiring the name stamps every version of it.
key_groups = sa.Table(
    "key_groups",
    gateway_metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("definition_json", sa.Text(), nullable=False),
    sa.Column("definition_digest", sa.String(64), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("title_zh", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("created_by", sa.String(_NAME), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("retired_at", UtcDateTime(), nullable=True),
    sa.Column("retired_by", sa.String(_NAME), nullable=True),
    sa.CheckConstraint("version >= 1", name="version_positive"),
    sa.CheckConstraint("(retired_at IS NULL) = (retired_by IS NULL)", name="retired_at_iff_retired_by"),
)

# One row per version of the monitoring configuration the indicators are built from; never changed once
# written. The highest version is the one in force.
monitoring_configs = sa.Table(
    "monitoring_configs",
    gateway_metadata,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("config_json", sa.Text(), nullable=False),
    sa.Column("config_digest", sa.String(64), nullable=False),
    sa.Column("source", sa.String(_URL), nullable=False),
    sa.Column("created_by", sa.String(_NAME), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint("version >= 1", name="version_positive"),
)

# The console's server-side sessions (revision 0008): the browser holds only a random session id in an
# HttpOnly cookie; the row holds its SHA-256, the principal it signed in as, the CSRF token of its forms
# and when it was last used (the idle timeout). Signing out or expiring deletes the row.
console_sessions = sa.Table(
    "console_sessions",
    gateway_metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("principal_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False, index=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_seen_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
)

# A run of a query, an indicator or a pack, submitted over HTTP or by a schedule; worked by the gateway
# process's job pool (`gateway.jobs`). Results and errors are the public documents a client would get.
jobs = sa.Table(
    "jobs",
    gateway_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("params_json", sa.Text(), nullable=False),
    sa.Column("principal", sa.String(_NAME), nullable=False, index=True),
    sa.Column("submitted_by", sa.String(_NAME), nullable=False),
    sa.Column("schedule_id", sa.String(32), nullable=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("steps_done", sa.Integer(), nullable=False),
    sa.Column("steps_total", sa.Integer(), nullable=False),
    sa.Column("current_step", sa.String(200), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    sa.Column("error_json", sa.Text(), nullable=True),
    sa.Column("result_json", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("finished_at", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint(one_of("kind", JOB_KINDS), name="kind"),
    sa.CheckConstraint(one_of("state", JOB_STATES), name="state"),
)

# An operator's monthly schedule of a pack; the trigger itself lives in `scheduler_jobs`.
schedules = sa.Table(
    "schedules",
    gateway_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(_NAME), nullable=False),
    sa.Column("pack", sa.String(32), nullable=False),
    sa.Column("period_rule", sa.String(32), nullable=False),
    sa.Column("cron_json", sa.Text(), nullable=False),
    sa.Column("run_as", sa.String(_NAME), nullable=False),
    sa.Column("epsilon", sa.String(32), nullable=True),
    sa.Column("groups_json", sa.Text(), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(_NAME), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("last_run_at", UtcDateTime(), nullable=True),
    sa.Column("last_job_id", sa.String(32), nullable=True),
    sa.Column("last_missed_at", UtcDateTime(), nullable=True),
    sa.CheckConstraint(one_of("state", SCHEDULE_STATES), name="state"),
    sa.CheckConstraint(one_of("period_rule", PERIOD_RULES), name="period_rule"),
)

# APScheduler's SQLAlchemyJobStore table, spelled as that library defines it, so the scheduler finds it
# made by our migrations rather than creating it itself.
scheduler_jobs = sa.Table(
    "scheduler_jobs",
    gateway_metadata,
    sa.Column("id", sa.Unicode(191), primary_key=True),
    sa.Column("next_run_time", sa.Float(25), index=True),
    sa.Column("job_state", sa.LargeBinary(), nullable=False),
)

# The released figures of each scheduled pack run, kept for listing and month-on-month comparison.
archived_results = sa.Table(
    "archived_results",
    gateway_metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("pack", sa.String(32), nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False, unique=True),
    sa.Column("schedule_id", sa.String(32), nullable=True),
    sa.Column("figures_json", sa.Text(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_archived_results_pack_period", "pack", "period"),
)

audit_simple = sa.Table(
    "audit_simple",
    gateway_metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("entry_json", sa.Text(), nullable=False),
)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers proceed while the ledger writes; FULL makes a commit survive power loss,
        # which the audit log's "durable before the response" promise needs.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Switching a new file to WAL needs a moment of exclusive access and can answer "locked" at once,
        # without waiting, when several processes open it together: retry briefly.
        for attempt in range(50):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_engine(url: str) -> sa.Engine:
    """An engine for the gateway's database, configured for durability and concurrent writers.

    SQLite: WAL, synchronous=FULL, a busy timeout and foreign keys, set on every new connection; the
    file's directory is created. An in-memory SQLite database is shared by all threads of the engine.
    PostgreSQL (and anything else): a plain pool that checks connections before use.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if in_memory:
        engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config() -> AlembicConfig:
    """An Alembic configuration for the gateway's migrations, wherever the package is installed.

    Put an open connection in `config.attributes["connection"]` before running a command with it.
    """
    from alembic.config import Config

    config = Config()
    # The path goes through ConfigParser interpolation, where a literal "%" must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def migrate(engine: sa.Engine) -> None:
    """Upgrade the database to the newest Alembic revision; safe to call at every start.

    Concurrent callers (a gateway starting while `fedgate users create` runs) are serialised: SQLite by
    an immediate write transaction around the whole upgrade, PostgreSQL by a transaction-scoped
    advisory lock.
    """
    from alembic import command

    config = alembic_config()
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.begin()
            if connection.dialect.name == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
