"""Named key groups in process: registration checked against a synthetic county's catalog, versions,
retirement, resolution into query specs, roles, audit entries, the seed groups, the client and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient

from aggregation.planner import plan_query
from aggregation.query import MemberGroup, QuerySpec
from connectors.config import load_config
from connectors.protocol import ConnectorSchema
from connectors.service import build_service
from connectors.synth import generate_county
from connectors.synth.geography import COUNTY_CODE, REGION_CODES
from gateway import db, key_groups
from gateway.api.errors import status_of
from gateway.app import build_context, create_app
from gateway.auth import Role, create_principal
from gateway.client import GatewayClient, GatewayError
from gateway.context import GatewayContext
from gateway.dev.seed_groups import SEED_GROUPS
from gateway.errors import Invalid
from gateway.settings import GatewaySettings

CONNECTORS = ("register", "tax", "social", "utility", "civil")

DIBAO = {
    "definition": {"name": "dibao", "measure": "civil.assistance.assistance_income", "at_least": 1},
    "title": "Households receiving minimum-livelihood assistance",
    "title_zh": "低保户",
    "description": "a member was paid assistance in the period",
}
FISHERY = {
    "definition": {
        "name": "fishery",
        "dimension": "social.occupations.occupation_medium",
        "values": ["5-04"],
    },
    "title": "Households with a fishery worker",
    "title_zh": "有渔业生产人员的家庭户",
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ConnectorSchema]:
    county = tmp_path_factory.mktemp("county")
    generate_county(county, persons=200, seed=11)
    return {
        name: build_service(load_config(county / "connectors" / f"{name}.yaml")).schema for name in CONNECTORS
    }


def _install_catalog(engine: sa.Engine, catalog: dict[str, ConnectorSchema]) -> None:
    """Store the connectors as a completed registration would (that path needs live connectors)."""
    now = db.utcnow()
    with engine.begin() as conn:
        for i, (name, schema) in enumerate(catalog.items()):
            conn.execute(
                db.connectors.insert().values(
                    name=name,
                    department=schema.department,
                    endpoint=f"http://127.0.0.1:{8711 + i}",
                    key_fingerprint="0" * 64,
                    signing_key=schema.signing_key,
                    approval_key=schema.approval_key,
                    schema_json=schema.model_dump_json(),
                    version=1,
                    enabled=True,
                    registered_by="test",
                    updated_at=now,
                )
            )


@pytest.fixture
def ctx(tmp_path: Path, catalog: dict[str, ConnectorSchema]) -> Iterator[GatewayContext]:
    context = build_context(GatewaySettings(state_dir=tmp_path / "state"))
    _install_catalog(context.engine, catalog)
    yield context
    context.engine.dispose()


@pytest.fixture
def keys(ctx: GatewayContext) -> dict[str, str]:
    made = {}
    for role, name, department in [
        (Role.OPERATOR, "op", None),
        (Role.ANALYST, "ana", None),
        (Role.AUDITOR, "aud", None),
        (Role.DEPARTMENT_ADMIN, "civil-admin", "civil"),
        (Role.DEPARTMENT_ADMIN, "tax-admin", "tax"),
    ]:
        _, made[name] = create_principal(ctx.engine, role=role, name=name, department=department)
    return made


@pytest.fixture
def http(ctx: GatewayContext) -> TestClient:
    return TestClient(create_app(ctx))


class _Through(httpx.BaseTransport):
    """Hands the client's requests to the in-process app (the client takes any httpx transport)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)


def _gw(http: TestClient, key: str) -> GatewayClient:
    return GatewayClient("http://testserver", key, transport=_Through(http))


def _as(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _events(ctx: GatewayContext, action: str) -> list[dict[str, Any]]:
    return [e.event for e in ctx.audit.log.filter(action=action)]


def test_register_list_and_show(http: TestClient, keys: dict[str, str]) -> None:
    r = http.post("/v1/groups", json=DIBAO, headers=_as(keys["op"]))
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["name"] == "dibao" and made["version"] == 1 and made["retired"] is False
    assert made["household_attribute"] == "household.has_dibao"
    assert made["created_by"] == "op" and made["title_zh"] == "低保户"
    assert made["definition"] == {**DIBAO["definition"], "dimension": None, "values": None, "negate": False}
    with _gw(http, keys["ana"]) as analyst:  # every role reads
        assert [g["name"] for g in analyst.list_groups()] == ["dibao"]
        assert analyst.group("dibao") == made
    with _gw(http, keys["op"]) as operator:
        fishery = operator.register_group(FISHERY)
    assert fishery["version"] == 1
    with _gw(http, keys["aud"]) as auditor:
        assert [g["name"] for g in auditor.list_groups()] == ["dibao", "fishery"]
        with pytest.raises(GatewayError) as err:
            auditor.group("nope")
    assert err.value.status == 404 and err.value.code == "not_found" and "nope" in err.value.message
    r = http.get("/v1/groups/Not-A-Name", headers=_as(keys["ana"]))
    assert r.status_code == 422 and r.json()["error"]["field"] == "path.name"


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ({"measure": "nowhere.assistance.assistance_income", "at_least": 1}, "definition.measure"),
        ({"measure": "civil.nothing.assistance_income", "at_least": 1}, "definition.measure"),
        ({"measure": "civil.assistance.salary", "at_least": 1}, "definition.measure"),
        ({"dimension": "social.occupations.colour", "values": ["5-04"]}, "definition.dimension"),
        ({"dimension": "social.occupations.occupation_medium", "values": ["9-99"]}, "definition.values.0"),
        (
            {"dimension": "social.occupations.occupation_medium", "values": ["5-04", "0-00"]},
            "definition.values.1",
        ),
        ({"measure": "tax.employer_wages.employer_wage_bill", "at_least": 1}, "definition.measure"),
    ],
)
def test_a_definition_the_catalog_does_not_support_is_refused_naming_the_field(
    http: TestClient, keys: dict[str, str], definition: dict[str, Any], field: str
) -> None:
    body = {**DIBAO, "definition": {"name": "bad", **definition}}
    r = http.post("/v1/groups", json=body, headers=_as(keys["op"]))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == field and error["message"]
    assert http.get("/v1/groups/bad", headers=_as(keys["op"])).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"definition": {**DIBAO["definition"], "name": "Dibao!"}}, "body.definition.name"),
        ({"definition": {**DIBAO["definition"], "dimension": "register.persons.sex"}}, "body.definition"),
        ({"title": ""}, "body.title"),
        ({"colour": "red"}, "body.colour"),
    ],
)
def test_malformed_bodies_are_refused_naming_the_field(
    http: TestClient, keys: dict[str, str], change: dict[str, Any], field: str
) -> None:
    r = http.post("/v1/groups", json={**DIBAO, **change}, headers=_as(keys["op"]))
    assert r.status_code == 422 and r.json()["error"]["field"] == field


def test_roles_analysts_and_auditors_cannot_register_and_only_the_operator_retires(
    http: TestClient, keys: dict[str, str]
) -> None:
    for who in ("ana", "aud"):
        r = http.post("/v1/groups", json=DIBAO, headers=_as(keys[who]))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", who
    assert http.get("/v1/groups", headers=_as(keys["op"])).json() == {"groups": []}
    assert http.post("/v1/groups", json=DIBAO, headers=_as(keys["civil-admin"])).status_code == 201
    for who in ("ana", "aud", "civil-admin"):
        assert http.post("/v1/groups/dibao/retire", headers=_as(keys[who])).status_code == 403, who
    assert http.post("/v1/groups/dibao/retire", headers=_as(keys["op"])).status_code == 200


def test_a_department_admin_defines_groups_over_its_own_data_only(
    http: TestClient, keys: dict[str, str]
) -> None:
    r = http.post("/v1/groups", json=DIBAO, headers=_as(keys["tax-admin"]))
    assert r.status_code == 403 and r.json()["error"]["field"] == "definition"
    assert http.post("/v1/groups", json=DIBAO, headers=_as(keys["civil-admin"])).status_code == 201
    # Nor may it take over another department's name with a definition over its own data.
    takeover = {**DIBAO, "definition": {"name": "dibao", "measure": "tax.wages.wage_income", "at_least": 1}}
    assert http.post("/v1/groups", json=takeover, headers=_as(keys["tax-admin"])).status_code == 403
    assert http.post("/v1/groups", json=takeover, headers=_as(keys["op"])).json()["version"] == 2


def test_identical_registration_is_a_no_op_and_a_change_makes_a_new_version(
    ctx: GatewayContext, http: TestClient, keys: dict[str, str]
) -> None:
    op = _as(keys["op"])
    first = http.post("/v1/groups", json=DIBAO, headers=op)
    again = http.post("/v1/groups", json=DIBAO, headers=op)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(_events(ctx, "key_group.registered")) == 1
    stricter = {**DIBAO, "definition": {**DIBAO["definition"], "at_least": 100}}
    second = http.post("/v1/groups", json=stricter, headers=op)
    assert second.status_code == 201 and second.json()["version"] == 2
    assert second.json()["definition_digest"] != first.json()["definition_digest"]
    # The old version stays readable; the list and the default show the latest.
    old = http.get("/v1/groups/dibao", params={"version": 1}, headers=op).json()
    assert old["definition"]["at_least"] == 1 and old["version"] == 1
    assert http.get("/v1/groups/dibao", headers=op).json()["definition"]["at_least"] == 100
    assert [g["version"] for g in http.get("/v1/groups", headers=op).json()["groups"]] == [2]
    r = http.get("/v1/groups/dibao", params={"version": 3}, headers=op)
    assert r.status_code == 404 and r.json()["error"]["field"] == "version"
    retitled = http.post("/v1/groups", json={**stricter, "title": "Dibao households"}, headers=op)
    assert (
        retitled.json()["version"] == 3
        and retitled.json()["definition_digest"] == second.json()["definition_digest"]
    )
    assert [e["version"] for e in _events(ctx, "key_group.registered")] == [1, 2, 3]


def test_a_retired_group_stays_readable_but_cannot_be_used_or_reregistered(
    ctx: GatewayContext, http: TestClient, keys: dict[str, str]
) -> None:
    with _gw(http, keys["op"]) as operator:
        operator.register_group(DIBAO)
        operator.register_group(FISHERY)
        retired = operator.retire_group("dibao")
        assert retired["retired"] is True and retired["retired_by"] == "op" and retired["retired_at"]
        assert operator.retire_group("dibao")["retired_at"] == retired["retired_at"]  # again: nothing new
        assert [g["name"] for g in operator.list_groups()] == ["fishery"]
        assert [g["name"] for g in operator.list_groups(include_retired=True)] == ["dibao", "fishery"]
        assert operator.group("dibao")["retired"] is True
        with pytest.raises(GatewayError) as err:
            operator.register_group(DIBAO)
        assert err.value.status == 409 and err.value.code == "conflict"
        with pytest.raises(GatewayError) as err:
            operator.retire_group("nope")
        assert err.value.status == 404
    with pytest.raises(key_groups.KeyGroupRetired) as refused:
        key_groups.resolve(ctx.engine, ["fishery", "dibao"])
    assert status_of(refused.value) == 422 and refused.value.field == "groups.1"
    assert len(_events(ctx, "key_group.retired")) == 1


def test_resolve_returns_the_current_definitions_to_inline_into_a_query(
    ctx: GatewayContext, http: TestClient, keys: dict[str, str], catalog: dict[str, ConnectorSchema]
) -> None:
    with _gw(http, keys["op"]) as operator:
        operator.register_group(DIBAO)
        operator.register_group(FISHERY)
    groups = key_groups.resolve(ctx.engine, ["fishery", "dibao"])
    assert groups == (
        MemberGroup.model_validate(FISHERY["definition"]),
        MemberGroup.model_validate(DIBAO["definition"]),
    )
    assert all(isinstance(g, MemberGroup) for g in groups)
    spec = QuerySpec.model_validate(
        {
            "purpose": "Households with a fishery worker, by village",
            "unit": "household",
            "period_start": "2025-01",
            "period_end": "2025-12",
            "group_by": ["household.has_fishery"],
            "statistics": [{"kind": "count"}],
            "epsilon": "0.5",
            "member_groups": [g.model_dump(mode="json") for g in groups],
        }
    )
    assert plan_query(spec, catalog).groups[0].ref == "household.has_fishery"
    # The same query with the groups written out by hand is the same query (same digest).
    by_hand = {**spec.model_dump(mode="json"), "member_groups": [FISHERY["definition"], DIBAO["definition"]]}
    assert QuerySpec.model_validate(by_hand).digest == spec.digest
    with pytest.raises(key_groups.KeyGroupNotFound) as missing:
        key_groups.resolve(ctx.engine, ["dibao", "nope"], field="member_groups")
    assert status_of(missing.value) == 404 and missing.value.field == "member_groups.1"
    with pytest.raises(Invalid) as twice:
        key_groups.resolve(ctx.engine, ["dibao", "dibao"])
    assert status_of(twice.value) == 422 and twice.value.field == "groups.1"


def test_registration_and_retirement_are_audited(
    ctx: GatewayContext, http: TestClient, keys: dict[str, str]
) -> None:
    with _gw(http, keys["op"]) as operator:
        made = operator.register_group(FISHERY)
        operator.retire_group("fishery")
    [registered] = _events(ctx, "key_group.registered")
    assert registered["actor"] == "op" and registered["key_group"] == "fishery"
    assert registered["version"] == 1 and registered["definition_digest"] == made["definition_digest"]
    assert MemberGroup.model_validate(registered["definition"]) == MemberGroup.model_validate(
        FISHERY["definition"]
    )
    assert registered["title_zh"] == FISHERY["title_zh"]
    [retired] = _events(ctx, "key_group.retired")
    assert (retired["actor"], retired["key_group"], retired["version"]) == ("op", "fishery", 1)
    # A refused registration changes nothing and is recorded only as the refused request.
    http.post("/v1/groups", json=DIBAO, headers=_as(keys["ana"]))
    assert len(_events(ctx, "key_group.registered")) == 1


def test_the_seed_groups_validate_against_the_synthetic_county(
    ctx: GatewayContext, http: TestClient, keys: dict[str, str], catalog: dict[str, ConnectorSchema]
) -> None:
    names = [g.definition.name for g in SEED_GROUPS]
    assert names == ["dibao", "fishery", "pensioner", "no_wage_earner", "migrant"]
    for group in SEED_GROUPS:
        assert key_groups.validate_definition(group.definition, catalog) is None
    migrant = next(g.definition for g in SEED_GROUPS if g.definition.name == "migrant")
    assert set(migrant.values or ()) == set(REGION_CODES) - {COUNTY_CODE}
    assert "floating" in next(g for g in SEED_GROUPS if g.definition.name == "migrant").title.lower()
    no_wage = next(g.definition for g in SEED_GROUPS if g.definition.name == "no_wage_earner")
    assert no_wage.negate and no_wage.measure == "tax.wages.wage_income"
    with _gw(http, keys["op"]) as operator:
        for group in SEED_GROUPS:
            assert operator.register_group(group)["version"] == 1
        assert key_groups.resolve(ctx.engine, names) == tuple(g.definition for g in SEED_GROUPS)
        # Registering the seeds again (a restarted demo) changes nothing.
        for group in SEED_GROUPS:
            assert operator.register_group(group)["version"] == 1
    assert len(_events(ctx, "key_group.registered")) == len(SEED_GROUPS)


def test_a_group_needs_a_household_register_in_the_catalog(catalog: dict[str, ConnectorSchema]) -> None:
    without_register = {k: v for k, v in catalog.items() if k != "register"}
    with pytest.raises(Invalid) as err:
        key_groups.validate_definition(MemberGroup.model_validate(DIBAO["definition"]), without_register)
    assert (
        status_of(err.value) == 422 and err.value.field == "definition" and "household" in err.value.message
    )


def test_the_command_line_adds_lists_shows_and_retires(
    http: TestClient, keys: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from gateway.cli import groups as groups_cli

    monkeypatch.setattr(groups_cli, "_client", lambda url, key: _gw(http, key))
    file = tmp_path / "groups.json"
    file.write_text(json.dumps([DIBAO, FISHERY], ensure_ascii=False), encoding="utf-8")
    runner = CliRunner()
    env = {"FEDGATE_URL": "http://testserver", "FEDGATE_API_KEY": keys["op"], "COLUMNS": "200"}
    added = runner.invoke(groups_cli.groups_app, ["add", str(file)], env=env)
    assert added.exit_code == 0, added.output
    assert "household.has_dibao" in added.stdout and "household.has_fishery" in added.stdout
    listed = runner.invoke(groups_cli.groups_app, ["list"], env=env)
    assert listed.exit_code == 0 and "dibao" in listed.stdout and "5-04" in listed.stdout
    shown = runner.invoke(groups_cli.groups_app, ["show", "fishery", "--json"], env=env)
    assert json.loads(shown.stdout)["definition"]["values"] == ["5-04"]
    retired = runner.invoke(groups_cli.groups_app, ["retire", "dibao"], env=env)
    assert retired.exit_code == 0 and "retired" in retired.stdout
    as_analyst = {**env, "FEDGATE_API_KEY": keys["ana"]}
    refused = runner.invoke(groups_cli.groups_app, ["add", str(file)], env=as_analyst)
    assert refused.exit_code == 1 and "forbidden" in refused.output
    file.write_text(
        json.dumps({"definition": {"name": "x"}, "title": "t", "title_zh": "t"}), encoding="utf-8"
    )
    bad = runner.invoke(groups_cli.groups_app, ["add", str(file)], env=env)
    assert bad.exit_code == 2 and "definition" in bad.output


def test_the_key_groups_table_matches_its_revision(ctx: GatewayContext) -> None:
    def only_key_groups(obj: object, name: str | None, type_: str, reflected: bool, other: object) -> bool:
        table = obj if isinstance(obj, sa.Table) else getattr(obj, "table", None)
        return isinstance(table, sa.Table) and table.name == "key_groups"

    with ctx.engine.connect() as conn:
        assert "key_groups" in sa.inspect(conn).get_table_names()
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": only_key_groups}
        )
        assert compare_metadata(context, db.gateway_metadata) == []
