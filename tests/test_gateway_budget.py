"""The budget race end to end: 40 concurrent runs with room for 10 release exactly 10, on SQLite and on
PostgreSQL as the gateway's own store; and every request, refused or not, leaves an audit entry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from county_fixture import headline_query
from dbservers import private_database

from aggregation.query import QuerySpec
from connectors.synth import generate_county
from gateway.client import GatewayError
from gateway.dev.localfed import Federation, register_everything, start_federation

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("budget-county")
    generate_county(out, persons=1_500, seed=9)
    return out


def _federation(root: Path, county: Path, gateway_db_url: str | None) -> Federation:
    # Room for exactly ten queries of epsilon 0.1 on the headline query's data year; all forty runs of the
    # race may be in progress at once, so that the ledger (not the per-analyst run limit) decides which ten
    # release.
    env = {
        "FEDGATE_DATA_YEAR_EPSILON": "1.0",
        "FEDGATE_DEFAULT_ANALYST_QUOTA": "1.0",
        "FEDGATE_MAX_CONCURRENT_RUNS_PER_ANALYST": "40",
    }
    # Each federation is a new gateway: its connectors start without another gateway's witnessed history.
    shutil.rmtree(county / "state", ignore_errors=True)
    fed = start_federation(root, county=county, gateway_db_url=gateway_db_url, env=env)
    register_everything(fed)
    return fed


@pytest.fixture(params=["sqlite", "postgres"])
def fed(request: pytest.FixtureRequest, tmp_path: Path, county: Path) -> Iterator[Federation]:
    if request.param == "postgres":
        database = private_database("postgres")
        url: str | None = next(database)
    else:
        database, url = iter(()), None
    federation = _federation(tmp_path, county, url)
    try:
        yield federation
    finally:
        federation.stop()
        next(database, None)


def test_forty_concurrent_runs_with_room_for_ten_release_exactly_ten(fed: Federation) -> None:
    specs = []
    for i in range(40):
        data = headline_query(group_by=("register.persons.urban_rural",), epsilon="0.1").model_dump()
        data["purpose"] = f"Budget race query number {i:02d}"
        specs.append(QuerySpec.model_validate(data))
    with fed.client("analyst") as analyst:
        ids = [analyst.submit(s)["id"] for s in specs]

    def run(qid: str) -> str:
        with fed.client("analyst") as a:
            try:
                a.run(qid)
                return "released"
            except GatewayError as exc:
                return exc.code

    with ThreadPoolExecutor(max_workers=40) as pool:
        outcomes = list(pool.map(run, ids))
    assert outcomes.count("released") == 10, outcomes
    assert outcomes.count("budget_exceeded") == 30
    with fed.client("analyst") as analyst:
        budget = analyst.budget()
        states = [analyst.query(q)["state"] for q in ids]
    assert [(y["year"], Decimal(y["remaining"])) for y in budget["years"]] == [("2025", 0)]
    assert states.count("released") == 10 and states.count("approved") == 30
    # Over budget is a 409 that says requested, remaining and the difference.
    with fed.client("analyst") as analyst, pytest.raises(GatewayError) as err:
        analyst.run(ids[outcomes.index("budget_exceeded")])
    assert err.value.status == 409 and "requested" in err.value.message and "remaining" in err.value.message
    assert "data year 2025" in err.value.message


def test_every_request_leaves_an_audit_entry(fed: Federation) -> None:
    url = fed.gateway.url
    calls = [
        httpx.get(url + "/v1/catalog"),
        httpx.get(url + "/v1/catalog", headers={"authorization": "Bearer fgk_nope"}),
        httpx.get(url + "/v1/nowhere", headers={"authorization": f"Bearer {fed.keys['analyst']}"}),
        httpx.post(url + "/v1/queries", json={}, headers={"authorization": f"Bearer {fed.keys['analyst']}"}),
        httpx.post(
            url + "/v1/endpoints",
            json={"url": "http://x"},
            headers={"authorization": f"Bearer {fed.keys['analyst']}"},
        ),
    ]
    assert [c.status_code for c in calls] == [401, 401, 404, 422, 403]
    engine = sa.create_engine(fed.database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT entry FROM audit_entries ORDER BY seq")).scalars().all()
    engine.dispose()
    events = [json.loads(r)["event"] for r in rows]
    requests = [e for e in events if e["action"] == "http.request"]
    tail = [(e["method"], e["status"]) for e in requests[-5:]]
    assert tail == [("GET", 401), ("GET", 401), ("GET", 404), ("POST", 422), ("POST", 403)]
    assert requests[-1]["principal"] == "analyst" and requests[-1]["path"] == "/v1/endpoints"
    assert all("fgk_" not in r for r in rows)
