"""The monitoring configuration in force: stored versions, audited changes, checked against the catalog.

    current(engine) / get(engine, v) / history(engine)   the latest version (None before the first), any
                                                         version, every version
    check(config, catalog)                                None, or `Invalid` naming the first field and
                                                         listing every problem (`indicators.catalog_check`)
    apply(ctx, config, by=, source=)                      a new version when the digest differs from the
                                                         latest (else nothing), committed with its
                                                         `MonitoringConfigChanged` entry
    upload(ctx, doc, by)                                  the operator's route: shape, catalog, key-group
                                                         names, then `apply`
    load_settings_file(ctx)                               `FEDGATE_MONITORING_CONFIG_FILE` at start
    in_force(ctx, catalog)                                what an indicator run is built from (`Conflict`
                                                         when none is loaded, `Invalid` when it no longer
                                                         fits)

A version and its audit entry are one unit (one transaction, `AuditTrail.change`): if the entry cannot be
written the version is not stored either, so the log never misses a configuration indicators were built from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aggregation.indicators.catalog_check import problems
from aggregation.indicators.config_file import (
    MonitoringConfigError,
    config_digest,
    load_monitoring_config,
    parse_monitoring_config,
)
from aggregation.indicators.model import MonitoringConfig
from connectors.protocol import ConnectorSchema, canonical_json
from gateway import db, key_groups
from gateway.context import GatewayContext
from gateway.errors import Conflict, Invalid, NotFound
from gateway.events import MonitoringConfigChanged
from gateway.settings import SettingsError

__all__ = [
    "MonitoringRecord",
    "apply",
    "check",
    "current",
    "get",
    "history",
    "in_force",
    "load_settings_file",
    "upload",
]

_WRITE_ATTEMPTS = 3
_SOURCE_LIMIT = 512


@dataclass(frozen=True)
class MonitoringRecord:
    version: int
    config: MonitoringConfig
    digest: str
    source: str
    created_by: str
    created_at: datetime


def _record(row: sa.Row[Any]) -> MonitoringRecord:
    return MonitoringRecord(
        version=row.version,
        config=MonitoringConfig.model_validate_json(row.config_json),
        digest=row.config_digest,
        source=row.source,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def current(engine: sa.Engine) -> MonitoringRecord | None:
    t = db.monitoring_configs
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).order_by(t.c.version.desc()).limit(1)).first()
    return _record(row) if row is not None else None


def get(engine: sa.Engine, version: int) -> MonitoringRecord:
    t = db.monitoring_configs
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.version == version)).first()
    if row is None:
        raise NotFound(f"the monitoring configuration has no version {version}", "version")
    return _record(row)


def history(engine: sa.Engine) -> list[MonitoringRecord]:
    t = db.monitoring_configs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.version)).all()
    return [_record(r) for r in rows]


def _invalid(exc: MonitoringConfigError, prefix: str = "") -> Invalid:
    listed = "; ".join(f"{prefix}{f or '(top level)'}: {m}" for f, m in exc.problems)
    return Invalid(listed, f"{prefix}{exc.field}" or None)


def check(config: MonitoringConfig, catalog: Mapping[str, ConnectorSchema], *, what: str = "") -> None:
    """Return None if the monthly pack can be built from `config` on `catalog`; else 422 naming the first
    offending field and listing every problem."""
    found = problems(config, catalog)
    if found:
        listed = "; ".join(f"{p.field}: {p.message}" for p in found)
        raise Invalid(f"{what}does not fit the catalog: {listed}", found[0].field)


def _check_group_names(engine: sa.Engine, config: MonitoringConfig) -> None:
    """A key-group name keeps one meaning: a configured group may not redefine a registered one."""
    registered = {r.name: r for r in key_groups.list_groups(engine)}
    for i, group in enumerate(config.key_groups):
        other = registered.get(group.definition.name)
        if other is not None and other.definition != group.definition:
            raise Conflict(
                f"the key group {other.name!r} is registered with another definition (version "
                f"{other.version}); give the configured group another name, or register this definition "
                "as a new version of it first",
                f"key_groups.{i}.definition.name",
            )


def apply(
    ctx: GatewayContext, config: MonitoringConfig, *, by: str, source: str
) -> tuple[MonitoringRecord, bool]:
    """Store `config` as the next version unless it is the one in force; returns it and whether it is new.

    The version and its audit entry commit in one transaction; a concurrent writer that took the same
    version number makes this one read again."""
    t = db.monitoring_configs
    digest = config_digest(config)
    source = source[:_SOURCE_LIMIT]
    values = {
        "config_json": canonical_json(config.model_dump(mode="json")).decode(),
        "config_digest": digest,
        "source": source,
        "created_by": by,
        "created_at": db.utcnow(),
    }
    for _ in range(_WRITE_ATTEMPTS):
        latest = current(ctx.engine)
        if latest is not None and latest.digest == digest:
            return latest, False
        version = 1 if latest is None else latest.version + 1
        try:
            with ctx.audit.change() as change:
                change.conn.execute(t.insert().values(version=version, **values))
                change.record(
                    MonitoringConfigChanged(
                        actor=by,
                        version=version,
                        config_digest=digest,
                        source=source,
                        config=config.model_dump(mode="json"),
                    )
                )
        except sa.exc.IntegrityError:
            continue  # a concurrent writer took this version number: read again
        return get(ctx.engine, version), True
    raise Conflict("the monitoring configuration is being changed concurrently; try again")


def upload(
    ctx: GatewayContext, doc: Any, catalog: Mapping[str, ConnectorSchema], *, by: str
) -> tuple[MonitoringRecord, bool]:
    """An operator's new configuration: its shape (422 naming the key), its fit with the catalog (422
    naming the field), its key-group names (409), then stored and audited."""
    try:
        config = parse_monitoring_config(doc)
    except MonitoringConfigError as exc:
        raise _invalid(exc) from None
    check(config, catalog, what="the monitoring configuration ")
    _check_group_names(ctx.engine, config)
    return apply(ctx, config, by=by, source="upload")


def load_settings_file(ctx: GatewayContext) -> MonitoringRecord | None:
    """At start: the file `FEDGATE_MONITORING_CONFIG_FILE` names becomes the version in force if it changed.

    Only its shape is checked here (connectors may register after the gateway starts); runs check it
    against the catalog. A file that cannot be read or validated stops the start."""
    path = ctx.settings.monitoring_config_file
    if path is None:
        return current(ctx.engine)
    try:
        config = load_monitoring_config(path)
    except MonitoringConfigError as exc:
        raise SettingsError(f"FEDGATE_MONITORING_CONFIG_FILE: {exc}") from None
    record, _ = apply(ctx, config, by="settings", source=str(path))
    return record


def in_force(ctx: GatewayContext, catalog: Mapping[str, ConnectorSchema]) -> MonitoringRecord:
    """The configuration an indicator run is built from, checked against the catalog of this run."""
    record = current(ctx.engine)
    if record is None:
        raise Conflict(
            "no monitoring configuration is loaded: the operator sets one with `fedgate indicators "
            "configure FILE` (or FEDGATE_MONITORING_CONFIG_FILE)",
            "monitoring",
        )
    check(record.config, catalog, what=f"the monitoring configuration in force (version {record.version}) ")
    return record
