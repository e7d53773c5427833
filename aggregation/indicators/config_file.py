"""The monitoring configuration as a file the operator owns: YAML (or JSON) in, `MonitoringConfig` out.

    load_monitoring_config(path)     read and validate a file; errors name the file and every bad key
    parse_monitoring_config(doc)     the same for a document already parsed (an upload)
    config_digest(config)            SHA-256 of the canonical JSON: what a stored version is known by
    configured_pack(pack, config)    the pack with the configuration's epsilon split, if it gives one

Only the file's shape is checked here (types, bounds in order, edges increasing, the pack's split naming
the pack's own indicators); whether its datasets, measures and dimensions exist is the catalog's question
(`aggregation.indicators.catalog_check`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from aggregation.indicators.model import MonitoringConfig
from aggregation.indicators.pack import MONTHLY, Pack
from connectors.protocol import canonical_json, sha256_hex

__all__ = [
    "MonitoringConfigError",
    "config_digest",
    "configured_pack",
    "load_monitoring_config",
    "parse_monitoring_config",
]


class MonitoringConfigError(ValueError):
    """A monitoring configuration that cannot be used; `problems` holds (field, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        self.field = problems[0][0] if problems else ""
        lines = "; ".join(f"{f or '(top level)'}: {m}" for f, m in problems)
        super().__init__(f"{source}: {lines}")


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def parse_monitoring_config(doc: Any, *, source: str = "the monitoring configuration") -> MonitoringConfig:
    """Validate a parsed document; raises `MonitoringConfigError` naming each offending key."""
    if not isinstance(doc, Mapping):
        raise MonitoringConfigError(source, [("", "expected a mapping of settings at the top level")])
    try:
        config = MonitoringConfig.model_validate(doc)
    except ValidationError as exc:
        problems = [(_field(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise MonitoringConfigError(source, problems) from None
    if config.pack_shares is not None:
        members = [m.indicator.name for m in MONTHLY.members]
        if set(config.pack_shares) != set(members):
            raise MonitoringConfigError(
                source,
                [
                    (
                        "pack_shares",
                        f"give a share for each indicator of the pack, exactly: {', '.join(members)}",
                    )
                ],
            )
    return config


def load_monitoring_config(path: Path) -> MonitoringConfig:
    """Read a YAML (or JSON) monitoring configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MonitoringConfigError(str(path), [("", f"cannot be read ({exc.strerror or exc})")]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise MonitoringConfigError(str(path), [("", f"is not valid YAML{where}")]) from None
    return parse_monitoring_config(doc, source=str(path))


def config_digest(config: MonitoringConfig) -> str:
    """SHA-256 of the configuration's canonical JSON (RFC 8785)."""
    return sha256_hex(canonical_json(config.model_dump(mode="json")))


def configured_pack(pack: Pack, config: MonitoringConfig) -> Pack:
    """`pack` with its members' weights from `config.pack_shares` (the pack's own split without them)."""
    if config.pack_shares is None or pack.name != MONTHLY.name:
        return pack
    shares = config.pack_shares
    return dataclasses.replace(
        pack, members=tuple(dataclasses.replace(m, weight=shares[m.indicator.name]) for m in pack.members)
    )
