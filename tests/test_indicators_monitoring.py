"""The monitoring configuration in the gateway: set by the operator (route and command line) or read from
`FEDGATE_MONITORING_CONFIG_FILE` at start, checked against the catalog, versioned, audited, and refused
with the field it names that the catalog lacks; indicator runs are built from the version in force."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient
from test_key_groups import _events, _install_catalog
from typer.testing import CliRunner

from aggregation.indicators.config_file import parse_monitoring_config
from connectors.config import load_config
from connectors.protocol import ConnectorSchema
from connectors.service import build_service
from connectors.synth import generate_county
from connectors.synth.layout import RENAMED, STANDARD
from connectors.synth.monitoring import monitoring_config, write_monitoring_config
from gateway import db, monitoring
from gateway.app import build_context, create_app
from gateway.auth import Role, create_principal
from gateway.cli import indicators as indicators_cli
from gateway.cli.main import app
from gateway.client import GatewayClient
from gateway.context import GatewayContext
from gateway.dev.localfed import connector_names
from gateway.errors import AuditUnavailable
from gateway.events import MonitoringConfigChanged
from gateway.settings import GatewaySettings, SettingsError


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ConnectorSchema]:
    county = tmp_path_factory.mktemp("county")
    generate_county(county, persons=200, seed=13)
    return {
        n: build_service(load_config(county / "connectors" / f"{n}.yaml")).schema
        for n in connector_names(county)
    }


@pytest.fixture
def ctx(tmp_path: Path, catalog: dict[str, ConnectorSchema]) -> Iterator[GatewayContext]:
    context = build_context(GatewaySettings(state_dir=tmp_path / "state"))
    _install_catalog(context.engine, catalog)
    yield context
    context.engine.dispose()


@pytest.fixture
def keys(ctx: GatewayContext) -> dict[str, str]:
    made = {}
    for role, name in [(Role.OPERATOR, "op"), (Role.ANALYST, "ana"), (Role.AUDITOR, "aud")]:
        _, made[name] = create_principal(ctx.engine, role=role, name=name, department=None)
    return made


@pytest.fixture
def http(ctx: GatewayContext) -> TestClient:
    return TestClient(create_app(ctx))


def _h(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _changes(ctx: GatewayContext) -> list[dict[str, Any]]:
    return _events(ctx, MonitoringConfigChanged.action)


def _error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


def test_the_operator_sets_versions_and_everyone_reads_them(
    ctx: GatewayContext, keys: dict[str, str], http: TestClient
) -> None:
    assert http.get("/v1/monitoring", headers=_h(keys["ana"])).status_code == 404
    doc = monitoring_config()
    refused = http.put("/v1/monitoring", json=doc, headers=_h(keys["ana"]))
    assert refused.status_code == 403 and monitoring.current(ctx.engine) is None

    first = http.put("/v1/monitoring", json=doc, headers=_h(keys["op"]))
    assert first.status_code == 201, first.text
    v1 = first.json()
    assert (v1["version"], v1["created_by"], v1["source"]) == (1, "op", "upload")
    assert v1["config"]["income_terms"][0] == {"dataset": "tax.wages", "measure": "wage_income", "sign": 1}
    again = http.put("/v1/monitoring", json=doc, headers=_h(keys["op"]))
    assert again.status_code == 200 and again.json()["version"] == 1

    changed = http.put("/v1/monitoring", json={**doc, "size_cap": 7}, headers=_h(keys["op"]))
    assert changed.status_code == 201 and changed.json()["version"] == 2
    assert http.get("/v1/monitoring", headers=_h(keys["aud"])).json()["config"]["size_cap"] == 7
    older = http.get("/v1/monitoring/versions/1", headers=_h(keys["ana"])).json()
    assert older["config"]["size_cap"] == 8 and older["config_digest"] == v1["config_digest"]
    listed = http.get("/v1/monitoring/versions", headers=_h(keys["ana"])).json()["versions"]
    assert [v["version"] for v in listed] == [1, 2]
    # One audit entry per version written, with its digest and the whole configuration.
    entries = _changes(ctx)
    assert [(e["version"], e["config_digest"], e["actor"]) for e in entries] == [
        (1, v1["config_digest"], "op"),
        (2, changed.json()["config_digest"], "op"),
    ]
    assert entries[1]["config"]["size_cap"] == 7


def test_a_configuration_naming_a_missing_field_is_refused_with_the_field(
    ctx: GatewayContext, keys: dict[str, str], http: TestClient
) -> None:
    missing_measure = monitoring_config()
    missing_measure["income_terms"][1]["measure"] = "turnover"
    r = http.put("/v1/monitoring", json=missing_measure, headers=_h(keys["op"]))
    assert r.status_code == 422
    assert _error(r)["field"] == "income_terms.1.measure"
    assert "declares no measure 'turnover'" in _error(r)["message"]
    # Another county's configuration: every field it names that this catalog lacks, the first as `field`.
    renamed = http.put("/v1/monitoring", json=monitoring_config(RENAMED), headers=_h(keys["op"]))
    assert renamed.status_code == 422 and _error(renamed)["field"] == "income_terms.0.dataset"
    assert "coverage_datasets.4" in _error(renamed)["message"] and "village" in _error(renamed)["message"]
    shape = http.put("/v1/monitoring", json={**monitoring_config(), "size_cap": 0}, headers=_h(keys["op"]))
    assert shape.status_code == 422 and _error(shape)["field"] == "size_cap"
    # Nothing was stored or audited.
    assert monitoring.history(ctx.engine) == [] and _changes(ctx) == []


def test_a_configured_group_may_not_redefine_a_registered_one(
    ctx: GatewayContext, keys: dict[str, str], http: TestClient
) -> None:
    other = {
        "definition": {"name": "pensioner", "measure": "social.pensions.pension_months", "at_least": 6},
        "title": "Households with a long-term pensioner",
        "title_zh": "长期领取养老金家庭户",
    }
    assert http.post("/v1/groups", json=other, headers=_h(keys["op"])).status_code == 201
    r = http.put("/v1/monitoring", json=monitoring_config(), headers=_h(keys["op"]))
    assert r.status_code == 409 and _error(r)["field"] == "key_groups.2.definition.name"
    assert monitoring.history(ctx.engine) == []


def test_a_version_whose_audit_entry_cannot_be_written_is_not_kept(ctx: GatewayContext) -> None:
    config = parse_monitoring_config(monitoring_config())
    with ctx.engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
                "BEGIN SELECT RAISE(ABORT, 'the audit store refuses writes'); END"
            )
        )
    with pytest.raises(AuditUnavailable):
        monitoring.apply(ctx, config, by="op", source="upload")
    assert monitoring.history(ctx.engine) == []
    with ctx.engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_audit"))
    record, created = monitoring.apply(ctx, config, by="op", source="upload")
    assert created and record.version == 1 and len(_changes(ctx)) == 1


def test_the_settings_file_is_read_at_every_start_and_versioned_when_it_changed(tmp_path: Path) -> None:
    path = write_monitoring_config(tmp_path / "monitoring.yaml")
    settings = GatewaySettings(state_dir=tmp_path / "state", monitoring_config_file=path)
    first = build_context(settings)
    record = monitoring.current(first.engine)
    assert record is not None and (record.version, record.source, record.created_by) == (
        1,
        str(path),
        "settings",
    )
    first.engine.dispose()
    same = build_context(settings)
    assert [r.version for r in monitoring.history(same.engine)] == [1]
    same.engine.dispose()
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump({**doc, "drop_share": "0.25"}, allow_unicode=True), encoding="utf-8")
    changed = build_context(settings)
    latest = monitoring.current(changed.engine)
    assert latest is not None and latest.version == 2 and str(latest.config.drop_share) == "0.25"
    changed.engine.dispose()
    path.write_text(yaml.safe_dump({**doc, "income_terms": "wages"}), encoding="utf-8")
    with pytest.raises(SettingsError, match="income_terms"):
        build_context(settings)


def test_runs_are_built_from_the_version_in_force_or_refused_before_anything_is_submitted(
    ctx: GatewayContext, keys: dict[str, str], http: TestClient
) -> None:
    body = {"period": "2025-12"}
    none = http.post("/v1/packs/monthly/run", json=body, headers=_h(keys["ana"]))
    assert none.status_code == 409 and _error(none)["field"] == "monitoring"
    # A version in force that this catalog cannot answer (read at start, before connectors registered).
    config = parse_monitoring_config(monitoring_config(RENAMED))
    monitoring.apply(ctx, config, by="settings", source="monitoring.yaml")
    stale = http.post("/v1/packs/monthly/run", json=body, headers=_h(keys["ana"]))
    assert stale.status_code == 422 and _error(stale)["field"] == "income_terms.0.dataset"
    assert "version 1" in _error(stale)["message"]
    one = http.post("/v1/indicators/income_bands/run", json=body, headers=_h(keys["ana"]))
    assert one.status_code == 422 and _error(one)["field"] == "income_terms.0.dataset"
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.queries)).scalar() == 0


# --- the command line


class _Through(httpx.BaseTransport):
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)


def _cli(http: TestClient, monkeypatch: pytest.MonkeyPatch, key: str, args: list[str]) -> Any:
    monkeypatch.setattr(
        indicators_cli, "client_factory", lambda url, k: GatewayClient(url, k, transport=_Through(http))
    )
    env = {"FEDGATE_URL": "http://gateway", "FEDGATE_API_KEY": key, "COLUMNS": "240"}
    return CliRunner().invoke(app, ["indicators", *args], env=env)


def test_check_names_each_missing_field_and_configure_sets_the_file(
    ctx: GatewayContext,
    keys: dict[str, str],
    http: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    good = write_monitoring_config(tmp_path / "good.yaml", STANDARD)
    other = write_monitoring_config(tmp_path / "other.yaml", RENAMED)
    ok = _cli(http, monkeypatch, keys["ana"], ["check", "--config", str(good)])
    assert ok.exit_code == 0 and "ok" in ok.output, ok.output
    bad = _cli(http, monkeypatch, keys["ana"], ["check", "--config", str(other)])
    assert bad.exit_code == 1
    for field in ("income_terms.0.dataset", "village", "urban_rural", "coverage_datasets.2", "key_groups"):
        assert field in bad.output, field
    assert "no connector named 'hrss'" in bad.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("size_cap: many\n", encoding="utf-8")
    shape = _cli(http, monkeypatch, keys["ana"], ["check", "--config", str(broken)])
    assert shape.exit_code == 2 and "size_cap" in shape.output and "income_terms" in shape.output
    assert monitoring.history(ctx.engine) == []

    denied = _cli(http, monkeypatch, keys["ana"], ["configure", str(good)])
    assert denied.exit_code == 1 and "forbidden" in denied.output
    configured = _cli(http, monkeypatch, keys["op"], ["configure", str(good)])
    assert configured.exit_code == 0 and "version 1 now in force" in configured.output, configured.output
    unchanged = _cli(http, monkeypatch, keys["op"], ["configure", str(good)])
    assert "version 1 already in force" in unchanged.output
    refused = _cli(http, monkeypatch, keys["op"], ["configure", str(other)])
    assert refused.exit_code == 1 and "income_terms.0.dataset" in refused.output
    assert [r.version for r in monitoring.history(ctx.engine)] == [1]
