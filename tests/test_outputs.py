"""Outputs people use: DataFrames with names beside codes, XLSX workbooks with a notes sheet, charts with
Chinese labels, translated headers, and terminal tables that fit 100 columns without cutting a value.

The results are real: queries and the year-end pack released through OpenDP on a small synthetic county
in process (as `tests/indicator_fixture.py` composes them); the names come from the county's published
code lists through the connectors' catalog schemas.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import indicator_fixture as fx
import pytest
from county_fixture import headline_query
from openpyxl import load_workbook
from rich.console import Console

from aggregation.indicators import PACKS, SubQuery, evaluate
from aggregation.query import Statistic, StatisticKind
from connectors.config import load_config, read_codelist_names
from connectors.service import ConnectorService, build_service
from connectors.synth import generate_county
from gateway.cli.indicators_view import print_run
from gateway.cli.query_view import print_result, write_csv, write_plot
from gateway.codenames import CodeNames
from gateway.dev.seed_groups import SEED_GROUPS, synthetic_config
from gateway.exports import notes_lines, write_xlsx
from gateway.fonts import cjk_font
from gateway.frames import query_frame, run_frame
from gateway.i18n import Lang, translate

CONNECTORS = ("register", "tax", "social", "utility", "civil")
VILLAGE = "register.persons.village"
PROBS = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("county")
    generate_county(root, persons=3000, seed=5)
    return root


@pytest.fixture(scope="module")
def services(county: Path) -> dict[str, ConnectorService]:
    return {n: build_service(load_config(county / "connectors" / f"{n}.yaml")) for n in CONNECTORS}


@pytest.fixture(scope="module")
def names(services: dict[str, ConnectorService]) -> CodeNames:
    return CodeNames.from_catalog([s.schema for s in services.values()])


def _result(spec: Any, services: dict[str, ConnectorService]) -> dict[str, Any]:
    """A query released through OpenDP, in the shape the gateway stores and serves it."""
    queries = [SubQuery(role="q", spec=spec)]
    release = fx.release(queries, services, fx.frames(queries, services))["q"]
    return {
        "query_id": spec.query_id,
        "epsilon": str(spec.epsilon),
        "neighbouring": spec.neighbouring.value,
        "notes": ["Disposable income is a proxy built from what departments hold."],
        "release": release,
    }


@pytest.fixture(scope="module")
def bands(services: dict[str, ConnectorService]) -> dict[str, Any]:
    return _result(headline_query(), services)


@pytest.fixture(scope="module")
def quantiles(services: dict[str, ConnectorService]) -> dict[str, Any]:
    spec = headline_query().model_copy(
        update={
            "statistics": (
                Statistic(kind=StatisticKind.QUANTILES, probs=PROBS, edges=tuple(range(0, 600_000, 20_000))),
            )
        }
    )
    return _result(spec, services)


@pytest.fixture(scope="module")
def pack(services: dict[str, ConnectorService]) -> dict[str, Any]:
    """The year-end pack for 2025-12, released through OpenDP (no exact values)."""
    config = synthetic_config()
    groups = tuple(g.definition for g in SEED_GROUPS)
    items = []
    for template, params in PACKS["year_end"].params(
        period="2025-12", epsilon=Decimal(2), analyst="ana", groups=groups
    ):
        queries = template.queries(params, config)
        released = fx.release(queries, services, fx.frames(queries, services))
        items.append(evaluate(template, params, config, queries, released).model_dump(mode="json"))
    return {"pack": "year_end", "period": "2025-12", "epsilon": "2", "indicators": items}


# --- names


def test_the_catalog_carries_the_code_lists_names(county: Path, names: CodeNames) -> None:
    published = read_codelist_names(county / "codelists" / "villages.csv")
    assert published and names.by_dimension[VILLAGE] == published
    code, name = next(iter(published.items()))
    assert names.name(VILLAGE, code) == name and names.any_name(code) == name
    assert re.search(r"[\u4e00-\u9fff]", name)  # the code lists' names are Chinese
    assert names.name(VILLAGE, None) is None and names.name(VILLAGE, "no-such-code") is None
    assert names.group_name("county", "zh-CN") == "全县" and names.group_name("rural", "en") == "rural"
    # A code list without a name column yields no names (the codes alone are shown).
    bare = county / "bare.csv"
    bare.write_text("code,township\n1,2\n", encoding="utf-8")
    assert read_codelist_names(bare) == {}


# --- frames


def test_a_query_frame_has_code_and_name_columns_and_released_values(
    bands: dict[str, Any], names: CodeNames
) -> None:
    frame = query_frame(bands, names)
    assert list(frame.columns) == [
        "village",
        "village_name",
        "statistic",
        "bin",
        "prob",
        "estimate",
        "lower",
        "upper",
        "epsilon",
        "query_id",
    ]
    cells = bands["release"]["cells"]
    assert len(frame) == len(cells)
    for (_, row), cell in zip(frame.iterrows(), cells, strict=True):
        assert row["village"] == cell["groups"][VILLAGE]
        assert row["village_name"] == names.name(VILLAGE, cell["groups"][VILLAGE])
        assert row["estimate"] == pytest.approx(cell["display"])
        assert row["lower"] <= row["estimate"] <= row["upper"]
    assert set(frame["epsilon"]) == {"1"} and frame.attrs["neighbouring"] == "add_remove_household"
    # Without names the frame keeps the codes and drops the empty name column.
    assert "village_name" not in query_frame(bands).columns


def test_quantile_rows_have_a_prob_column(quantiles: dict[str, Any], names: CodeNames) -> None:
    frame = query_frame(quantiles, names)
    rows = frame[frame["statistic"] == "quantiles"]
    assert len(rows) and set(rows["prob"]) == set(PROBS)
    assert rows["estimate"].notna().any()


def test_a_run_frame_names_villages_pools_and_quantiles(pack: dict[str, Any], names: CodeNames) -> None:
    frame = run_frame(pack, names, lang=Lang.ZH)
    figures = sum(len(i["figures"]) for i in pack["indicators"])
    assert len(frame) == figures and "exact" not in frame.columns
    assert set(frame["indicator"]) == {i["indicator"] for i in pack["indicators"]}
    villages = frame[frame["group"].isin(names.by_dimension[VILLAGE])]
    assert len(villages) and all(villages["group_name"] == [names.any_name(g) for g in villages["group"]])
    assert set(frame[frame["group"] == "county"]["group_name"]) == {"全县"}
    p50 = frame[(frame["figure"] == "P50")]
    assert len(p50) and set(p50["prob"]) == {0.5}
    assert frame[frame["figure"] == "gini"]["prob"].isna().all()
    # Titles in the language asked for.
    assert set(run_frame(pack, names, lang=Lang.EN)["title"]) == {i["title"] for i in pack["indicators"]}


# --- files


def test_the_workbook_has_a_sheet_per_indicator_and_a_notes_sheet(
    pack: dict[str, Any], names: CodeNames, tmp_path: Path
) -> None:
    frame = run_frame(pack, names, lang=Lang.ZH)
    path = write_xlsx(frame, tmp_path / "pack.xlsx", Lang.ZH)
    book = load_workbook(path, read_only=True)
    indicators = [i["indicator"] for i in pack["indicators"] if i["figures"]]
    assert book.sheetnames == [*indicators, "说明"]
    sheet = book[indicators[0]]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:3] == ("名称", "起始月份", "截止月份")
    assert "估计值（差分隐私）" in rows[0] and "分组名称" in rows[0]
    expected = [f for i in pack["indicators"] if i["indicator"] == indicators[0] for f in i["figures"]]
    assert len(rows) == 1 + len(expected)
    notes = [r[0] for r in book["说明"].iter_rows(values_only=True)]
    text = "\n".join(notes)
    assert "ε = 2" in text and "住户" in text and "增删一户" in text and "代理指标" in text
    assert notes == notes_lines(frame, Lang.ZH)


def test_a_query_workbook_in_english_states_the_guarantee(
    bands: dict[str, Any], names: CodeNames, tmp_path: Path
) -> None:
    frame = query_frame(bands, names)
    book = load_workbook(write_xlsx(frame, tmp_path / "q.xlsx", Lang.EN), read_only=True)
    assert book.sheetnames == ["result", "notes"]
    rows = list(book["result"].iter_rows(values_only=True))
    assert rows[0][:2] == ("village", "village name") and len(rows) == 1 + len(frame)
    assert {r[1] for r in rows[1:]} == set(frame["village_name"])
    text = "\n".join(r[0] for r in book["notes"].iter_rows(values_only=True))
    assert "ε = 1" in text and "household" in text and "add_remove_household" in text
    assert "administrative proxy" in text


def test_csv_headers_follow_the_language(bands: dict[str, Any], names: CodeNames, tmp_path: Path) -> None:
    frame = query_frame(bands, names)
    for lang, first in ((Lang.ZH, "village"), (Lang.EN, "village")):
        path = write_csv(frame, tmp_path / f"{lang.value}.csv", lang)
        header = next(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        assert header[0] == first
        assert header[5] == translate("columns.estimate", lang)
    assert translate("columns.estimate", Lang.ZH) != translate("columns.estimate", Lang.EN)


def test_a_chinese_chart_renders_without_missing_glyphs(
    bands: dict[str, Any], names: CodeNames, tmp_path: Path
) -> None:
    assert cjk_font(), "no CJK font: install fonts-wqy-microhei (make install) or set FEDGATE_PLOT_FONT"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        svg = write_plot(query_frame(bands, names), tmp_path / "q.svg", Lang.ZH)
        png = write_plot(query_frame(bands, names), tmp_path / "q.png", Lang.ZH)
    missing = [
        str(w.message) for w in caught if "missing from" in str(w.message) or "Glyph" in str(w.message)
    ]
    assert missing == []
    assert png.read_bytes().startswith(b"\x89PNG")
    # The village names are drawn as text in the SVG (matplotlib writes glyphs with the name in a comment).
    assert any(name in svg.read_text(encoding="utf-8") for name in names.by_dimension[VILLAGE].values())
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        write_plot(query_frame(bands, names), tmp_path / "q.pdf", Lang.ZH)


# --- terminal tables

_CUT = "…"


def _rendered(draw: Any) -> str:
    console = Console(record=True, width=100, color_system=None)
    draw(console)
    return console.export_text()


def test_a_query_table_fits_100_columns_without_cutting_a_value(
    bands: dict[str, Any], quantiles: dict[str, Any], names: CodeNames
) -> None:
    for doc in (bands, quantiles):
        frame = query_frame(doc, names)
        text = _rendered(lambda c, frame=frame: print_result(c, frame, Lang.ZH, limit=len(frame)))
        assert max(len(line) for line in text.splitlines()) <= 100
        assert _CUT not in text
        for code in frame["village"].dropna():
            assert code in text
        assert "（其他）" in text  # the pooled cell of codes outside the public domain
        for estimate in frame["estimate"].dropna():
            assert f"{estimate:,.0f}" in text or f"{estimate:,.3f}" in text


def test_a_pack_table_fits_100_columns_without_cutting_a_value(
    pack: dict[str, Any], names: CodeNames
) -> None:
    text = _rendered(lambda c: print_run(c, pack, names=names, lang=Lang.ZH))
    assert max(len(line) for line in text.splitlines()) <= 100
    # Only the "n more" row marker may hold an ellipsis; no cell is shortened.
    assert all(_CUT not in line or "more" in line for line in text.splitlines())
    shown = {v for v in names.by_dimension[VILLAGE] if v in text}
    assert shown  # villages are listed with their codes, and their names beside them
    assert any(names.by_dimension[VILLAGE][code] in text for code in shown)


def test_without_a_cjk_font_the_chart_falls_back_to_english(
    bands: dict[str, Any], names: CodeNames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import fonts

    monkeypatch.setenv(fonts.FONT_ENV, "No Such Font Family")
    fonts.cjk_font.cache_clear()
    try:
        assert fonts.cjk_font() is None and fonts.chart_language(Lang.ZH) is Lang.EN
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            svg = write_plot(query_frame(bands, names), tmp_path / "fallback.svg", Lang.ZH)
        assert not [w for w in caught if "missing from" in str(w.message)]
        text = svg.read_text(encoding="utf-8")
        assert not any(name in text for name in names.by_dimension[VILLAGE].values())
    finally:
        monkeypatch.delenv(fonts.FONT_ENV)
        fonts.cjk_font.cache_clear()
    assert fonts.cjk_font()  # the installed font is found again
