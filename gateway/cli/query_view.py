"""Showing a plain query's released result to a person: a table, CSV and XLSX files, and a chart.

The result is the `result` of `POST /v1/queries/{id}/run` or `GET /v1/queries/{id}/result`; every view
goes through `gateway.frames.query_frame`, so a village has its name beside its code everywhere:

    print_result(console, frame)     a table that fits the terminal (long cells wrap, none is cut)
    write_csv(frame, path)           every cell, headers in the output language
    write_plot(frame, path)          PNG or SVG: each statistic's estimates with their 95% intervals
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.markup import escape

from gateway.cli.tables import Col, fitted_table
from gateway.frames import NAME_SUFFIX, header, localized
from gateway.i18n import Lang, translate

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PLOT_SUFFIXES", "format_number", "print_result", "write_csv", "write_plot"]

PLOT_SUFFIXES = (".png", ".svg")
_NUMBERS = ("estimate", "lower", "upper")
_MISSING = "—"
# Past this many cells only every n-th label is written under a chart's axis.
_MAX_TICK_LABELS = 60


def format_number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return _MISSING
    number = float(value)
    return f"{number:,.0f}" if abs(number) >= 100 or number == int(number) else f"{number:,.3f}"


def _shown(frame: pd.DataFrame, column: str, value: Any) -> str:
    if column in _NUMBERS:
        return format_number(value)
    if column == "prob":
        return "" if value is None or value != value else f"{float(value):g}"
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def _terminal_header(column: str, lang: Lang, dims: dict[str, str]) -> str:
    # Short headers for the numbers (the title says they are DP values with 95% intervals), so that a
    # table of villages fits 100 columns.
    if column in _NUMBERS:
        return translate(f"cli.col_{column}", lang)
    return header(column, lang, dims)


def print_result(console: Console, frame: pd.DataFrame, lang: Lang, *, limit: int = 60) -> None:
    """The cells as a table (at most `limit` rows), then the notes."""
    attrs = frame.attrs
    dims = attrs.get("dimensions", {})
    # epsilon and query_id are the same on every row: they go in the title.
    shown = [c for c in frame.columns if c not in ("epsilon", "query_id") and frame[c].notna().any()]
    title = translate("cli.result_title", lang, query_id=attrs["query_id"], epsilon=attrs["epsilon"])
    whole = {*_NUMBERS, "prob", "bin", *dims}
    columns = [
        Col(_terminal_header(c, lang, dims), whole=c in whole, right=c in (*_NUMBERS, "prob")) for c in shown
    ]
    other = translate("columns.other_cell", lang)
    rows = [
        [
            escape(other if c in dims and v is None else _shown(frame, c, v))
            for c, v in zip(shown, row, strict=True)
        ]
        for row in frame[shown].head(limit).itertuples(index=False)
    ]
    console.print(fitted_table(title, columns, rows))
    if len(frame) > limit:
        console.print(translate("cli.more_cells", lang, n=len(frame) - limit), highlight=False)
    for note in attrs.get("notes", []):
        console.print(f"[dim]{escape(note)}[/dim]", highlight=False)


def write_csv(frame: pd.DataFrame, path: Path, lang: Lang) -> Path:
    """Every cell, UTF-8 with a byte-order mark so that Excel and WPS read the Chinese correctly."""
    localized(frame, lang).to_csv(path, index=False, encoding="utf-8-sig")
    return path


def _cell_label(frame: pd.DataFrame, row: pd.Series) -> str:
    parts = []
    for column in frame.attrs.get("dimensions", {}):
        code = row[column]
        name = row.get(column + NAME_SUFFIX)
        if isinstance(name, str) and name:
            parts.append(name)
        else:
            parts.append(translate("columns.other_cell", "en") if code is None else str(code))
    for extra in ("bin", "prob"):
        value = row.get(extra)
        if value is not None and value == value:
            parts.append(f"p={float(value):g}" if extra == "prob" else str(value))
    return " · ".join(parts) or "all"


def _panel(ax: Axes, frame: pd.DataFrame, statistic: str, lang: Lang) -> None:
    part = frame[frame["statistic"] == statistic]
    part = part[part["estimate"].notna()]
    x = list(range(len(part)))
    estimates = part["estimate"].astype(float).tolist()
    below = [max(0.0, e - lo) if lo == lo else 0.0 for e, lo in zip(estimates, part["lower"], strict=True)]
    above = [max(0.0, hi - e) if hi == hi else 0.0 for e, hi in zip(estimates, part["upper"], strict=True)]
    ax.errorbar(x, estimates, yerr=[below, above], fmt="o", markersize=4, capsize=2, color="tab:purple")
    labels = [_cell_label(frame, row) for _, row in part.iterrows()]
    step = max(1, math.ceil(len(labels) / _MAX_TICK_LABELS))
    ax.set_xticks(x[::step], labels=labels[::step], rotation=90, fontsize=7)
    ax.set_title(translate("cli.plot_panel", lang, statistic=statistic), fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def write_plot(frame: pd.DataFrame, path: Path, lang: Lang) -> Path:
    """A panel per statistic: estimates with their 95% intervals, cells named (Chinese where a CJK font
    is there to draw it: `gateway.fonts`). ValueError for another suffix or a result with no values."""
    suffix = path.suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise ValueError(f"a plot is written as .png or .svg, not {path.suffix or 'no suffix'}: {path}")
    defined = frame[frame["estimate"].notna()]
    statistics = list(dict.fromkeys(defined["statistic"]))
    if not statistics:
        raise ValueError("nothing to plot: the result has no defined value")
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as Chart

    from gateway.fonts import chart_language, font_families

    drawn = chart_language(lang)
    if drawn is not lang:
        # Without a CJK font, names would be boxes: the chart shows codes and English instead.
        frame = frame.drop(columns=[c for c in frame.columns if c.endswith(NAME_SUFFIX)])
        frame.attrs = dict(frame.attrs)
    cells = max(len(frame[frame["statistic"] == s]) for s in statistics)
    width = min(28.0, max(8.0, 0.28 * cells + 3.0))
    with rc_context({"font.family": font_families()}):
        chart = Chart(figsize=(width, 4.8 * len(statistics)), layout="constrained")
        FigureCanvasAgg(chart)
        for i, statistic in enumerate(statistics, start=1):
            _panel(chart.add_subplot(len(statistics), 1, i), frame, statistic, drawn)
        chart.suptitle(
            translate(
                "cli.plot_title", drawn, query_id=frame.attrs["query_id"], epsilon=frame.attrs["epsilon"]
            )
        )
        chart.savefig(path, format=suffix.removeprefix("."), dpi=110)
    return path
