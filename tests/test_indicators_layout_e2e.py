"""A county whose departments name things differently (`tax.payroll.gross_pay`, `hrss.pension_paid`,
`civil.minimum_living`, `hukou.residents.community`, other tables and columns) runs the monthly pack once its
operator writes a monitoring configuration for it: no code change. The standard configuration is refused
there with each field it names that this catalog lacks. Live loopback federation, real connectors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from connectors.synth.layout import STANDARD
from connectors.synth.monitoring import write_monitoring_config
from gateway.cli.main import app
from gateway.client import GatewayError
from gateway.dev.localfed import Federation, register_everything, start_federation
from gateway.dev.seed_groups import OUTSIDE_THE_COUNTY

GATEWAY_ENV = {"FEDGATE_DATA_YEAR_EPSILON": "5", "FEDGATE_DEFAULT_ANALYST_QUOTA": "5"}
WIDER = 3
"""a figure lies within this many interval half-widths of the truth (Laplace tails: about 1e-4 each)"""


def _group(name: str, title: str, title_zh: str, **definition: Any) -> dict[str, Any]:
    return {"definition": {"name": name, **definition}, "title": title, "title_zh": title_zh}


# What this county's operator writes, reading its own catalog: the plan's bounds, edges and bands are
# left at their defaults; everything that names a dataset is this county's own.
OPERATORS_CONFIG: dict[str, Any] = {
    "version": "fedgate-monitoring/1",
    "description": "Household income monitoring of a county with its own department naming.",
    "income_terms": [
        {"dataset": "tax.payroll", "measure": "gross_pay"},
        {"dataset": "tax.self_employed", "measure": "net_profit"},
        {"dataset": "hrss.pension_paid", "measure": "pension_amount"},
        {"dataset": "civil.minimum_living", "measure": "benefit_yuan"},
        {"dataset": "hrss.contribution_paid", "measure": "employee_share", "sign": -1},
    ],
    "village": "hukou.residents.community",
    "urban_rural": "hukou.residents.area_type",
    "coverage_datasets": [
        "tax.payroll",
        "tax.self_employed",
        "hrss.contribution_paid",
        "hrss.pension_paid",
        "civil.minimum_living",
    ],
    "key_groups": [
        _group(
            "dibao",
            "Minimum-livelihood households",
            "低保户",
            measure="civil.minimum_living.benefit_yuan",
            at_least=1,
        ),
        _group(
            "fishery",
            "Fishery households",
            "渔业户",
            dimension="hrss.insured_jobs.job_class",
            values=["5-04"],
        ),
        _group(
            "pensioner",
            "Pensioner households",
            "养老金户",
            measure="hrss.pension_paid.pension_amount",
            at_least=1,
        ),
        _group(
            "no_wage_earner",
            "Households without wages",
            "无工资收入户",
            measure="tax.payroll.gross_pay",
            at_least=1,
            negate=True,
        ),
        _group(
            "migrant",
            "In-migrant households",
            "外地迁入户",
            dimension="hukou.residents.id_region",
            values=list(OUTSIDE_THE_COUNTY),
        ),
    ],
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = start_federation(
        tmp_path_factory.mktemp("renamed"),
        # 4,000 persons: at 1,500 the year-end pack's county per-capita income is often undefined (the
        # members sum's 95% interval reaches 0), which is honest but leaves nothing to compare.
        persons=4_000,
        seed=9,
        layout="renamed",
        monitoring=False,
        env=GATEWAY_ENV,
    )
    try:
        # Indicator runs carry no analyst's signature: rules for every analyst, which the county accepts.
        register_everything(federation, groups=False, analysts=("*",))
        yield federation
    finally:
        federation.stop()


def _cli(fed: Federation, who: str, args: list[str]) -> Any:
    env = {"FEDGATE_URL": fed.gateway.url, "FEDGATE_API_KEY": fed.keys[who], "COLUMNS": "240"}
    return CliRunner().invoke(app, ["indicators", *args], env=env)


def test_the_standard_configuration_is_refused_naming_each_missing_field(
    fed: Federation, tmp_path: Path
) -> None:
    with fed.client("analyst") as analyst, pytest.raises(GatewayError) as none:
        analyst.run_pack("monthly", period="2025-12")
    assert none.value.status == 409 and none.value.field == "monitoring"
    standard = write_monitoring_config(tmp_path / "standard.yaml", STANDARD)
    checked = _cli(fed, "operator", ["check", "--config", str(standard)])
    assert checked.exit_code == 1
    for field in ("income_terms.0.dataset", "income_terms.2.dataset", "village", "coverage_datasets.4"):
        assert field in checked.output, field
    assert "no connector named 'social'" in checked.output and "hrss" in checked.output
    with fed.client("operator") as operator:
        with pytest.raises(GatewayError) as refused:
            operator.set_monitoring(yaml.safe_load(standard.read_text(encoding="utf-8")))
        assert refused.value.status == 422 and refused.value.field == "income_terms.0.dataset"
        with pytest.raises(GatewayError) as absent:
            operator.monitoring()
        assert absent.value.status == 404  # nothing was stored


def test_the_operators_configuration_runs_the_year_end_pack(fed: Federation, tmp_path: Path) -> None:
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump(OPERATORS_CONFIG, allow_unicode=True, sort_keys=False), encoding="utf-8")
    checked = _cli(fed, "operator", ["check", "--config", str(path)])
    assert checked.exit_code == 0 and "ok" in checked.output, checked.output
    configured = _cli(fed, "operator", ["configure", str(path)])
    assert configured.exit_code == 0 and "version 1 now in force" in configured.output, configured.output
    listed = _cli(fed, "analyst", ["list"])
    assert listed.exit_code == 0 and "tax.payroll.gross_pay" in listed.output

    truth = json.loads((fed.county / "truth.json").read_text(encoding="utf-8"))
    expected = truth["as_linked"]["monthly_pack"]["indicators"]
    with fed.client("analyst") as analyst:
        doc = analyst.run_pack("year_end", period="2025-12")
        specs = {q["id"]: q["spec"] for q in analyst.queries()}
    assert Decimal(doc["epsilon"]) == Decimal(1) and doc["monitoring_version"] == 1
    with fed.client("auditor") as auditor:
        (run,) = auditor.audit_entries(action="indicator.run")["entries"]
        (changed,) = auditor.audit_entries(action="monitoring_config.changed")["entries"]
    # The audit log says which configuration the run was built from, and holds that configuration.
    assert run["event"]["monitoring_version"] == changed["event"]["version"] == 1
    assert run["event"]["monitoring_digest"] == changed["event"]["config_digest"]
    assert changed["event"]["config"]["income_terms"][0]["dataset"] == "tax.payroll"
    assert [i["indicator"] for i in doc["indicators"]] == list(expected)
    ran = [specs[q["query_id"]] for i in doc["indicators"] for q in i["queries"]]
    named = json.dumps(ran)
    assert "tax.payroll" in named and "hukou.residents.community" in named and "tax.wages" not in named
    for indicator in doc["indicators"]:
        truths = {(f["figure"], f["label"], f["group"]): f["value"] for f in expected[indicator["indicator"]]}
        figures = {(f["figure"], f["label"], f["group"]): f for f in indicator["figures"]}
        # Every figure of the truth, for every village and key group, and nothing else.
        assert set(figures) == set(truths), indicator["indicator"]
    headline = [
        ("income_bands", ("share", "100k–500k", "county")),
        ("urban_rural_ratio", ("per_capita_income", "per-capita disposable income", "county")),
        ("coverage", ("coverage", "persons with an income record", "county")),
        ("key_groups", ("households", "pensioner", "county")),
        ("early_warning", ("households_no_baseline", "no income in 2025-07..2025-09", "county")),
    ]
    results = {i["indicator"]: i for i in doc["indicators"]}
    for name, key in headline:
        figure = next(f for f in results[name]["figures"] if (f["figure"], f["label"], f["group"]) == key)
        true = next(f["value"] for f in expected[name] if (f["figure"], f["label"], f["group"]) == key)
        assert figure["low"] is not None and figure["high"] is not None, (name, key, figure, true)
        half = (figure["high"] - figure["low"]) / 2
        assert abs(figure["value"] - true) <= WIDER * half, (name, key, figure, true)
