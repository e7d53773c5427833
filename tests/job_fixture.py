"""A small synthetic county in process for the jobs and schedules tests: five connector apps behind an
httpx transport, the gateway app behind a test client, its job pool and (when started) its scheduler
running real threads against a real SQLite database.

`slow` connectors answer extracts only after a pause, so a test can watch a job mid-run or cancel it.

Each analyst has a key of their own, and their client signs every query it submits with it. The
departments' rules are `"*"` rules (the synthetic county accepts them): jobs and schedules run packs,
whose queries the gateway builds and no analyst signs. `sign_rules` narrows them to named analysts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from connectors.config import load_config
from connectors.protocol import fingerprint, load_private_key, private_key_pem
from connectors.service import build_service
from connectors.service import create_app as create_connector_app
from gateway.app import build_context, create_app
from gateway.auth import Role, create_principal
from gateway.client import GatewayClient
from gateway.context import GatewayContext
from gateway.dev.localfed import CONNECTORS, register_everything
from gateway.settings import GatewaySettings


class Connectors(httpx.BaseTransport):
    """Calls to `http://<connector>.fed.test` reach that connector's app; with `hold` set, calls to
    `hold_path` wait until it is cleared (a run stays mid-way for as long as a test needs), and `held`
    says one is waiting."""

    def __init__(self, apps: dict[str, TestClient]) -> None:
        self.apps = apps
        self.hold = threading.Event()
        self.held = threading.Event()
        self.hold_path = "/v1/extract"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host.split(".")[0]
        if request.url.path == self.hold_path and self.hold.is_set():
            self.held.set()
            while self.hold.is_set():
                time.sleep(0.02)
        r = self.apps[name].request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)


class Through(httpx.BaseTransport):
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)


@dataclass
class Fed:
    county: Path
    ctx: GatewayContext
    http: TestClient
    keys: dict[str, str]
    connectors: dict[str, SimpleNamespace]
    transport: Connectors
    analyst_keys: dict[str, bytes]
    """each analyst's own private key (PEM)"""
    stops: list[Callable[[], None]] = field(default_factory=list)

    def client(self, who: str) -> GatewayClient:
        """A client for `who`; an analyst's client signs every query with the analyst's own key."""
        return GatewayClient(
            "http://testserver",
            self.keys[who],
            transport=Through(self.http),
            analyst_key=self.analyst_keys.get(who),
        )

    def analyst_fingerprint(self, who: str) -> str:
        return fingerprint(load_private_key(self.analyst_keys[who]).public_key())

    def sign_rules(self, analysts: tuple[str, ...]) -> None:
        """Each department signs a new version of its rule, admitting `analysts` only (named by their key
        fingerprints): the gateway's unsigned pack queries then wait for approvals, as do other analysts'."""
        register_everything(self, groups=False, analysts=analysts)  # type: ignore[arg-type]

    def approval_key(self, department: str) -> bytes:
        return (self.county / "keys" / f"{department}-approval.key").read_bytes()

    def as_(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[who]}"}

    def events(self, action: str) -> list[dict[str, Any]]:
        return [e.event for e in self.ctx.audit.log.filter(action=action, limit=1000)]

    def wait_for(self, job_id: str, states: tuple[str, ...], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/v1/jobs/{job_id}", headers=self.as_("operator")).json()
            if job["state"] in states:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} is still {job['state']} after {timeout} s")

    def close(self) -> None:
        for stop in self.stops:
            stop()
        self.ctx.stop_jobs()
        self.ctx.engine.dispose()


def settings(state: Path, county: Path, **changes: Any) -> GatewaySettings:
    return GatewaySettings(
        state_dir=state,
        signing_key_file=county / "keys" / "gateway.key",
        audit_key_file=county / "keys" / "audit.key",
        data_year_epsilon=Decimal(20),
        default_analyst_quota=Decimal(10),
        monitoring_config_file=county / "monitoring.yaml",
        **changes,
    )


def connector_transport(county: Path, tmp_path: Path) -> Connectors:
    apps = {}
    for name in CONNECTORS:
        loaded = load_config(county / "connectors" / f"{name}.yaml")
        config = loaded.config.model_copy(update={"state_dir": tmp_path / "connector-state" / name})
        apps[name] = TestClient(
            create_connector_app(build_service(loaded.model_copy(update={"config": config})))
        )
    return Connectors(apps)


def analyst_keys(tmp_path: Path, names: tuple[str, ...] = ("analyst", "other-analyst")) -> dict[str, bytes]:
    """Each analyst's own key, made once under `tmp_path` (a restarted gateway's analysts keep theirs)."""
    directory = tmp_path / "analysts"
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / f"{name}.key"
        if not path.exists():
            path.write_bytes(private_key_pem(Ed25519PrivateKey.generate()))
    return {name: (directory / f"{name}.key").read_bytes() for name in names}


def start(
    county: Path,
    tmp_path: Path,
    *,
    transport: Connectors | None = None,
    register: bool = True,
    **changes: Any,
) -> Fed:
    """The gateway on `tmp_path/gateway` (made anew, or reopened when it exists: a restart)."""
    transport = transport or connector_transport(county, tmp_path)
    state = tmp_path / "gateway"
    fresh = not (state / "gateway.sqlite3").exists()
    ctx = build_context(settings(state, county, **changes))
    ctx.transport = transport
    keys: dict[str, str] = {}
    if fresh:
        for role, name, dept in [
            (Role.OPERATOR, "operator", None),
            (Role.ANALYST, "analyst", None),
            (Role.ANALYST, "other-analyst", None),
            (Role.AUDITOR, "auditor", None),
            *[(Role.DEPARTMENT_ADMIN, n, n) for n in CONNECTORS],
        ]:
            _, keys[name] = create_principal(ctx.engine, role=role, name=name, department=dept)
        (tmp_path / "keys.txt").write_text("\n".join(f"{k} {v}" for k, v in keys.items()))
    else:
        keys = dict(line.split(" ", 1) for line in (tmp_path / "keys.txt").read_text().splitlines())
    http = TestClient(create_app(ctx), raise_server_exceptions=False)
    urls = {n: SimpleNamespace(url=f"http://{n}.fed.test") for n in CONNECTORS}
    fed = Fed(county, ctx, http, keys, urls, transport, analyst_keys(tmp_path))
    if fresh and register:
        # Packs carry no analyst's signature: only rules for every analyst admit them.
        register_everything(fed, groups=False, analysts=("*",))  # type: ignore[arg-type]
    return fed
