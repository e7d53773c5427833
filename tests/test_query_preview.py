"""Accuracy before spending: `POST /v1/queries/preview`, the client and `fedgate query estimate` against a
live loopback federation. A preview reads no data, stores and charges nothing, is audited like any
request, and states exactly the half-widths of the release that follows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from county_fixture import INCOME_TERMS, headline_query
from typer.testing import CliRunner

from aggregation.query import Measure, QuerySpec, Statistic, StatisticKind, Term
from connectors.config import Unit
from gateway.cli.main import app
from gateway.client import GatewayError
from gateway.dev.localfed import Federation, register_everything, start_federation

GATEWAY_ENV = {
    "FEDGATE_WINDOW_EPSILON": "5",
    "FEDGATE_MULTI_YEAR_EPSILON": "20",
    "FEDGATE_DEFAULT_ANALYST_QUOTA": "5",
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = start_federation(tmp_path_factory.mktemp("fed"), persons=1_500, seed=5, env=GATEWAY_ENV)
    try:
        register_everything(federation)
        yield federation
    finally:
        federation.stop()


def _count_sum_query() -> QuerySpec:
    return QuerySpec(
        purpose="Households and their income by urban-rural code, previewed then run",
        unit=Unit.HOUSEHOLD,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(terms=INCOME_TERMS, lower=0, upper=1_500_000, label="disposable income proxy"),
        group_by=("register.persons.urban_rural",),
        statistics=(
            Statistic(kind=StatisticKind.COUNT),
            Statistic(kind=StatisticKind.SUM),
            Statistic(kind=StatisticKind.MEAN),
        ),
        epsilon=Decimal("0.5"),
    )


def _requests(fed: Federation) -> int:
    with fed.client("auditor") as auditor:
        return len(auditor.audit_entries(action="connector.request", limit=1000)["entries"])


def test_a_preview_reads_nothing_stores_nothing_charges_nothing_and_is_audited(fed: Federation) -> None:
    spec = headline_query(epsilon="0.4")
    with fed.client("analyst") as analyst:
        budget, listed, requests = analyst.budget(), analyst.queries(), _requests(fed)
        doc = analyst.preview(spec)
        assert analyst.budget() == budget
        assert analyst.queries() == listed
    assert _requests(fed) == requests  # no connector was asked for anything
    assert doc["query_id"] == spec.query_id and doc["epsilon"] == "0.4" and doc["unit"] == "household"
    (histogram,) = [s for s in doc["statistics"] if s["statistic"] == "histogram"]
    assert histogram["unit"] == "households" and histogram["per"] == "cell and bin"
    assert histogram["half_width"] > 0
    assert any(
        w.startswith("at this ε, each register.persons.village histogram bin's count is ±")
        for w in doc["warnings"]
    )
    with fed.client("auditor") as auditor:
        entries = auditor.audit_entries(action="http.request", limit=1000)["entries"]
    previews = [e for e in entries if e["event"].get("path") == "/v1/queries/preview"]
    assert previews and previews[-1]["event"]["status"] == 200


def test_the_preview_states_the_half_widths_of_the_release_that_follows(fed: Federation) -> None:
    for spec in (headline_query(epsilon="0.3"), _count_sum_query()):
        with fed.client("analyst") as analyst:
            doc = analyst.preview(spec)
            view = analyst.submit(spec)
            release = analyst.run(view["id"])["result"]["release"]
        expected = {s["statistic"]: s["half_width"] for s in doc["statistics"] if s["half_width"] is not None}
        assert release["scales"] == {
            s["quantity"]: s["scale"] for s in doc["statistics"] if s["quantity"] in release["scales"]
        }
        checked = 0
        for cell in release["cells"]:
            if cell["statistic"] not in expected or cell["low"] <= 0:
                continue  # intervals reaching below 0 are shown clamped at 0, like the value
            assert (cell["high"] - cell["low"]) / 2 == expected[cell["statistic"]], cell
            checked += 1
        assert checked > 0
        if "mean" in {c["statistic"] for c in release["cells"]}:
            (mean,) = [s for s in doc["statistics"] if s["statistic"] == "mean"]
            assert set(mean["half_width_by_cell_size"]) == {"100", "1000", "10000"}


def test_bounds_wider_than_the_datasets_declare_are_warned(fed: Federation) -> None:
    spec = QuerySpec(
        purpose="Pensions per person, with a bound far above what the dataset declares",
        unit=Unit.PERSON,
        period_start="2025-01",
        period_end="2025-12",
        measure=Measure(
            terms=(Term(dataset="social.pensions", measure="pension_income"),),
            lower=0,
            upper=2_000_000_000,  # far above what the pensions dataset declares per person
        ),
        statistics=(Statistic(kind=StatisticKind.SUM),),
        epsilon=Decimal("0.2"),
        member_cap=4,
    )
    with fed.client("analyst") as analyst:
        doc = analyst.preview(spec)
    assert any(w.startswith("query bounds exceed the dataset's declared bounds") for w in doc["warnings"])
    assert any("member cap" in w for w in doc["warnings"])
    headline = analyst_preview(fed, headline_query())
    assert not any("declared bounds" in w for w in headline["warnings"])


def analyst_preview(fed: Federation, spec: QuerySpec) -> dict[str, object]:
    with fed.client("analyst") as analyst:
        return analyst.preview(spec)  # type: ignore[no-any-return]


def test_a_preview_is_refused_with_the_field_and_only_analysts_may_ask(fed: Federation) -> None:
    bad = headline_query().model_dump(mode="json")
    bad["group_by"] = ["register.persons.no_such_dimension"]
    with fed.client("analyst") as analyst, pytest.raises(GatewayError) as err:
        analyst.preview(bad)
    assert err.value.status == 422 and err.value.field == "group_by.0"
    with fed.client("auditor") as auditor, pytest.raises(GatewayError) as err:
        auditor.preview(headline_query())
    assert err.value.status == 403


def test_fedgate_query_estimate_prints_the_half_widths(fed: Federation, tmp_path: Path) -> None:
    spec_file = tmp_path / "query.json"
    spec_file.write_text(headline_query().model_dump_json(), encoding="utf-8")
    args = ["query", "estimate", str(spec_file), "--url", fed.gateway.url, "--api-key", fed.keys["analyst"]]
    shown = CliRunner().invoke(app, args, terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "expected accuracy" in shown.output and "histogram" in shown.output and "warning" in shown.output
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["query_id"] == headline_query().query_id
