"""The default monitoring calendar end to end at the default budget settings: twelve monthly packs and the
year-end pack of one data year (and the next January's, whose early warning reads December) fit that
year's budget; the rolling 12-month figures come free with the twelfth month; a thirteenth spend on the
year is refused, with nothing charged and nothing extracted."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from typer.testing import CliRunner

from aggregation.indicators.config_file import parse_monitoring_config
from aggregation.indicators.pack import MONTHLY, YEAR_END, calendar_charges, calendar_runs
from connectors.synth.monitoring import monitoring_config
from gateway.cli.main import app
from gateway.client import GatewayError
from gateway.dev.localfed import Federation, register_everything, start_federation
from gateway.dev.seed_groups import SEED_GROUPS
from gateway.settings import GatewaySettings

pytestmark = [pytest.mark.slow]

GROUP = "dibao"
"""One key group keeps the year-end pack small; the calendar's epsilon does not depend on how many."""


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    # Default budget settings: no FEDGATE_DATA_YEAR_EPSILON or quota in the environment.
    federation = start_federation(tmp_path_factory.mktemp("calendar"), persons=500, seed=12)
    try:
        register_everything(federation, analysts=("*",))  # indicator runs carry no analyst's signature
        yield federation
    finally:
        federation.stop()


def _years(budget: dict[str, object]) -> dict[str, Decimal]:
    return {y["year"]: Decimal(y["spent"]) for y in budget["years"]}  # type: ignore[attr-defined]


def test_the_calendar_fits_a_data_year_and_a_thirteenth_spend_is_refused(fed: Federation) -> None:
    defaults = GatewaySettings()
    groups = tuple(g.definition for g in SEED_GROUPS if g.definition.name == GROUP)
    planned = calendar_charges(2025, parse_monitoring_config(monitoring_config()), groups)
    assert planned == Decimal("9.61") <= defaults.data_year_epsilon
    runs = calendar_runs(2025)
    assert [(p.name, period) for p, period in runs][-2:] == [("year_end", "2025-12"), ("monthly", "2026-01")]
    with fed.client("analyst") as analyst:
        docs = {}
        for pack, period in runs:
            docs[pack.name, period] = analyst.run_pack(pack.name, period=period, groups=[GROUP])
        spent = _years(analyst.budget())
        view = analyst.budget(["2025"])
    # Each run charged its calendar epsilon; 2025 carries exactly what the calendar plans for it.
    assert {Decimal(d["epsilon"]) for (name, _), d in docs.items() if name == "monthly"} == {
        MONTHLY.default_epsilon
    }
    assert Decimal(docs["year_end", "2025-12"]["epsilon"]) == YEAR_END.default_epsilon
    assert spent == {"2024": Decimal("0.21"), "2025": planned, "2026": Decimal("0.7")}
    (year,) = view["years"]
    assert Decimal(year["remaining"]) == defaults.data_year_epsilon - planned
    assert Decimal(year["analyst_remaining"]) == Decimal(view["analyst_quota"]) - planned

    # The twelfth month adds the rolling 12-month figures from the twelve monthly releases, at no cost.
    december = [
        i for i in docs["monthly", "2025-12"]["indicators"] if i["indicator"] == "urban_rural_ratio_12m"
    ]
    (rolling,) = december
    assert (rolling["period_start"], rolling["period_end"], rolling["epsilon"]) == ("2025-01", "2025-12", "0")
    assert len(rolling["queries"]) == 24
    # A 500-person county is far too small for these figures to mean much: only their shape is checked
    # here; their accuracy at county scale is measured by bench/bench_calendar.py.
    assert {(f["figure"], f["group"]) for f in rolling["figures"]} == {
        ("per_capita_income", "county"),
        ("per_capita_income", "urban"),
        ("per_capita_income", "rural"),
        ("urban_rural_ratio", "county"),
    }
    assert all(f["exact"] is None for f in rolling["figures"])
    assert all(f["low"] is None or f["low"] <= f["high"] for f in rolling["figures"])
    november = docs["monthly", "2025-11"]["indicators"]
    assert "urban_rural_ratio_12m" not in {i["indicator"] for i in november}  # December 2024 never ran

    # A thirteenth spend on 2025, here another monthly pack for one of its months, finds the year spent
    # (the ledger's own tests move the clock years on: the refusal does not depend on the date).
    with fed.client("analyst") as analyst:
        with pytest.raises(GatewayError) as refused:
            analyst.run_pack("monthly", period="2025-06", epsilon="0.5", groups=[GROUP])
        after = _years(analyst.budget())
        waiting = {q["id"] for q in analyst.queries() if "2025-06 to 2025-06" in q["spec"]["purpose"]}
    err = refused.value
    assert (err.status, err.code) == (409, "budget_exceeded")
    remaining = (defaults.data_year_epsilon - planned).normalize()
    assert "data year 2025" in err.message and f"remaining epsilon={remaining}" in err.message
    assert "requested epsilon=0.5" in err.message
    assert after == spent  # nothing charged to any year
    with fed.client("auditor") as auditor:
        served = [
            e
            for qid in sorted(waiting)
            for e in auditor.audit_entries(action="connector.request", query_id=qid)["entries"]
        ]
        refusals = auditor.audit_entries(action="budget.refused")["entries"]
    fresh = waiting - {q["query_id"] for i in docs["monthly", "2025-06"]["indicators"] for q in i["queries"]}
    assert fresh and not [e for e in served if e["event"]["query_id"] in fresh]
    assert refusals and refusals[-1]["event"]["data_year"] == "2025"


def test_the_budget_per_data_year_on_the_command_line_and_its_refusals(fed: Federation) -> None:
    """Runs after the calendar above: 2025 shows what the calendar spent, in both languages."""
    env = {"FEDGATE_URL": fed.gateway.url, "FEDGATE_API_KEY": fed.keys["analyst"]}
    shown = CliRunner().invoke(app, ["budget", "--year", "2025", "--year", "2031"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "数据年度" in shown.output
    rows = {line.split("│")[1].strip(): line for line in shown.output.splitlines() if line.count("│") >= 4}
    assert "9.61" in rows["2025"] and "0.39" in rows["2025"]
    assert "10" in rows["2031"]  # a data year nobody has read yet has its whole budget
    url = fed.gateway.url + "/v1/budget"
    headers = {"authorization": f"Bearer {fed.keys['analyst']}"}
    for bad in ("25", "2025-01", "year"):
        answer = httpx.get(url, params={"year": bad}, headers=headers)
        assert answer.status_code == 422, bad
        assert answer.json()["error"]["field"] == "query.year.0", answer.json()
