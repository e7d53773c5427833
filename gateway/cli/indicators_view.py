"""Showing an indicator run to a person: rich tables, a CSV of every figure, and a chart.

A run document is what `POST /v1/indicators/{name}/run` and `POST /v1/packs/{name}/run` return:
{"pack", "period", "epsilon", "indicators": [IndicatorResult JSON, ...]}. The command line and the demo
render it through the same three functions:

    print_run(console, doc)    one table per indicator (village names beside codes), notes, the total ε
    write_csv(doc, path)       every figure of every indicator, one row each (headers translated with a
                               `lang`, identifiers without one)
    write_plot(doc, path)      PNG or SVG: shares by village, Lorenz curves, urban vs rural, key groups
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aggregation.indicators.model import Figure, IndicatorResult
from gateway.cli.tables import unclipped
from gateway.codenames import CodeNames
from gateway.i18n import Lang, translate

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "CSV_COLUMNS",
    "REFERENCE_GROUPS",
    "format_interval",
    "format_value",
    "print_run",
    "results_of",
    "write_csv",
    "write_plot",
]

REFERENCE_GROUPS = ("county", "urban", "rural")
"""Pools shown before (and drawn as reference lines across) the villages."""

CSV_COLUMNS = (
    "indicator",
    "period_start",
    "period_end",
    "epsilon",
    "figure",
    "label",
    "group",
    "unit",
    "value",
    "low",
    "high",
    "exact",
)

EARLY_WARNING = "early_warning"
COUNTS_ONLY = "Counts only: no household is named or listed, here or anywhere in the federation's output."

PLOT_SUFFIXES = (".png", ".svg")
_MISSING = "—"


def _with_gaps(item: Mapping[str, Any]) -> dict[str, Any]:
    # JSON has no NaN: an interval end the simulation left undefined arrives as null; as NaN it is a gap.
    curves = {
        name: [{k: math.nan if v is None else v for k, v in point.items()} for point in points]
        for name, points in (item.get("curves") or {}).items()
    }
    return {**item, "curves": curves}


def results_of(doc: Mapping[str, Any]) -> list[IndicatorResult]:
    """The run's indicators, validated (a document from the gateway or from `model_dump(mode="json")`)."""
    return [IndicatorResult.model_validate(_with_gaps(item)) for item in doc["indicators"]]


def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def format_value(value: float | None, unit: str) -> str:
    """A figure's value for reading: shares as %, yuan with separators, counts as integers."""
    if value is None or not math.isfinite(value):
        return _MISSING
    if unit == "share":
        return f"{value:.1%}"
    if unit == "yuan":
        return f"{value:,.0f}"
    if unit in ("households", "persons"):
        return f"{round(value):,}"
    return f"{value:.3f}"


def format_interval(low: float | None, high: float | None, unit: str) -> str:
    # An en dash, not "[a, b]": thousands separators would make a comma list ambiguous.
    if not (_finite(low) and _finite(high)):
        return _MISSING
    return f"{format_value(low, unit)} – {format_value(high, unit)}"


def _group_order(group: str) -> tuple[int, str]:
    if group in REFERENCE_GROUPS:
        return REFERENCE_GROUPS.index(group), ""
    return len(REFERENCE_GROUPS), group


def _by_figure(figures: Iterable[Figure]) -> dict[tuple[str, str], list[Figure]]:
    """Figures keyed by (figure, label) in the order they first appear, groups ordered within each."""
    out: dict[tuple[str, str], list[Figure]] = {}
    for f in figures:
        out.setdefault((f.figure, f.label), []).append(f)
    return {key: sorted(items, key=lambda f: _group_order(f.group)) for key, items in out.items()}


def _table(result: IndicatorResult, max_groups: int, names: CodeNames, lang: Lang) -> tuple[Table, int]:
    """The indicator's table and how many rows it leaves out."""
    with_exact = any(f.exact is not None for f in result.figures)
    with_names = any(names.any_name(f.group) for f in result.figures if f.group not in REFERENCE_GROUPS)
    releases = len(result.queries)
    title = (
        f"[bold]{escape(result.title)}[/bold]  {escape(result.title_zh)}\n"
        f"{result.period_start}..{result.period_end} · ε charged {result.epsilon} "
        f"({releases} release{'s' if releases != 1 else ''}) · counted: {result.counted}"
    )
    if result.indicator == EARLY_WARNING:
        title += f"\n[bold]{COUNTS_ONLY}[/bold]"
    table = Table(title=title, title_justify="left")

    def column(key: str, **kwargs: Any) -> None:
        table.add_column(translate(f"columns.{key}", lang), **kwargs)

    column("group", no_wrap=True)
    if with_names:
        column("group_name")
    column("figure")
    column("label")
    column("value", justify="right", no_wrap=True)
    column("interval", justify="right")
    if with_exact:
        column("exact", justify="right", no_wrap=True)
    blocks = []
    left_out = 0
    for (figure, label), items in _by_figure(result.figures).items():
        others = [f for f in items if f.group not in REFERENCE_GROUPS]
        rows = [
            [
                # Labels can come from the analyst (band names): never read them as rich markup.
                escape(f.group),
                *([escape(names.group_name(f.group, lang) or "")] if with_names else []),
                escape(figure),
                escape(label),
                format_value(f.value, f.unit),
                format_interval(f.low, f.high, f.unit),
                *([format_value(f.exact, f.unit)] if with_exact else []),
            ]
            for f in [f for f in items if f.group in REFERENCE_GROUPS] + others[:max_groups]
        ]
        if len(others) > max_groups:
            rows.append([f"[dim]… {len(others) - max_groups} more[/dim]", *[""] * (len(table.columns) - 1)])
            left_out += len(others) - max_groups
        blocks.append(rows)
    for i, rows in enumerate(blocks):
        # A rule between figures only where a figure spans several rows; one-row figures stay compact.
        rule = i < len(blocks) - 1 and (len(rows) > 1 or len(blocks[i + 1]) > 1)
        for j, row in enumerate(rows):
            table.add_row(*row, end_section=rule and j == len(rows) - 1)
    return unclipped(table), left_out


def _undefined_notes(result: IndicatorResult) -> list[str]:
    """Why a figure shows no value: county, urban and rural each by name, other groups counted (so a group
    left out of the table is not named here either)."""
    named: list[str] = []
    counted: dict[tuple[str, str], int] = {}
    for f in result.figures:
        if f.value is not None or not f.note:
            continue
        if f.group in REFERENCE_GROUPS:
            named.append(f"{f.group} {f.figure}: undefined ({f.note})")
        else:
            counted[(f.figure, f.note)] = counted.get((f.figure, f.note), 0) + 1
    return named + [
        f"{figure}: undefined in {n} group{'s' if n != 1 else ''} ({note})"
        for (figure, note), n in counted.items()
    ]


def print_run(
    console: Console,
    doc: Mapping[str, Any],
    *,
    max_groups: int = 12,
    names: CodeNames | None = None,
    lang: Lang = Lang.EN,
) -> None:
    """One table per indicator with its notes, then the run's total epsilon.

    Villages can be many: each figure shows county, urban and rural, then at most `max_groups` other
    groups. A note already printed under an earlier table of the same run is not repeated.
    """
    seen: set[str] = set()
    for result in results_of(doc):
        table, left_out = _table(result, max_groups, names or CodeNames(), lang)
        console.print(table)
        if left_out:
            console.print(
                f"[dim]{left_out} rows left out: each figure shows county, urban and rural and at most "
                f"{max_groups} other groups (the CSV has them all).[/dim]",
                highlight=False,
            )
        for name, points in result.curves.items():
            console.print(f"[dim]{escape(name)}: {len(points)} points (in the JSON and the plot)[/dim]")
        for note in [*_undefined_notes(result), *result.notes]:
            if note not in seen:
                console.print(f"[dim]{escape(note)}[/dim]", highlight=False)
                seen.add(note)
        console.print()
    what = f"pack {doc['pack']}" if doc.get("pack") else "indicator run"
    console.print(
        f"[bold]total ε of this {what} for {doc['period']}: {doc['epsilon']}[/bold] "
        "(the sum of its releases' ε; running it again returns the same figures and charges nothing)",
        highlight=False,
    )


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)


def write_csv(doc: Mapping[str, Any], path: Path, *, lang: Lang | None = None) -> Path:
    """Every figure of every indicator as one row (no group is left out), UTF-8 with a header: the
    column identifiers (`CSV_COLUMNS`), or with `lang` the headers people read (then with a byte-order
    mark, so that Excel and WPS open the Chinese correctly)."""
    header = list(CSV_COLUMNS) if lang is None else [translate(f"columns.{c}", lang) for c in CSV_COLUMNS]
    with path.open("w", newline="", encoding="utf-8" if lang is None else "utf-8-sig") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for r in results_of(doc):
            for f in r.figures:
                writer.writerow(
                    [
                        r.indicator,
                        r.period_start,
                        r.period_end,
                        r.epsilon,
                        f.figure,
                        f.label,
                        f.group,
                        f.unit,
                        _cell(f.value),
                        _cell(f.low),
                        _cell(f.high),
                        _cell(f.exact),
                    ]
                )
    return path


# --- the chart

_REFERENCE_STYLE = {"county": ("black", "-"), "urban": ("tab:blue", "--"), "rural": ("tab:green", ":")}
_EXACT_STYLE: dict[str, Any] = {"marker": "x", "color": "tab:red", "linestyle": "none", "zorder": 3}
_EXACT_LABEL = "exact (evaluated without noise)"
# Past this many villages only every n-th code is written under the axis.
_MAX_TICK_LABELS = 60


def _values(items: Sequence[Figure]) -> list[float]:
    return [f.value if _finite(f.value) else math.nan for f in items]


def _errors(items: Sequence[Figure]) -> list[list[float]]:
    """Error-bar lengths below and above each value (0 where an end is missing)."""

    def gap(upper: float | None, lower: float | None) -> float:
        return max(0.0, upper - lower) if _finite(upper) and _finite(lower) else 0.0

    return [[gap(f.value, f.low) for f in items], [gap(f.high, f.value) for f in items]]


def _exact_marks(ax: Axes, x: Sequence[float], items: Sequence[Figure]) -> None:
    marked = [(xi, f.exact) for xi, f in zip(x, items, strict=True) if _finite(f.exact)]
    if marked:
        ax.plot([m[0] for m in marked], [m[1] for m in marked], label=_EXACT_LABEL, **_EXACT_STYLE)


def _by_village(ax: Axes, result: IndicatorResult, figure: str, label: str, title: str) -> None:
    from matplotlib.ticker import PercentFormatter

    items = [f for f in result.figures if f.figure == figure and f.label == label]
    villages = sorted(
        (f for f in items if f.group not in REFERENCE_GROUPS and _finite(f.value)), key=lambda f: f.group
    )
    x = list(range(len(villages)))
    ax.errorbar(
        x,
        _values(villages),
        yerr=_errors(villages),
        fmt="o",
        markersize=4,
        capsize=2,
        color="tab:purple",
        label="DP value, 95% interval",
    )
    _exact_marks(ax, x, villages)
    for f in items:
        if f.group in REFERENCE_GROUPS and _finite(f.value):
            color, style = _REFERENCE_STYLE[f.group]
            ax.axhline(
                f.value,
                color=color,
                linestyle=style,
                linewidth=1,
                label=f"{f.group} {format_value(f.value, f.unit)}",
            )
    step = max(1, math.ceil(len(villages) / _MAX_TICK_LABELS))
    ax.set_xticks(x[::step], labels=[f.group for f in villages][::step], rotation=90, fontsize=7)
    ax.set_xlabel("village / community (code)")
    if items and items[0].unit == "share":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(f"{title} ({result.period_start}..{result.period_end}, ε {result.epsilon})", fontsize=10)
    # Beside the axes: inside, it would cover villages' points.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    ax.grid(axis="y", alpha=0.3)


def _bands(ax: Axes, result: IndicatorResult) -> None:
    band = result.figures[0].label
    _by_village(ax, result, "share", band, f"Households with disposable income {band} yuan, by village")


def _coverage(ax: Axes, result: IndicatorResult) -> None:
    label = result.figures[0].label
    _by_village(ax, result, "coverage", label, f"Coverage: {label}, by village")


def _early_warning(ax: Axes, result: IndicatorResult) -> None:
    share = next(f for f in result.figures if f.figure == "share_fell")
    fell = next(f for f in result.figures if f.figure == "households_fell")
    _by_village(
        ax,
        result,
        "share_fell",
        share.label,
        f"Early warning (counts only): households whose {fell.label}, share of those with earlier "
        "income, by village",
    )


def _lorenz(ax: Axes, result: IndicatorResult) -> None:
    gini = {f.label: f for f in result.figures if f.figure == "gini" and f.group == "county"}
    for name, points in result.curves.items():
        label = name.removeprefix("lorenz ")
        p = [pt["p"] for pt in points]
        shares = [pt["share"] for pt in points]
        g = gini.get(label)
        legend = f"{label} (Gini {format_value(g.value, 'index')})" if g is not None else label
        (line,) = ax.plot(p, shares, linewidth=1.5, label=legend)
        low = [pt.get("low", math.nan) for pt in points]
        high = [pt.get("high", math.nan) for pt in points]
        ax.fill_between(p, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="equality")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("share of households, lowest income first")
    ax.set_ylabel("share of income")
    ax.set_title(f"Lorenz curves with 95% bands ({result.period_start}..{result.period_end})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)


def _legend_above_bars(ax: Axes) -> None:
    # Headroom so the legend sits above the error bars instead of on them.
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top + 0.25 * (top - bottom))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")


def _yuan_axis(ax: Axes) -> None:
    from matplotlib.ticker import StrMethodFormatter

    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def _urban_rural(ax: Axes, result: IndicatorResult) -> None:
    per_capita = {f.group: f for f in result.figures if f.figure == "per_capita_income"}
    bars = [per_capita[g] for g in ("urban", "rural") if g in per_capita and _finite(per_capita[g].value)]
    x = list(range(len(bars)))
    ax.bar(x, _values(bars), color=["tab:blue", "tab:green"][: len(bars)], alpha=0.7)
    ax.errorbar(x, _values(bars), yerr=_errors(bars), fmt="none", color="black", capsize=6)
    _exact_marks(ax, x, bars)
    county = per_capita.get("county")
    if county is not None and _finite(county.value):
        ax.axhline(
            county.value,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"county {format_value(county.value, 'yuan')}",
        )
    ax.set_xticks(x, labels=[f.group for f in bars])
    _yuan_axis(ax)
    ax.set_ylabel("per-capita disposable income (yuan)")
    ratio = next((f for f in result.figures if f.figure == "urban_rural_ratio"), None)
    title = "Urban vs rural per-capita income"
    if ratio is not None:
        title += (
            f"\nratio {format_value(ratio.value, 'ratio')} "
            f"(95% {format_interval(ratio.low, ratio.high, 'ratio')})"
        )
    ax.set_title(title, fontsize=10)
    _legend_above_bars(ax)
    ax.grid(axis="y", alpha=0.3)


def _key_groups(ax: Axes, result: IndicatorResult) -> None:
    items = [f for f in result.figures if f.figure == "households" and f.group == "county"]
    x = list(range(len(items)))
    ax.bar(x, _values(items), color="tab:orange", alpha=0.7)
    ax.errorbar(x, _values(items), yerr=_errors(items), fmt="none", color="black", capsize=4)
    _exact_marks(ax, x, items)
    ax.set_xticks(x, labels=[f.label for f in items], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("households (county-wide)")
    ax.set_title(f"Key groups: households ({result.period_start}..{result.period_end})", fontsize=10)
    _legend_above_bars(ax)
    ax.grid(axis="y", alpha=0.3)


Panel = Callable[["Axes", IndicatorResult], None]
# Panels spanning the figure's width (one point per village), then the small ones side by side.
WIDE_PANELS: dict[str, Panel] = {
    "income_bands": _bands,
    "coverage": _coverage,
    EARLY_WARNING: _early_warning,
}
SMALL_PANELS: dict[str, Panel] = {
    "income_distribution": _lorenz,
    "urban_rural_ratio": _urban_rural,
    "key_groups": _key_groups,
}


def write_plot(doc: Mapping[str, Any], path: Path) -> Path:
    """A chart of what the run contains, PNG or SVG by the file's suffix.

    Titles are in English: the Chinese titles need a CJK font that a server may not have.
    Raises ValueError for another suffix, or when no indicator of the run has a chart.
    """
    suffix = path.suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise ValueError(f"a plot is written as .png or .svg, not {path.suffix or 'no suffix'}: {path}")
    # The object API with the Agg canvas leaves pyplot's global backend and figure list alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as Chart

    results = [r for r in results_of(doc) if r.figures]
    wide = [(WIDE_PANELS[r.indicator], r) for r in results if r.indicator in WIDE_PANELS]
    small = [(SMALL_PANELS[r.indicator], r) for r in results if r.indicator in SMALL_PANELS]
    if not wide and not small:
        names = ", ".join(r.indicator for r in results) or "none"
        raise ValueError(f"nothing to plot: no chart is drawn for the indicators of this run ({names})")
    villages = max(
        (len({f.group for f in r.figures} - set(REFERENCE_GROUPS)) for _, r in wide),
        default=0,
    )
    columns = max(1, len(small))
    width = min(28.0, max(5.0 * columns, 0.28 * villages + 3.0, 8.0))
    rows = len(wide) + (1 if small else 0)
    chart = Chart(figsize=(width, 4.6 * rows), layout="constrained")
    FigureCanvasAgg(chart)
    grid = chart.add_gridspec(rows, columns)
    for row, (draw, result) in enumerate(wide):
        draw(chart.add_subplot(grid[row, :]), result)
    for column, (draw, result) in enumerate(small):
        draw(chart.add_subplot(grid[rows - 1, column]), result)
    what = f"pack {doc['pack']}" if doc.get("pack") else "indicators"
    chart.suptitle(f"fedgate {what} for {doc['period']}: total ε {doc['epsilon']}, 95% intervals")
    chart.savefig(path, format=suffix.removeprefix("."), dpi=110)
    return path
