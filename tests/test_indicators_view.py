"""Rendering an indicator run (tables, CSV, chart) and the `fedgate indicators` command line.

The run documents are real: the year-end pack's indicators evaluated in process on a synthetic county, once
with DP noise and once more without noise to fill `exact` (as the demo does). The command line is tested
for what it refuses before any request and, against an in-process gateway, for `list` and gateway errors.
"""

from __future__ import annotations

import csv
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import indicator_fixture as fx
import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from typer.testing import CliRunner

from aggregation.indicators import INDICATORS, PACKS, evaluate
from connectors.config import load_config
from connectors.service import build_service
from connectors.synth import generate_county
from connectors.synth.monitoring import write_monitoring_config
from gateway.api.indicators import IndicatorsRunOut
from gateway.app import build_context, create_app
from gateway.auth import Role, create_principal
from gateway.cli import indicators as indicators_cli
from gateway.cli.indicators_view import (
    CSV_COLUMNS,
    format_interval,
    format_value,
    print_run,
    write_csv,
    write_plot,
)
from gateway.client import GatewayClient
from gateway.context import GatewayContext
from gateway.dev.seed_groups import SEED_GROUPS, synthetic_config
from gateway.settings import GatewaySettings

CONNECTORS = ("register", "tax", "social", "utility", "civil")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The year-end pack for 2025-12 on a 3,000-person county: "noisy" (no exact) and "exact" (with it)."""
    county = tmp_path_factory.mktemp("county")
    generate_county(county, persons=3000, seed=5)
    services = {n: build_service(load_config(county / "connectors" / f"{n}.yaml")) for n in CONNECTORS}
    config = synthetic_config()
    groups = tuple(g.definition for g in SEED_GROUPS)
    noisy, exact = [], []
    for template, params in PACKS["year_end"].params(
        period="2025-12", epsilon=Decimal(2), analyst="ana", groups=groups
    ):
        queries = template.queries(params, config)
        frames = fx.frames(queries, services)
        result = evaluate(template, params, config, queries, fx.release(queries, services, frames))
        truth = evaluate(template, params, config, queries, fx.release(queries, services, frames, exact=True))
        noisy.append(result.model_dump(mode="json"))
        values = {f.key: f.value for f in truth.figures}
        for f in result.figures:
            f.exact = values[f.key]
        exact.append(result.model_dump(mode="json"))
    head = {"pack": "year_end", "period": "2025-12", "epsilon": "2"}
    return {"noisy": {**head, "indicators": noisy}, "exact": {**head, "indicators": exact}}


def _render(doc: dict[str, Any], **kwargs: Any) -> str:
    console = Console(record=True, width=200)
    print_run(console, doc, **kwargs)
    return console.export_text()


def _rows(text: str) -> list[list[str]]:
    """The body rows of every table in rendered text, as stripped cells."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def _only(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (item,) = [i for i in doc["indicators"] if i["indicator"] == name]
    return {"pack": None, "period": "2025-12", "epsilon": item["epsilon"], "indicators": [item]}


def _figure(doc: dict[str, Any], indicator: str, figure: str, group: str) -> dict[str, Any]:
    (item,) = [i for i in doc["indicators"] if i["indicator"] == indicator]
    return next(f for f in item["figures"] if f["figure"] == figure and f["group"] == group)


def test_the_run_covers_every_indicator_with_exact_values(runs: dict[str, dict[str, Any]]) -> None:
    names = [i["indicator"] for i in runs["exact"]["indicators"]]
    assert sorted(names) == sorted(INDICATORS)
    assert all(f["exact"] is not None for i in runs["exact"]["indicators"] for f in i["figures"])
    assert all(f["exact"] is None for i in runs["noisy"]["indicators"] for f in i["figures"])


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.28814, "share", "28.8%"),
        (52180.75, "yuan", "52,181"),
        (-1234.4, "yuan", "-1,234"),
        (2.340459, "ratio", "2.340"),
        (1234.6, "households", "1,235"),
        (41.02, "persons", "41"),
        (0.5312, "index", "0.531"),
        (None, "share", "—"),
        (float("nan"), "yuan", "—"),
    ],
)
def test_values_are_formatted_by_unit(value: float | None, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_an_interval_joins_its_ends_without_a_comma_list() -> None:
    assert format_interval(44747.2, 59432.8, "yuan") == "44,747 – 59,433"
    assert format_interval(None, 1.0, "share") == "—"


def test_print_run_shows_every_indicator_its_figures_and_the_total(runs: dict[str, dict[str, Any]]) -> None:
    doc = runs["exact"]
    text = _render(doc)
    for item in doc["indicators"]:
        assert item["title"] in text and item["title_zh"] in text
        assert f"ε charged {item['epsilon']}" in text
        assert f"{item['period_start']}..{item['period_end']}" in text
    assert "total ε of this pack year_end for 2025-12: 2" in text
    rows = _rows(text)
    county = _figure(doc, "income_bands", "share", "county")
    assert [
        "county",
        "share",
        county["label"],
        f"{county['value']:.1%}",
        f"{county['low']:.1%} – {county['high']:.1%}",
        f"{county['exact']:.1%}",
    ] in rows
    urban = _figure(doc, "urban_rural_ratio", "per_capita_income", "urban")
    assert [
        "urban",
        "per_capita_income",
        urban["label"],
        f"{urban['value']:,.0f}",
        f"{urban['low']:,.0f} – {urban['high']:,.0f}",
        f"{urban['exact']:,.0f}",
    ] in rows
    ratio = _figure(doc, "urban_rural_ratio", "urban_rural_ratio", "county")
    # The ratio is undefined (shown as a dash, with its reason) when its denominator is not clearly positive.
    shown = format_value(ratio["value"], ratio["unit"])
    assert ["county", "urban_rural_ratio", ratio["label"], shown] in [r[:4] for r in rows]
    if ratio["value"] is None:
        assert f"county urban_rural_ratio: undefined ({ratio['note']})" in " ".join(text.split())
    dibao = _figure(doc, "key_groups", "households", "county")
    assert ["county", "households", "dibao", f"{round(dibao['value']):,}"] in [r[:4] for r in rows]


def test_the_exact_column_is_there_only_when_a_figure_has_one(runs: dict[str, dict[str, Any]]) -> None:
    with_exact = _render(runs["exact"])
    without = _render(runs["noisy"])
    assert len(re.findall(r"┃ +exact +┃", with_exact)) == len(runs["exact"]["indicators"])
    assert not re.search(r"┃ +exact +┃", without)
    assert "DP value" in without and "95% interval" in without


def test_notes_are_printed_and_early_warning_says_counts_only(runs: dict[str, dict[str, Any]]) -> None:
    text = _render(runs["noisy"])
    flat = " ".join(text.split())
    for note in {n for i in runs["noisy"]["indicators"] for n in i["notes"]}:
        assert " ".join(note.split()) in flat
    warning = _render(_only(runs["noisy"], "early_warning"))
    assert "Counts only: no household is named or listed" in warning
    assert "no list of households" in " ".join(warning.split())


def test_villages_beyond_max_groups_are_left_out_and_counted(runs: dict[str, dict[str, Any]]) -> None:
    doc = _only(runs["noisy"], "coverage")
    villages = [f for f in doc["indicators"][0]["figures"] if f["group"] != "county"]
    assert len(villages) > 3
    text = _render(doc, max_groups=3)
    shown = sorted(f["group"] for f in villages)[:3]
    hidden = sorted(f["group"] for f in villages)[3:]
    assert all(code in text for code in shown)
    assert not any(code in text for code in hidden)
    assert f"… {len(hidden)} more" in text
    assert f"{len(hidden)} rows left out" in text and "the CSV has them all" in text
    everything = _render(doc, max_groups=len(villages))
    assert "left out" not in everything and all(f["group"] in everything for f in villages)


def test_county_urban_and_rural_come_first(runs: dict[str, dict[str, Any]]) -> None:
    text = _render(_only(runs["noisy"], "income_bands"), max_groups=1)
    rows = [r[0] for r in _rows(text)]
    first_band = rows[: rows.index(next(r for r in rows if r.startswith("…"))) + 1]
    assert first_band[:3] == ["county", "urban", "rural"]
    assert first_band[3].isdigit() and first_band[4].startswith("…")


def test_labels_are_printed_as_given_not_read_as_markup(runs: dict[str, dict[str, Any]]) -> None:
    doc = json.loads(json.dumps(_only(runs["noisy"], "income_bands")))
    for f in doc["indicators"][0]["figures"]:
        f["label"] = "[bold]low[/bold]"
    assert "[bold]low[/bold]" in _render(doc)


def test_a_run_as_the_gateway_sends_it_renders_and_plots(
    runs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    # The gateway's response model writes an undefined (NaN) interval end as null.
    doc = _only(runs["noisy"], "income_distribution")
    points = doc["indicators"][0]["curves"]["lorenz household income"]
    doc["indicators"][0]["curves"]["lorenz household income"] = [
        {**points[0], "low": math.nan, "high": math.nan},
        *points[1:],
    ]
    wire = json.loads(IndicatorsRunOut.model_validate(doc).model_dump_json())
    assert wire["indicators"][0]["curves"]["lorenz household income"][0]["low"] is None
    assert "Income distribution" in _render(wire)
    assert write_plot(wire, tmp_path / "wire.png").read_bytes()[:8] == PNG_MAGIC


def test_write_csv_has_one_row_per_figure_with_its_values(
    runs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    doc = runs["exact"]
    path = write_csv(doc, tmp_path / "run.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    figures = [(i, f) for i in doc["indicators"] for f in i["figures"]]
    assert len(rows) == len(figures)
    for row, (item, f) in zip(rows, figures, strict=True):
        assert row["indicator"] == item["indicator"] and row["epsilon"] == item["epsilon"]
        assert (row["period_start"], row["period_end"]) == (item["period_start"], item["period_end"])
        assert (row["figure"], row["label"], row["group"], row["unit"]) == (
            f["figure"],
            f["label"],
            f["group"],
            f["unit"],
        )
        for col in ("value", "low", "high", "exact"):
            assert float(row[col]) == pytest.approx(f[col]) if f[col] is not None else row[col] == ""
    noisy = write_csv(runs["noisy"], tmp_path / "noisy.csv")
    with noisy.open(encoding="utf-8", newline="") as fh:
        assert {r["exact"] for r in csv.DictReader(fh)} == {""}


def test_write_plot_writes_a_png_and_an_svg(runs: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    png = write_plot(runs["exact"], tmp_path / "run.png")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    svg = write_plot(runs["noisy"], tmp_path / "run.svg")
    root = ET.parse(svg).getroot()  # noqa: S314 (our own file)
    assert root.tag.endswith("svg")
    text = svg.read_text(encoding="utf-8")
    # English titles: a CJK title would need a font the server may lack.
    assert "Lorenz curves" in text
    assert not any(i["title_zh"] in text for i in runs["noisy"]["indicators"])


@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_a_run_with_one_indicator_still_plots(
    runs: dict[str, dict[str, Any]], tmp_path: Path, name: str
) -> None:
    png = write_plot(_only(runs["noisy"], name), tmp_path / f"{name}.png")
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_write_plot_refuses_other_suffixes_and_empty_runs(
    runs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        write_plot(runs["noisy"], tmp_path / "run.pdf")
    with pytest.raises(ValueError, match="nothing to plot"):
        write_plot({**runs["noisy"], "indicators": []}, tmp_path / "empty.png")
    assert not (tmp_path / "run.pdf").exists()


# --- the command line


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    env = {"FEDGATE_URL": "http://testserver", "FEDGATE_API_KEY": "k", "COLUMNS": "200", **(env or {})}
    return CliRunner().invoke(indicators_cli.indicators_app, args, env=env)


@pytest.fixture
def no_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any request fails the test: these commands must be refused before one is made."""

    def refuse(url: str, key: str) -> GatewayClient:
        raise AssertionError("a request was made")

    monkeypatch.setattr(indicators_cli, "client_factory", refuse)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "income_bands", "--pack", "monthly", "--period", "2025-12"], "not both"),
        (["run", "--period", "2025-12"], "give an indicator NAME"),
        (["run", "income_bands", "--period", "2025-12", "--band", "100k-500k"], "LABEL=LOW:HIGH"),
        (["run", "income_bands", "--period", "2025-12", "--band", "a=1:x"], "LABEL=LOW:HIGH"),
        (["run", "income_bands", "--period", "2025-12", "--band", "=1:2"], "LABEL=LOW:HIGH"),
        (["run", "income_bands", "--period", "2025-12", "--band", "a=1:2", "--band", "a=3:4"], "twice"),
        (["run", "--pack", "monthly", "--period", "2025-12", "--band", "a=1:2"], "not to a pack"),
        (["run", "--pack", "monthly", "--period", "2025-12", "--baseline", "2024-12"], "not to a pack"),
        (["run", "income_bands", "--period", "2025-12", "--epsilon", "lots"], "not a number"),
        (["run", "income_bands", "--period", "2025-12", "--plot", "run.pdf"], ".png or .svg"),
        (["run", "income_bands"], "--period"),
    ],
)
def test_arguments_that_cannot_be_right_are_refused_before_any_request(
    no_gateway: None, args: list[str], message: str
) -> None:
    result = _invoke(args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split())


def test_fedgate_has_the_indicators_commands(no_gateway: None) -> None:
    from gateway.cli.main import app

    result = CliRunner().invoke(
        app,
        ["indicators", "run", "--period", "2025-12"],
        env={"FEDGATE_URL": "x", "FEDGATE_API_KEY": "k", "COLUMNS": "200"},
    )
    assert result.exit_code == 2 and "give an indicator NAME" in result.output
    assert "indicators" in (CliRunner().invoke(app, ["--help"]).output)


def test_list_shows_each_release_as_its_fraction_of_the_indicators_epsilon() -> None:
    weights = [{"share": "1/2"}, {"share": "1/3"}]
    assert indicators_cli.normalized_shares(weights) == ["3/5", "2/5"]
    assert indicators_cli.normalized_shares([{"share": "1/groups"}]) == ["1/groups"]


def test_parse_bands_reads_labels_and_yuan() -> None:
    bands = indicators_cli.parse_bands(["100k–500k=100000:500000", "low=-200_000:0"])
    assert bands == {"100k–500k": (100_000, 500_000), "low": (-200_000, 0)}


class _Through(httpx.BaseTransport):
    """Hands the client's requests to the in-process app (the client takes any httpx transport)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An in-process gateway (no connectors registered) behind the CLI, started with the synthetic county's
    monitoring configuration file; yields an analyst's API key."""
    monitoring = write_monitoring_config(tmp_path / "monitoring.yaml")
    settings = GatewaySettings(state_dir=tmp_path / "state", monitoring_config_file=monitoring)
    ctx: GatewayContext = build_context(settings)
    _, key = create_principal(ctx.engine, role=Role.ANALYST, name="ana", department=None)
    http = TestClient(create_app(ctx))
    monkeypatch.setattr(
        indicators_cli, "client_factory", lambda url, k: GatewayClient(url, k, transport=_Through(http))
    )
    yield key
    ctx.engine.dispose()


def test_list_prints_the_library_and_its_json(gateway: str) -> None:
    listed = _invoke(["list"], {"FEDGATE_API_KEY": gateway})
    assert listed.exit_code == 0, listed.output
    for name, template in INDICATORS.items():
        assert name in listed.stdout and template.title_zh in listed.stdout
    assert "by_village" in listed.stdout and "3/5" in listed.stdout
    # urban_rural_ratio declares weights 1/2 and 1/3: it spends 3/5 and 2/5 of its epsilon.
    ratio = next(r for r in _rows(listed.stdout) if r[0] == "urban_rural_ratio")
    assert ratio[3:5] == ["income_sum", "3/5"]
    assert "monthly" in listed.stdout and "1/4" in listed.stdout
    # The configuration in force: its version, its income proxy and its key groups.
    assert "monitoring configuration v1" in listed.stdout
    assert "tax.wages.wage_income" in listed.stdout and "低保户" in listed.stdout
    as_json = _invoke(["list", "--json"], {"FEDGATE_API_KEY": gateway})
    library = json.loads(as_json.stdout)
    assert {i["name"] for i in library["indicators"]} == set(INDICATORS)
    assert [p["name"] for p in library["packs"]] == ["monthly", "year_end"]
    assert library["monitoring"]["version"] == 1 and library["monitoring"]["source"].endswith(
        "monitoring.yaml"
    )


def test_gateway_errors_print_their_code_and_exit_1(gateway: str) -> None:
    unknown = _invoke(["run", "no_such", "--period", "2025-12", "--json"], {"FEDGATE_API_KEY": gateway})
    assert unknown.exit_code == 1
    assert "not_found" in unknown.output and "income_bands" in unknown.output
    pack = _invoke(["run", "--pack", "weekly", "--period", "2025-12"], {"FEDGATE_API_KEY": gateway})
    assert pack.exit_code == 1 and "no pack named 'weekly'" in pack.output
    wrong_key = _invoke(["list"], {"FEDGATE_API_KEY": "fg_not_a_key"})
    assert wrong_key.exit_code == 1 and "401" in wrong_key.output


def test_json_takes_a_file_or_stands_alone(no_gateway: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []
    original = indicators_cli._OptionalJsonValue.parse_args

    def spy(self: Any, ctx: Any, args: list[str]) -> list[str]:
        out = original(self, ctx, args)
        seen.append(ctx.params.get("json_out"))
        return out

    monkeypatch.setattr(indicators_cli._OptionalJsonValue, "parse_args", spy)
    # The plot suffix is checked after parsing, so each run stops there without a request.
    for args, expected in [
        (["--plot", "x.pdf", "--json"], "-"),
        (["--json", "--plot", "x.pdf"], "-"),
        (["--json", "-", "--plot", "x.pdf"], "-"),
        (["--json", "out.json", "--plot", "x.pdf"], "out.json"),
        (["--plot", "x.pdf"], None),
    ]:
        result = _invoke(["run", "income_bands", "--period", "2025-12", *args])
        assert result.exit_code == 2 and ".png or .svg" in result.output
        assert seen[-1] == expected


def test_save_writes_the_json_csv_and_plot_the_command_asks_for(
    runs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    import typer

    from gateway.cli.common import set_lang
    from gateway.i18n import translate

    set_lang("en")  # what `fedgate --lang en` does
    doc = runs["exact"]
    console = Console(record=True, width=200)
    indicators_cli.save(
        doc,
        json_out=str(tmp_path / "run.json"),
        csv_path=tmp_path / "run.csv",
        plot_path=tmp_path / "run.svg",
        info=console,
    )
    # Compared as JSON text: a Lorenz band can hold NaN, which never equals itself.
    written = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert json.dumps(written, sort_keys=True) == json.dumps(doc, sort_keys=True)
    # People read the command's CSV: its headers are in the output language.
    headers = ",".join(translate(f"columns.{c}", "en") for c in CSV_COLUMNS)
    assert (tmp_path / "run.csv").read_text(encoding="utf-8-sig").startswith(headers)
    ET.parse(tmp_path / "run.svg")  # noqa: S314 (our own file)
    assert console.export_text().count("wrote ") == 3
    with pytest.raises(typer.Exit) as stopped:
        indicators_cli.save(
            doc, json_out=None, csv_path=tmp_path / "missing" / "run.csv", plot_path=None, info=console
        )
    assert stopped.value.exit_code == 2
