"""`fedgate approve` signs what the department's own plan of the query needs, never the gateway's word.

A fake gateway (a real HTTP server on loopback) shows a count of households by village and reports the
register's scope as six fields (every dimension and measure of the dataset, and the household mapping):
the command plans the query against the register's own connector schema (fetched from the connector with
the department admin key), refuses with a non-zero exit, and the approval key signs nothing. When the
gateway reports exactly the plan, the scope shown is the scope signed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from connector_fixture import Department, make_department
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from connectors.process import RunningConnector, start_connector
from connectors.protocol import ApprovedDataset, SignedApproval, private_key_pem, verify_approval
from connectors.query import QuerySpec, Statistic, StatisticKind
from connectors.vocabulary import Unit
from gateway.approval_plan import ScopeRefused, own_schema, planned_approval
from gateway.cli.main import app


@dataclass
class FakeGateway:
    """Shows one query and reports whatever scope it is told to; keeps every approval posted to it."""

    view: dict[str, Any]
    posted: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.get("/v1/me")
        def me() -> dict[str, Any]:
            return {"name": "register-admin", "role": "department_admin", "department": "register"}

        @api.get("/v1/queries")
        def queries() -> dict[str, Any]:
            return {"queries": [self.view]}

        @api.get("/v1/queries/{query_id}")
        def query(query_id: str) -> dict[str, Any]:
            return self.view

        @api.post("/v1/queries/{query_id}/approvals")
        async def approvals(query_id: str, request: Request) -> dict[str, Any]:
            self.posted.append(await request.json())
            return {**self.view, "state": "approved"}

        return api


@pytest.fixture(scope="module")
def register(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Department, RunningConnector]]:
    """The register's connector: its dataset maps persons to households; `district` is a household
    attribute (the village of this small county)."""
    dept = make_department(tmp_path_factory.mktemp("register"), "csv", name="register")
    csv = dept.directory / "files" / "wages.csv"
    lines = csv.read_text().splitlines()
    csv.write_text(
        "\n".join([lines[0] + ",hh", *(f"{row},H{i % 3}" for i, row in enumerate(lines[1:]))]) + "\n"
    )
    cfg = yaml.safe_load(dept.config_path.read_text())
    cfg["datasets"][0]["household"] = {"column": "hh"}
    cfg["datasets"][0]["dimensions"][0]["household_level"] = True
    dept.config_path.write_text(yaml.safe_dump(cfg))
    conn = start_connector(dept.config_path)
    yield dept, conn
    conn.stop()


def _count_by_village() -> QuerySpec:
    return QuerySpec(
        purpose="Households by village for the monthly monitoring report",
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        group_by=("register.wages.district",),
        statistics=(Statistic(kind=StatisticKind.COUNT),),
        epsilon=Decimal("0.5"),
    )


SIX_FIELDS = ApprovedDataset(
    dataset="wages",
    measures=("wage_income", "months_paid"),
    dimensions=("district", "sex", "birth_year_band"),
    household=True,
)
PLANNED = ApprovedDataset(dataset="wages", dimensions=("district",), household=True)


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    spec = _count_by_village()
    fake = FakeGateway(
        view={
            "id": spec.query_id,
            "digest": spec.digest,
            "spec": spec.model_dump(mode="json"),
            "state": "submitted",
            "analyst": "ana",
            "departments": ["register"],
            "required_approvals": {"register": [SIX_FIELDS.model_dump(mode="json")]},
            "covered_by": {},
            "decisions": [],
        }
    )
    server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the fake gateway did not start"
        time.sleep(0.05)
    fake.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    yield fake
    server.should_exit = True
    thread.join(timeout=10)


def _approve(tmp_path: Path, dept: Department, conn: RunningConnector, fake: FakeGateway, *extra: str) -> Any:
    key = tmp_path / "register-approval.key"
    key.write_bytes(private_key_pem(dept.approval_key))
    admin = tmp_path / "register-admin.key"
    admin.write_text(dept.admin_key)
    args = ["approve", "--key", str(key), "--connector", conn.url, "--connector-admin-key-file", str(admin)]
    env = {"FEDGATE_URL": fake.url, "FEDGATE_API_KEY": "fgk_fake"}
    return CliRunner().invoke(app, [*args, *extra], env=env)


def test_a_wider_scope_than_the_plan_is_refused_and_nothing_is_signed(
    tmp_path: Path, register: tuple[Department, RunningConnector], gateway: FakeGateway
) -> None:
    dept, conn = register
    result = _approve(tmp_path, dept, conn, gateway, gateway.view["id"], "--yes")
    assert result.exit_code == 1, result.output
    assert "wider than this query needs" in result.output
    assert "dimension birth_year_band" in result.output and "dimension sex" in result.output
    assert gateway.posted == []  # the approval key signed nothing
    # The batch refuses the same way, before signing anything.
    batch = _approve(tmp_path, dept, conn, gateway, "--pending", "--yes")
    assert batch.exit_code == 1 and "wider than this query needs" in batch.output
    assert gateway.posted == []


def test_the_planned_scope_is_shown_and_exactly_it_is_signed(
    tmp_path: Path, register: tuple[Department, RunningConnector], gateway: FakeGateway
) -> None:
    dept, conn = register
    gateway.view["required_approvals"] = {"register": [PLANNED.model_dump(mode="json")]}
    # Without --yes the admin is asked; declining signs nothing.
    declined = _approve(tmp_path, dept, conn, gateway, gateway.view["id"])
    assert declined.exit_code == 1 and gateway.posted == []
    result = _approve(tmp_path, dept, conn, gateway, gateway.view["id"], "--yes")
    assert result.exit_code == 0, result.output
    for shown in ("Households by village", "2025-01", "dimension district", "household mapping", "0.5"):
        assert shown in result.output, shown
    assert "expires" in result.output
    (posted,) = gateway.posted
    approval = verify_approval(dept.approval_key.public_key(), SignedApproval.model_validate(posted))
    assert approval.datasets == (PLANNED,)
    assert approval.query_digest == _count_by_village().digest


def test_the_plan_comes_from_the_departments_own_schema(
    register: tuple[Department, RunningConnector],
) -> None:
    dept, conn = register
    schema = own_schema(conn.url, dept.admin_key)
    spec = _count_by_village()
    # The gateway's report may be narrower (the plan is signed) but never wider, nor for another query.
    planned = planned_approval(spec, "register", [schema], [], digest=spec.digest)
    assert planned.approval.datasets == (PLANNED,)
    with pytest.raises(ScopeRefused, match="digest"):
        planned_approval(spec, "register", [schema], [PLANNED], digest="0" * 64)
    with pytest.raises(ScopeRefused, match="does not need"):
        planned_approval(spec, "register", [schema], [ApprovedDataset(dataset="payroll")])
    with pytest.raises(ScopeRefused, match="your connector"):
        planned_approval(spec, "register", [], [PLANNED])  # without the department's own schema
    # Only the department admin key reads the schema from the connector.
    with pytest.raises(ScopeRefused, match="answered 401"):
        own_schema(conn.url, "not-the-admin-key")
