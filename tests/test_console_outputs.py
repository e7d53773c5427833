"""What the console hands people: result tables with names beside codes, CSV that Excel opens, XLSX with
a notes sheet, and SVG charts that escape every label (a village name is text, never markup)."""

from __future__ import annotations

import io

from openpyxl import load_workbook

from gateway.console import charts
from gateway.result_tables import result_table, to_csv, to_xlsx

HEADERS = {
    "statistic": "statistic",
    "bin": "bin",
    "prob": "prob",
    "value": "value",
    "low": "low",
    "high": "high",
    "name": "name",
    "other": "other",
}
RELEASE = {
    "group_names": ["register.persons.village"],
    "cells": [
        {
            "groups": {"register.persons.village": "330922001001"},
            "statistic": "histogram",
            "bin": "<100000",
            "prob": None,
            "display": 47,
            "low": 44,
            "high": 50,
        },
        {
            "groups": {"register.persons.village": None},
            "statistic": "histogram",
            "bin": "<100000",
            "prob": None,
            "display": 0.5,
            "low": 0.25,
            "high": 0.75,
        },
    ],
}


def _name(group: str, code: str | None) -> str | None:
    return {"330922001001": "港礁社区"}.get(code or "")


def test_a_release_becomes_rows_with_a_name_beside_each_code() -> None:
    columns, rows = result_table(RELEASE, _name, HEADERS)
    assert columns == [
        "register.persons.village",
        "register.persons.village name",
        "statistic",
        "bin",
        "prob",
        "value",
        "low",
        "high",
    ]
    assert rows[0] == ["330922001001", "港礁社区", "histogram", "<100000", "", 47, 44, 50]
    assert rows[1][:2] == ["other", ""]


def test_csv_has_a_byte_order_mark_and_xlsx_a_notes_sheet() -> None:
    table = result_table(RELEASE, _name, HEADERS)
    text = to_csv(*table)
    assert text.startswith("\ufeff".encode()) and "港礁社区".encode() in text
    book = load_workbook(io.BytesIO(to_xlsx([("bands: [by] village?", table)], ["ε = 1", "proxy"], "说明")))
    assert book.sheetnames == ["bands_ _by_ village_", "说明"]
    sheet = book["bands_ _by_ village_"]
    assert [c.value for c in sheet[2]][:2] == ["330922001001", "港礁社区"]
    assert [r[0].value for r in book["说明"].iter_rows()] == ["ε = 1", "proxy"]


def test_charts_escape_their_labels_and_mark_intervals() -> None:
    svg = str(charts.bars([charts.Bar("<script>x</script>", 0.4, 0.3, 0.5)], title="a & b"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a &amp; b" in svg
    assert 'class="err"' in svg and "40.0%" in svg
    curve = str(charts.lorenz([charts.Point(0.5, 0.3, 0.25, 0.35)], title="L", x_label="x", y_label="y"))
    assert 'class="band"' in curve and 'class="diag"' in curve
    line = str(
        charts.line(
            [charts.Point(0, 1.6, 1.5, 1.7, "2025-11"), charts.Point(1, 1.55, 1.4, 1.7, "2025-12")],
            title="ratio",
            target=1.5,
            target_label="1.5",
        )
    )
    assert 'class="target"' in line and "2025-12" in line
    assert "style=" not in svg + curve + line  # the CSP allows no inline style
