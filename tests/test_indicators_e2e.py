"""Indicators and the calendar's packs through the gateway's HTTP API against a live loopback federation:
approvals, one reservation for the whole pack, exact charges, idempotent re-runs, refusals before any
extract, and the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.client import GatewayClient, GatewayError
from gateway.dev.localfed import Federation, register_everything, start_federation

GATEWAY_ENV = {
    "FEDGATE_DATA_YEAR_EPSILON": "5",
    "FEDGATE_DEFAULT_ANALYST_QUOTA": "5",
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = start_federation(tmp_path_factory.mktemp("fed"), persons=2_000, seed=8, env=GATEWAY_ENV)
    try:
        # Indicator runs and packs are built by the gateway and signed by no analyst, so they run under
        # rules for every analyst, which the synthetic county's connectors accept (docs/security.md).
        register_everything(federation, analysts=("*",))
        yield federation
    finally:
        federation.stop()


@contextmanager
def _without_standing_rules(fed: Federation) -> Iterator[None]:
    """Every department revokes its standing rule for a while: queries wait for per-query approvals."""
    for name in fed.connectors:
        with fed.client(name) as admin:
            admin.revoke_rule(f"{name}-tests")
    try:
        yield
    finally:
        register_everything(fed, analysts=("*",), groups=False)  # a new version of each, audited


def _spent(client: GatewayClient, year: str = "2025") -> Decimal:
    """Epsilon spent on one data year (the synthetic county's data are 2025's)."""
    (budget,) = client.budget([year])["years"]
    return Decimal(budget["spent"])


def _extract_requests(fed: Federation, query_ids: set[str]) -> list[object]:
    with fed.client("auditor") as auditor:
        return [
            e
            for qid in sorted(query_ids)
            for e in auditor.audit_entries(action="connector.request", query_id=qid)["entries"]
        ]


def test_the_year_end_pack_charges_exactly_its_total_once(fed: Federation) -> None:
    with fed.client("analyst") as analyst:
        before = _spent(analyst)
        doc = analyst.run_pack("year_end", period="2025-12")
        after = _spent(analyst)
        # The calendar's default, within the smallest department cap (1.0 for every synthetic department).
        assert Decimal(doc["epsilon"]) == Decimal(1)
        assert after - before == Decimal(1)
        names = [i["indicator"] for i in doc["indicators"]]
        assert names == [
            "income_bands",
            "urban_rural_ratio",
            "income_distribution",
            "coverage",
            "key_groups",
            "early_warning",
        ]
        charged = sum(Decimal(q["epsilon"]) for i in doc["indicators"] for q in i["queries"])
        assert charged == Decimal(1)
        for indicator in doc["indicators"]:
            assert indicator["figures"], indicator["indicator"]
            assert any("proxy" in n for n in indicator["notes"])
            for f in indicator["figures"]:
                assert f["exact"] is None  # the gateway never shows an exact figure
                # An end is None only where nothing bounds it (a Gini with negative incomes allowed).
                if f["low"] is not None and f["high"] is not None:
                    assert f["low"] <= f["high"], f
                # Counting shares lie in [0, 1]; income shares need not when incomes can be negative.
                if f["figure"].startswith(("share", "coverage")) and f["value"] is not None:
                    assert 0 <= f["value"] <= 1, f
        groups = {f["label"] for f in doc["indicators"][4]["figures"]}
        assert groups == {"dibao", "fishery", "pensioner", "no_wage_earner", "migrant"}
        warning = doc["indicators"][5]
        assert any("Counts only" in n for n in warning["notes"])
        # Again: the same queries, the stored releases, the same figures, nothing charged.
        again = analyst.run_pack("year_end", period="2025-12")
        assert again == doc
        assert _spent(analyst) == after


def test_the_monthly_pack_releases_the_month_and_charges_its_data_years(fed: Federation) -> None:
    with fed.client("analyst") as analyst:
        before = {y: _spent(analyst, y) for y in ("2024", "2025")}
        doc = analyst.run_pack("monthly", period="2025-01")
        # January's early warning compares with December 2024: that part is charged to 2024 as well.
        assert Decimal(doc["epsilon"]) == Decimal("0.7")
        names = [i["indicator"] for i in doc["indicators"]]
        assert names == ["urban_rural_ratio", "coverage", "early_warning"]
        assert {(i["period_start"], i["period_end"]) for i in doc["indicators"]} == {("2025-01", "2025-01")}
        assert _spent(analyst, "2025") - before["2025"] == Decimal("0.7")
        assert _spent(analyst, "2024") - before["2024"] == Decimal("0.21")


def test_one_indicator_with_its_own_bands_and_epsilon(fed: Federation) -> None:
    with fed.client("analyst") as analyst:
        before = _spent(analyst)
        doc = analyst.run_indicator(
            "income_bands",
            period="2025-01..2025-12",
            epsilon="0.3",
            bands={"low": (0, 50_000), "mid": (50_000, 300_000)},
        )
        assert _spent(analyst) - before == Decimal("0.3")
        (result,) = doc["indicators"]
        assert {q["epsilon"] for q in result["queries"]} == {"0.18", "0.12"}
        assert {f["label"] for f in result["figures"]} == {"low", "mid"}
        assert {f["group"] for f in result["figures"]} >= {"county", "urban", "rural"}
        # The release family comes back as tables too: raw beside reconciled, every level adding up.
        (table,) = result["tables"]
        assert table["levels"] == ["county", "area", "urban_rural", "village"]
        for column in table["columns"]:
            cells = [c for c in table["cells"] if c["column"] == column]
            (county,) = (c["value"] for c in cells if c["level"] == "county")
            for level in ("urban_rural", "village"):
                assert sum(c["value"] for c in cells if c["level"] == level) == county


def test_refusals_name_the_field_and_charge_nothing(fed: Federation) -> None:
    with fed.client("analyst") as analyst:
        before = _spent(analyst)
        for call, field in (
            (lambda: analyst.run_indicator("income_bands", period="2025-12", epsilon="1.5"), "epsilon"),
            (lambda: analyst.run_indicator("income_bands", period="2025-12", bands={"x": (5, 1)}), "bands"),
            (lambda: analyst.run_indicator("no_such_indicator", period="2025-12"), "name"),
            (lambda: analyst.run_pack("monthly", period="2025-13"), "body.period"),
            (lambda: analyst.run_pack("year_end", period="2025-11"), "period"),
            (lambda: analyst.run_indicator("key_groups", period="2025-12", groups=["nobody"]), "groups.0"),
        ):
            with pytest.raises(GatewayError) as exc:
                call()
            assert exc.value.status in (404, 422) and exc.value.field == field, (exc.value, field)
        assert _spent(analyst) == before
    # Without a standing rule that admits them, every query waits for approval, nothing runs.
    with _without_standing_rules(fed), fed.client("other-analyst") as other:
        with pytest.raises(GatewayError) as exc:
            other.run_indicator("coverage", period="2025-12", epsilon="0.2")
        assert exc.value.status == 409 and exc.value.code == "not_approved"
        assert "waiting for" in str(exc.value)


def test_a_pack_that_does_not_fit_is_refused_before_any_extract(fed: Federation) -> None:
    with fed.client("analyst") as analyst:
        view = analyst.budget(["2025"])
    spent = Decimal(view["analyst_quota"]) - Decimal(view["years"][0]["analyst_remaining"])
    with fed.client("operator") as operator:
        operator._do("PUT", "/v1/budget/quotas/analyst", {"epsilon": str(spent + Decimal("0.5"))})
    try:
        with fed.client("analyst") as analyst:
            before = _spent(analyst)
            remaining = Decimal(analyst.budget(["2025"])["years"][0]["analyst_remaining"])
            assert remaining == Decimal("0.5")
            with pytest.raises(GatewayError) as exc:
                analyst.run_pack("monthly", period="2025-11", epsilon="0.9")
            assert exc.value.status == 409 and exc.value.code == "budget_exceeded"
            assert "data year 2025" in exc.value.message
            assert _spent(analyst) == before
            queries = {q["id"] for q in analyst.queries() if "2025-11 to 2025-11" in q["spec"]["purpose"]}
            assert queries, "the pack's queries were submitted"
            assert _extract_requests(fed, queries) == []
    finally:
        with fed.client("operator") as operator:
            operator._do("PUT", "/v1/budget/quotas/analyst", {"epsilon": "5"})


def test_the_command_line_lists_and_runs_indicators(fed: Federation, tmp_path: Path) -> None:
    env = {"FEDGATE_URL": fed.gateway.url, "FEDGATE_API_KEY": fed.keys["analyst"]}
    runner = CliRunner()
    listed = runner.invoke(app, ["indicators", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    library = json.loads(listed.output)
    assert {i["name"] for i in library["indicators"]} >= {"income_bands", "early_warning"}
    out, csv_path, png = tmp_path / "pack.json", tmp_path / "pack.csv", tmp_path / "pack.png"
    ran = runner.invoke(
        app,
        [
            "indicators",
            "run",
            "--pack",
            "year_end",
            "--period",
            "2025-12",
            "--json",
            str(out),
            "--csv",
            str(csv_path),
            "--plot",
            str(png),
        ],
        env=env,
    )
    assert ran.exit_code == 0, ran.output
    assert "Urban–rural ratio" in ran.output
    assert json.loads(out.read_text())["epsilon"] == "1"  # the pack of the first test, served again
    assert csv_path.read_text().count("\n") > 50
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_indicator_waiting_for_approvals_is_approved_in_one_batch_per_department(fed: Federation) -> None:
    with _without_standing_rules(fed):
        _approved_in_batches(fed)


def _approved_in_batches(fed: Federation) -> None:
    with fed.client("other-analyst") as other:
        with pytest.raises(GatewayError) as exc:
            other.run_indicator("income_bands", period="2025-12", epsilon="0.2")
        assert exc.value.code == "not_approved"
    runner = CliRunner()
    signed = 0
    for department in ("register", "tax", "social", "utility", "civil"):
        key = fed.county / "keys" / f"{department}-approval.key"
        env = {"FEDGATE_URL": fed.gateway.url, "FEDGATE_API_KEY": fed.keys[department], "COLUMNS": "250"}
        args = ["approve", "--pending", "--match", "indicator income_bands", "--key", str(key), "--yes"]
        args += fed.approve_args(department)  # planned against the department's own connectors
        out = runner.invoke(app, args, env=env)
        assert out.exit_code == 0, out.output
        assert "total epsilon of the batch" in out.output or "nothing waits" in out.output
        signed += (
            int(out.output.split(" approvals signed")[0].split()[-1])
            if "approvals signed" in out.output
            else 0
        )
    assert signed > 0
    with fed.client("other-analyst") as other:
        doc = other.run_indicator("income_bands", period="2025-12", epsilon="0.2")
        assert doc["indicators"][0]["figures"]
        # The filter kept the earlier coverage queries out of the batch: they still wait.
        waiting = [q for q in other.queries() if "indicator coverage" in q["spec"]["purpose"]]
        assert waiting and all(q["state"] == "submitted" for q in waiting)


def test_a_pack_whose_connector_is_down_charges_nothing(fed: Federation) -> None:
    """Last in the module: it stops a connector for good."""
    fed.connectors["civil"].stop()
    with fed.client("analyst") as analyst:
        before = _spent(analyst)
        with pytest.raises(GatewayError) as exc:
            analyst.run_pack("monthly", period="2025-10", epsilon="0.5")
        assert exc.value.status == 503 and exc.value.code == "connector_unavailable"
        assert "connector civil" in exc.value.message  # the preflight names it, before any reservation
        assert _spent(analyst) == before
        queries = {q["id"] for q in analyst.queries() if "2025-10 to 2025-10" in q["spec"]["purpose"]}
        assert queries and _extract_requests(fed, queries) == []
    with fed.client("auditor") as auditor:
        failed = auditor.audit_entries(action="indicator.failed")["entries"]
    assert failed and failed[-1]["event"]["indicator"] == "pack:monthly"
    assert (failed[-1]["event"]["reason"], failed[-1]["event"]["refunded"]) == ("preflight", [])
