"""Limits that hold before any work is done: request bodies, the size of a release, bounded numbers on
every route, and concurrent runs per analyst; each refusal leaves the state as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope

from aggregation.limits import MAX_CELLS_X_BINS, bins_of, cells_x_bins
from aggregation.planner import PlanError, plan_query
from aggregation.query import Filter, Measure, QuerySpec, Statistic, StatisticKind, Term
from audit.store import AuditLog
from connectors.body_limit import BodySizeLimit
from connectors.config import EntityKind, Rollup, Unit
from connectors.protocol import (
    ConnectorSchema,
    DatasetSchema,
    DimensionSchema,
    MeasureSchema,
    PolicySchema,
)
from gateway.app import build_context, create_app
from gateway.auth import Role, create_principal
from gateway.context import GatewayContext
from gateway.settings import GatewaySettings

LIMIT = 4096


# --- the body limit alone ---------------------------------------------------------------------------


def _refusal(scope: Scope, limit: int) -> bytes:
    return json.dumps({"error": "too_large", "limit": limit}).encode()


def _echo_app(seen: list[int]) -> BodySizeLimit:
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"length": len(body)})

    app = Starlette(routes=[Route("/", echo, methods=["POST"])])
    return BodySizeLimit(app, max_bytes=LIMIT, refusal=_refusal)


def _chunks(total: int, size: int = 1000) -> Iterator[bytes]:
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


def test_a_body_at_the_limit_passes_and_one_byte_more_is_refused_by_its_length() -> None:
    seen: list[int] = []
    client = TestClient(_echo_app(seen))
    assert client.post("/", content=b"x" * LIMIT).json() == {"length": LIMIT}
    r = client.post("/", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413 and r.json() == {"error": "too_large", "limit": LIMIT}
    assert seen == [LIMIT]  # the refused body never reached the application


def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit() -> None:
    seen: list[int] = []
    client = TestClient(_echo_app(seen))
    r = client.post("/", content=_chunks(LIMIT))
    assert r.status_code == 200 and r.json() == {"length": LIMIT}
    r = client.post("/", content=_chunks(10 * LIMIT))
    assert r.status_code == 413 and r.json()["limit"] == LIMIT
    assert seen == [LIMIT]


def test_a_lying_content_length_does_not_let_a_larger_body_through() -> None:
    seen: list[int] = []
    app = _echo_app(seen)

    async def call() -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []
        chunks = [b"x" * 3000, b"x" * 3000]

        async def receive() -> dict[str, object]:
            body = chunks.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "headers": [(b"content-length", b"10")],
        }
        await app(scope, receive, send)  # type: ignore[arg-type]
        return sent

    import asyncio

    sent = asyncio.run(call())
    assert sent[0]["status"] == 413 and seen == []


# --- the gateway ------------------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[GatewayContext]:
    settings = GatewaySettings(state_dir=tmp_path / "state", max_body_bytes=LIMIT)
    context = build_context(settings)
    yield context
    context.engine.dispose()


def _key(ctx: GatewayContext, role: Role, name: str) -> dict[str, str]:
    department = "tax" if role is Role.DEPARTMENT_ADMIN else None
    _, key = create_principal(ctx.engine, role=role, name=name, department=department)
    return {"authorization": f"Bearer {key}"}


def _audited(ctx: GatewayContext, method: str) -> list[int]:
    log = AuditLog(ctx.engine)
    return [
        int(e.event["status"])
        for e in log.filter(action="http.request", limit=1000)
        if e.event.get("method") == method
    ]


def _huge_query_body() -> bytes:
    # Valid JSON all the way: only its size is wrong.
    return json.dumps({"purpose": "x" * (2 * LIMIT)}).encode()


def test_gateway_refuses_a_large_body_before_authentication_and_audits_the_refusal(
    ctx: GatewayContext,
) -> None:
    client = TestClient(create_app(ctx))
    for headers in ({}, _key(ctx, Role.ANALYST, "ana")):
        r = client.post("/v1/queries", content=_huge_query_body(), headers=headers)
        assert r.status_code == 413
        error = r.json()["error"]
        assert error["code"] == "invalid_request" and error["field"] == "body"
        assert str(LIMIT) in error["message"] and error["request_id"] == r.headers["x-request-id"]
    streamed = client.post("/v1/queries", content=_chunks(3 * LIMIT), headers=_key(ctx, Role.ANALYST, "bo"))
    assert streamed.status_code == 413 and streamed.json()["error"]["field"] == "body"
    assert _audited(ctx, "POST") == [413, 413, 413]
    listed = client.get("/v1/queries", headers=_key(ctx, Role.AUDITOR, "aud")).json()
    assert listed["queries"] == []  # nothing was stored


def test_budget_routes_refuse_epsilon_with_more_than_nine_decimals_and_keep_the_quota(
    ctx: GatewayContext,
) -> None:
    client = TestClient(create_app(ctx))
    operator = _key(ctx, Role.OPERATOR, "op")
    ok = client.put("/v1/budget/quotas/ana", json={"epsilon": "1.5"}, headers=operator)
    assert ok.status_code == 200 and ok.json()["analyst_quota"] == "1.5"
    for epsilon in ("0.1234567891", 1.8948545876487432e-300, "1e-10", "1001"):
        r = client.put("/v1/budget/quotas/ana", json={"epsilon": epsilon}, headers=operator)
        assert r.status_code == 422, epsilon
        assert r.json()["error"]["field"] == "body.epsilon"
    assert ctx.ledger.remaining("ana").analyst_quota == Decimal("1.5")
    admin = _key(ctx, Role.DEPARTMENT_ADMIN, "adm")
    r = client.put("/v1/budget/datasets/tax.wages", json={"epsilon": "0.0000000001"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.epsilon"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"/v1/audit/entries/{2**63}", "path.seq"),
        (f"/v1/audit/entries/{-(2**70)}", "path.seq"),
        (f"/v1/audit/entries?after_seq={2**64}", "query.after_seq"),
        ("/v1/audit/entries?limit=1000000000000", "query.limit"),
        (f"/v1/audit/consistency?from_size=1&to_size={2**63}", "query.to_size"),
        (f"/v1/audit/export?start={2**63}", "query.start"),
        (f"/v1/audit/export?start=1&end={2**80}", "query.end"),
        (f"/v1/groups/dibao?version={2**63}", "query.version"),
    ],
)
def test_numbers_beyond_a_column_are_a_422_naming_the_field(
    ctx: GatewayContext, path: str, field: str
) -> None:
    client = TestClient(create_app(ctx), raise_server_exceptions=False)
    role = Role.ANALYST if path.startswith("/v1/groups") else Role.AUDITOR
    r = client.get(path, headers=_key(ctx, role, "who"))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_an_analyst_past_the_concurrent_run_limit_gets_429_with_the_reason(ctx: GatewayContext) -> None:
    client = TestClient(create_app(ctx))
    headers = _key(ctx, Role.ANALYST, "ana")
    limit = ctx.settings.max_concurrent_runs_per_analyst
    for _ in range(limit):
        ctx.run_slots.acquire("ana", limit)  # runs in progress elsewhere
    for path, body in (
        ("/v1/queries/q-00000000/run", None),
        ("/v1/packs/monthly/run", {"period": "2025-12"}),
        ("/v1/indicators/coverage/run", {"period": "2025-12"}),
    ):
        r = client.post(path, json=body, headers=headers)
        assert r.status_code == 429, path
        error = r.json()["error"]
        assert error["code"] == "rate_limited" and f"limit is {limit}" in error["message"]
    assert ctx.run_slots.running("ana") == limit  # a refusal takes no slot
    # Another analyst is not affected, and the slots come back when runs end.
    other = client.post("/v1/queries/q-00000000/run", headers=_key(ctx, Role.ANALYST, "bo"))
    assert other.status_code == 404 and ctx.run_slots.running("bo") == 0
    ctx.run_slots.release("ana")
    r = client.post("/v1/queries/q-00000000/run", headers=headers)
    assert r.status_code == 404 and ctx.run_slots.running("ana") == limit - 1


# --- the size of a release --------------------------------------------------------------------------


def _catalog(villages: int) -> dict[str, ConnectorSchema]:
    register = DatasetSchema(
        name="persons",
        description="register",
        entity_kind=EntityKind.PERSON,
        period_grain=None,
        measures=(),
        dimensions=(
            DimensionSchema(
                name="village",
                domain=tuple(f"v{i:04d}" for i in range(villages)),
                household_level=True,
            ),
        ),
        household_mapping=True,
    )
    wages = DatasetSchema(
        name="wages",
        description="tax",
        entity_kind=EntityKind.PERSON,
        period_grain="month",
        measures=(MeasureSchema(name="wage", unit="yuan", rollup=Rollup.SUM, lower=0, upper=10**6),),
        dimensions=(),
    )
    policy = PolicySchema(
        allowed_units=(Unit.PERSON, Unit.HOUSEHOLD),
        max_epsilon_per_query=Decimal(1),
        max_epsilon_per_window=Decimal(10),
        budget_window="calendar_year",
    )

    def schema(name: str, ds: DatasetSchema) -> ConnectorSchema:
        return ConnectorSchema(
            connector=name,
            department=name,
            description=name,
            signing_key="k",
            approval_key="k",
            policy=policy,
            datasets=(ds,),
        )

    return {"register": schema("register", register), "tax": schema("tax", wages)}


def _histogram_query(edges: int, filters: tuple[Filter, ...] = ()) -> QuerySpec:
    return QuerySpec(
        purpose="household income by village, for the limits test",
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=(Term(dataset="tax.wages", measure="wage"),), lower=0, upper=10**6),
        group_by=("register.persons.village",),
        filters=filters,
        statistics=(Statistic(kind=StatisticKind.HISTOGRAM, edges=tuple(range(0, 1000 * edges, 1000))),),
        epsilon=Decimal("0.5"),
    )


def test_bins_count_every_noisy_value_of_a_statistic() -> None:
    assert bins_of(Statistic(kind=StatisticKind.COUNT)) == 1
    assert bins_of(Statistic(kind=StatisticKind.MEAN)) == 2
    assert bins_of(Statistic(kind=StatisticKind.HISTOGRAM, edges=(1, 2, 3))) == 4
    assert bins_of(Statistic(kind=StatisticKind.LORENZ, edges=(1, 2, 3))) == 8
    # Every domain gains its public other bucket: (3+1) x (1+1) cells.
    assert cells_x_bins([3, 1], [Statistic(kind=StatisticKind.COUNT)]) == 8


def test_a_query_past_the_cells_x_bins_limit_is_refused_when_planned() -> None:
    catalog = _catalog(villages=640)
    fits = plan_query(_histogram_query(edges=50), catalog)  # 641 cells x 51 bins
    assert len(fits.groups) == 1
    with pytest.raises(PlanError) as err:
        plan_query(_histogram_query(edges=1000), catalog)  # 641 x 1001
    assert err.value.field == "group_by"
    assert str(MAX_CELLS_X_BINS) in err.value.message and "max_cells_x_bins" in err.value.message
    # The limit counts the public domain, so a filter does not shrink it; a lower limit is honoured.
    narrowed = _histogram_query(
        edges=50, filters=(Filter(dimension="register.persons.village", values=("v0001",)),)
    )
    with pytest.raises(PlanError):
        plan_query(narrowed, catalog, max_cells_x_bins=641 * 50)


def test_a_submission_past_the_limit_is_a_422_and_nothing_is_stored_or_reserved(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from gateway import db

    ctx = build_context(GatewaySettings(state_dir=tmp_path / "state"))  # the default body limit

    # The catalog as registration stores it (registration itself fetches over the network).
    with ctx.engine.begin() as conn:
        for name, schema in _catalog(villages=640).items():
            conn.execute(
                db.connectors.insert().values(
                    name=name,
                    department=schema.department,
                    endpoint=f"http://127.0.0.1:9/{name}",
                    key_fingerprint="0" * 64,
                    signing_key=schema.signing_key,
                    approval_key=schema.approval_key,
                    schema_json=schema.model_dump_json(),
                    version=1,
                    enabled=True,
                    registered_by="op",
                    updated_at=db.utcnow(),
                )
            )
    client = TestClient(create_app(ctx))
    analyst = _key(ctx, Role.ANALYST, "ana")
    too_big = _histogram_query(edges=1000).model_dump(mode="json")
    r = client.post("/v1/queries", json=too_big, headers=analyst)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "group_by" and "max_cells_x_bins" in error["message"]
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.queries)).scalar() == 0
    assert ctx.ledger.charged_years() == ()
    fits = client.post(
        "/v1/queries", json=_histogram_query(edges=50).model_dump(mode="json"), headers=analyst
    )
    assert fits.status_code == 201, fits.text
    ctx.engine.dispose()
