"""A whole federation on loopback: a synthetic county, five connectors and the gateway, for the demo,
the end-to-end tests and the benchmarks.

Tax lives in PostgreSQL and social insurance in MariaDB when their URLs are given; every component is
its own uvicorn process; principals are created on the gateway's database as the operator would
(`fedgate users create`), and connectors are allowed, registered under their pinned key fingerprints and
pre-approved through the gateway's HTTP API exactly as the departments would do it. The gateway reads the
county's monitoring configuration (`monitoring.yaml`) at start, as an operator's deployment would
(`FEDGATE_MONITORING_CONFIG_FILE`). The connectors are whatever the county's `connectors/` directory holds,
so a county generated under another layout (other connector names) starts the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregation.indicators.config_file import load_monitoring_config
from connectors.config import load_config
from connectors.process import RunningConnector, start_connector
from connectors.protocol import (
    ApprovedDataset,
    ConnectorSchema,
    WindowLimits,
    fingerprint,
    load_private_key,
    private_key_pem,
    public_key_text,
)
from connectors.synth import generate_county
from gateway import db
from gateway.approval_plan import own_schema
from gateway.auth import Role, create_principal
from gateway.client import GatewayClient
from gateway.dev.process import start_gateway
from gateway.dev.seed_groups import registrations

CONNECTORS = ("register", "tax", "social", "utility", "civil")
"""the connectors of the standard layout; `connector_names` reads those of any generated county"""


def connector_names(county: Path) -> list[str]:
    """The county's connectors, the household register first (named by their configuration files)."""
    names = sorted(p.stem for p in (county / "connectors").glob("*.yaml"))
    registers = [
        n
        for n in names
        if any(
            d.household is not None for d in load_config(county / "connectors" / f"{n}.yaml").config.datasets
        )
    ]
    return registers + [n for n in names if n not in registers]


@dataclass
class Federation:
    root: Path
    county: Path
    gateway: RunningConnector
    connectors: dict[str, RunningConnector]
    keys: dict[str, str]
    database_url: str
    processes: list[RunningConnector] = field(default_factory=list)
    analyst_keys: dict[str, bytes] = field(default_factory=dict)
    """each analyst's own private key (PEM), generated here as on the analyst's machine"""

    def client(self, who: str) -> GatewayClient:
        """A client for `who`; an analyst's client signs every query with the analyst's own key."""
        return GatewayClient(self.gateway.url, self.keys[who], analyst_key=self.analyst_keys.get(who))

    def analyst_fingerprint(self, who: str) -> str:
        return fingerprint(load_private_key(self.analyst_keys[who]).public_key())

    def truth(self) -> dict[str, Any]:
        return json.loads((self.county / "truth.json").read_text())

    def approval_key(self, department: str) -> bytes:
        return (self.county / "keys" / f"{department}-approval.key").read_bytes()

    def admin_key(self, department: str) -> str:
        """The department admin key of the department's connectors (their `/v1/admin/schema`, quality)."""
        return (self.county / "keys" / f"{department}-admin.key").read_text(encoding="ascii").strip()

    def schemas(self, department: str) -> list[ConnectorSchema]:
        """The department's own schemas, fetched from its connectors with its admin key, as
        `fedgate approve` does before it signs."""
        found = []
        for name, conn in self.connectors.items():
            cfg = load_config(self.county / "connectors" / f"{name}.yaml").config
            if cfg.department == department:
                found.append(own_schema(conn.url, self.admin_key(department)))
        return found

    def approve_args(self, department: str) -> list[str]:
        """`fedgate approve` options naming the department's own connectors and its admin key file."""
        args = []
        for name, conn in self.connectors.items():
            if load_config(self.county / "connectors" / f"{name}.yaml").config.department == department:
                args += ["--connector", conn.url]
        admin = self.county / "keys" / f"{department}-admin.key"
        return [*args, "--connector-admin-key-file", str(admin)]

    def approve(self, who: str, query_id: str, department: str) -> Any:
        """`who` approves `query_id` for `department`, planned against that department's own schemas."""
        with self.client(who) as admin:
            return admin.approve(
                query_id, self.approval_key(department), department, schemas=self.schemas(department)
            )

    def stop(self) -> None:
        for p in [self.gateway, *self.connectors.values()]:
            p.stop()


def register_everything(
    fed: Federation,
    *,
    rules: bool = True,
    max_epsilon: Decimal | None = None,
    household_only: bool = False,
    analysts: tuple[str, ...] = ("analyst",),
    groups: bool = True,
) -> None:
    """Allow every connector's endpoint, register it under its pinned key, register each analyst's
    own public key, sign a pre-approval rule with each department's (demo) key covering its datasets for
    `analysts` (named here, written into the rule as their key fingerprints; "*" for every analyst), and
    (`groups`) register the key groups of the county's monitoring configuration as the operator."""
    with fed.client("operator") as operator:
        for conn in fed.connectors.values():
            operator.allow_endpoint(conn.url)
        for who, pem in fed.analyst_keys.items():
            operator.register_analyst_key(who, public_key_text(load_private_key(pem).public_key()))
    named = tuple(a if a == "*" else fed.analyst_fingerprint(a) for a in analysts)
    for name, conn in fed.connectors.items():
        cfg = load_config(fed.county / "connectors" / f"{name}.yaml").config
        pinned = fingerprint(load_private_key(cfg.signing_key_file.read_bytes()).public_key())
        with fed.client(name) as admin:
            admin.register_connector(name, conn.url, pinned)
            if not rules:
                continue
            schema = next(c for c in admin.catalog()["connectors"] if c["connector"] == name)
            scopes = [
                ApprovedDataset(
                    dataset=d["name"],
                    measures=tuple(m["name"] for m in d["measures"]),
                    dimensions=tuple(
                        x["name"] for x in d["dimensions"] if x["household_level"] or not household_only
                    ),
                    household=d["household_mapping"],
                )
                for d in schema["datasets"]
            ]
            epsilon = max_epsilon or cfg.policy.max_epsilon_per_query
            admin.register_rule(
                fed.approval_key(cfg.department),
                department=cfg.department,
                rule_id=f"{name}-tests",
                datasets=scopes,
                units=("household",) if household_only else ("household", "person"),
                max_epsilon_per_query=epsilon,
                # Generous enough for a test session; the limits are tested on their own.
                window=WindowLimits(
                    max_queries=10_000, max_epsilon=max(cfg.policy.max_epsilon_per_window, epsilon)
                ),
                per_analyst=None
                if "*" in analysts
                else WindowLimits(max_queries=10_000, max_epsilon=cfg.policy.max_epsilon_per_window),
                analysts=named,
            )
    if groups:
        config = load_monitoring_config(fed.county / "monitoring.yaml")
        with fed.client("operator") as operator:
            for group in registrations(config.key_groups):
                operator.register_group(group)


def start_federation(
    root: Path,
    *,
    persons: int = 3_000,
    tax_url: str | None = None,
    social_url: str | None = None,
    gateway_db_url: str | None = None,
    env: dict[str, str] | None = None,
    county: Path | None = None,
    seed: int = 3,
    layout: str = "standard",
    monitoring: bool = True,
) -> Federation:
    """Start everything (generating a county under `root`, named as `layout` says, unless one is given);
    stop it with `stop()`. With `monitoring` the gateway starts with the county's monitoring
    configuration; without, none is loaded until the operator sets one."""
    if county is None:
        county = root / "county"
        generate_county(
            county, persons=persons, seed=seed, tax_url=tax_url, social_url=social_url, layout=layout
        )
    running = {}
    names = connector_names(county)
    monitoring_file = county / "monitoring.yaml"
    if monitoring and monitoring_file.exists():
        env = {"FEDGATE_MONITORING_CONFIG_FILE": str(monitoring_file), **(env or {})}
    try:
        for name in names:
            running[name] = start_connector(county / "connectors" / f"{name}.yaml", log_dir=root / "logs")
        state = root / "gateway"
        state.mkdir(parents=True, exist_ok=True)
        url = gateway_db_url or f"sqlite:///{state / 'gateway.sqlite3'}"
        engine = db.make_engine(url)
        db.migrate(engine)
        keys = {}
        for role, name, dept in [
            (Role.OPERATOR, "operator", None),
            (Role.ANALYST, "analyst", None),
            (Role.ANALYST, "other-analyst", None),
            (Role.AUDITOR, "auditor", None),
            *[(Role.DEPARTMENT_ADMIN, n, n) for n in names],
        ]:
            _, keys[name] = create_principal(engine, role=role, name=name, department=dept, expires_days=30)
        engine.dispose()
        gateway = start_gateway(
            state,
            signing_key_file=county / "keys" / "gateway.key",
            audit_key_file=county / "keys" / "audit.key",
            database_url=gateway_db_url,
            env=env,
        )
    except BaseException:
        for p in running.values():
            p.stop()
        raise
    return Federation(
        root=root,
        county=county,
        gateway=gateway,
        connectors=running,
        keys=keys,
        database_url=url,
        analyst_keys=_analyst_keys(root, ("analyst", "other-analyst")),
    )


def _analyst_keys(root: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """Each analyst's own key, made once per federation directory (as `fedgate analysts keygen` would)."""
    directory = root / "analysts"
    directory.mkdir(parents=True, exist_ok=True)
    keys = {}
    for name in names:
        path = directory / f"{name}.key"
        if not path.exists():
            path.write_bytes(private_key_pem(Ed25519PrivateKey.generate()))
            path.chmod(0o600)
        keys[name] = path.read_bytes()
    return keys
