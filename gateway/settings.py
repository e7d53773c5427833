"""The gateway's settings: one pydantic-settings class read from `FEDGATE_*` environment variables.

Settings are built in the cached `get_settings()` dependency, never at import, so tests construct
`GatewaySettings(...)` explicitly or override the dependency. `check_production()` is called at start and
refuses a production gateway without TLS, with demo keys, or with an unset or placeholder secret.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from pathlib import Path
from typing import Literal

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["DEMO_MARKER", "GatewaySettings", "SettingsError", "get_settings"]

# The marker file `connectors.synth.keys` writes beside every demo key. Spelled out here rather than
# imported: that package also generates the federation keyring, which the gateway must never load.
DEMO_MARKER = "DEMO-KEYS-DO-NOT-USE-IN-PRODUCTION"

# Passwords copied from examples and compose files; a production database must not be opened with them.
PLACEHOLDER_PASSWORDS = frozenset({"changethis", "changeme", "change-me", "password", "secret", "example"})

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

log = structlog.get_logger(__name__)


class SettingsError(Exception):
    """The settings cannot be used as they are; the message lists every problem and how to fix it."""


class GatewaySettings(BaseSettings):
    """Everything the gateway process is configured with; each field is `FEDGATE_<FIELD NAME>`."""

    # No env_file: configuration comes from the environment or from explicit arguments, so a stray
    # `.env` in the working directory can never change what a test or a production process sees.
    # hide_input_in_errors: a refused value may be a URL with a password; errors name the field only.
    model_config = SettingsConfigDict(
        env_prefix="FEDGATE_", extra="ignore", validate_default=True, hide_input_in_errors=True
    )

    mode: Literal["development", "production"] = "development"
    state_dir: Path = Field(Path(".fedgate"), description="where the default SQLite database lives")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the gateway's own database; unset: SQLite under state_dir"
    )
    host: str = "127.0.0.1"
    port: int = Field(8700, ge=1, le=65535)

    signing_key_file: Path | None = Field(
        None, description="the gateway's Ed25519 private key (PEM) that signs requests to connectors"
    )
    tls_cert_file: Path | None = Field(None, description="certificate the gateway presents (PEM)")
    tls_key_file: Path | None = Field(None, description="private key of tls_cert_file (PEM)")
    tls_client_ca_file: Path | None = Field(
        None, description="CA bundle for mutual TLS with connectors: verifies the connectors' certificates"
    )
    connector_timeout_seconds: float = Field(60, gt=0, le=3600)
    audit_key_file: Path | None = Field(
        None,
        description="the audit log's note signing key (PRIVATE+KEY+...); unset in development: generated",
    )
    audit_origin: str = Field(
        "fedgate-gateway", pattern=r"^[A-Za-z0-9._/-]{1,64}$", description="checkpoint origin"
    )
    checkpoint_every_entries: int = Field(256, ge=1, le=1_000_000)
    checkpoint_every_seconds: float = Field(30.0, gt=0, le=86_400)
    token_epoch: int = Field(
        1,
        ge=0,
        description="the federation key epoch connectors tokenise under (public; the secret is not here)",
    )

    data_year_epsilon: Decimal = Field(
        Decimal(10),
        gt=0,
        description="federation epsilon per data year, for its lifetime: every query that reads a month of "
        "the year is charged to it, whenever it runs",
    )
    default_analyst_quota: Decimal | None = Field(
        Decimal(10),
        ge=0,
        description="one analyst's epsilon per data year (lifetime); unset: only the federation cap",
    )
    # Budgets used to follow the calendar year a query ran in; a deployment still setting those caps
    # would silently get the per-data-year default instead, so they are refused with the new name.
    window_epsilon: str | None = Field(None, description="removed: use FEDGATE_DATA_YEAR_EPSILON")
    multi_year_epsilon: str | None = Field(None, description="removed: no cap by query date remains")
    max_body_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="largest request body accepted (413 above it, before authentication and parsing)",
    )
    max_concurrent_runs_per_analyst: int = Field(
        2, ge=1, le=64, description="runs (queries, indicators, packs) one analyst may have in progress"
    )
    job_workers: int = Field(
        2, ge=1, le=32, description="jobs (queries, indicators, packs) the gateway process runs at once"
    )
    max_queued_jobs_per_analyst: int = Field(
        10, ge=1, le=1000, description="jobs one analyst may have queued or running (429 past it)"
    )
    schedules_enabled: bool = Field(
        True,
        description="run the monthly schedules in this process (off: a systemd timer or CronJob runs them)",
    )
    schedule_timezone: str = Field(
        "Asia/Shanghai", description="the time zone of every schedule's cron fields and of 'previous month'"
    )
    schedule_grace_seconds: int = Field(
        6 * 3600,
        ge=1,
        le=31 * 86_400,
        description="a run missed while the gateway was down still runs at start within this time; "
        "later, it is reported as missed (audited, shown in the schedule's status)",
    )
    monitoring_config_file: Path | None = Field(
        None,
        description="the monitoring configuration (YAML) the indicators are built from; read at start "
        "and stored as a new version when it changed",
    )
    metrics_enabled: bool = True
    console_idle_minutes: int = Field(
        30, ge=1, le=24 * 60, description="a console session unused this long is signed out"
    )
    console_session_hours: int = Field(
        12, ge=1, le=7 * 24, description="a console session ends this long after sign-in, used or not"
    )

    engine: Literal["polars", "spark"] = Field(
        "polars", description="where the token join and exact per-cell aggregation run (docs/deployment.md)"
    )
    engine_memory_mb: int = Field(
        2048,
        ge=1,
        le=1024 * 1024,
        description="Polars: extracts held in memory up to this size; beyond it the join is bucketed by "
        "token prefix and spilled to disk, each bucket's working set near a quarter of it",
    )
    engine_spill_dir: Path | None = Field(
        None,
        description="Polars: where bucket files are spilled (one private directory per run); unset: "
        "state_dir/spill",
    )
    spark_master: str = Field(
        "local[2]", description="Spark: the master URL (spark://host:7077, k8s://..., yarn, local[N])"
    )
    spark_staging_dir: Path | None = Field(
        None,
        description="Spark: where a run stages its extracts as Parquet, on storage every executor reads "
        "(one directory per run, deleted after the release); unset: state_dir/spark-staging",
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: object) -> object:
        # `FEDGATE_DATABASE_URL=` (set but empty) in a unit file means "the default", not an invalid URL.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _parseable_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                make_url(value)
            except ArgumentError:
                # The URL may hold a password: name the problem, not the value.
                raise ValueError(
                    "not a SQLAlchemy URL; expected e.g. postgresql+psycopg://user:password@host:5432/fedgate"
                ) from None
        return value

    @model_validator(mode="after")
    def _caps_consistent(self) -> GatewaySettings:
        if self.window_epsilon is not None or self.multi_year_epsilon is not None:
            raise ValueError(
                "FEDGATE_WINDOW_EPSILON and FEDGATE_MULTI_YEAR_EPSILON are gone: budgets are per data year "
                "for the year's lifetime; set FEDGATE_DATA_YEAR_EPSILON (default 10) and unset them"
            )
        if self.default_analyst_quota is not None and self.default_analyst_quota > self.data_year_epsilon:
            raise ValueError(
                f"default_analyst_quota ({self.default_analyst_quota}) exceeds data_year_epsilon "
                f"({self.data_year_epsilon}); no analyst can spend more than the whole federation"
            )
        return self

    def database_url_resolved(self) -> str:
        """The database URL to connect to: the configured one, or the SQLite file under `state_dir`."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{(self.state_dir / 'gateway.sqlite3').resolve()}"

    def check_production(self) -> None:
        """Refuse settings a production gateway must not run with; in development, only warn.

        Raises `SettingsError` listing every problem at once, so an operator fixes them in one pass.
        """
        if self.mode != "production":
            if self.host not in LOOPBACK_HOSTS:
                log.warning("development mode on a non-loopback address: no TLS is enforced", host=self.host)
            return
        problems = [*self._tls_problems(), *self._signing_key_problems(), *self._database_problems()]
        problems += self._demo_key_problems()
        if problems:
            raise SettingsError(
                "production mode refuses to start:\n"
                + "\n".join(f"  - {p}" for p in problems)
                + "\n(set FEDGATE_MODE=development only for local work on loopback)"
            )

    def _tls_problems(self) -> list[str]:
        problems = []
        for field, path in (
            ("tls_cert_file", self.tls_cert_file),
            ("tls_key_file", self.tls_key_file),
            ("tls_client_ca_file", self.tls_client_ca_file),
        ):
            variable = f"FEDGATE_{field.upper()}"
            if path is None:
                problems.append(
                    f"{variable} is unset: production serves and calls connectors over mutual TLS"
                )
            elif not path.is_file():
                problems.append(f"{variable} points to {path}, which is not a file")
        return problems

    def _signing_key_problems(self) -> list[str]:
        path = self.signing_key_file
        if path is None:
            return ["FEDGATE_SIGNING_KEY_FILE is unset: connectors only serve requests the gateway signs"]
        if not path.is_file():
            return [f"FEDGATE_SIGNING_KEY_FILE points to {path}, which is not a file"]
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError):
            return [f"FEDGATE_SIGNING_KEY_FILE ({path}) is not an unencrypted PEM private key"]
        if not isinstance(key, Ed25519PrivateKey):
            return [f"FEDGATE_SIGNING_KEY_FILE ({path}) is not an Ed25519 key"]
        return []

    def _demo_key_problems(self) -> list[str]:
        problems = []
        for path in (self.signing_key_file, self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file):
            if path is not None and (path.parent / DEMO_MARKER).exists():
                problems.append(
                    f"{path} is a demo key ({path.parent} holds {DEMO_MARKER}); generate production keys"
                )
        return problems

    def _database_problems(self) -> list[str]:
        if self.database_url is None:
            return []
        password = make_url(self.database_url).password
        if password is not None and str(password).lower() in PLACEHOLDER_PASSWORDS:
            return ["FEDGATE_DATABASE_URL uses a placeholder password; set a generated one"]
        return []


@functools.lru_cache(maxsize=1)
def get_settings() -> GatewaySettings:
    """The process's settings, read once from the environment (tests call `get_settings.cache_clear()`)."""
    return GatewaySettings()
