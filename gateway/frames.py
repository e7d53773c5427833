"""Released results as pandas DataFrames with labelled columns, codes with their names beside them.

    query_frame(result, names)   one row per released cell of a query: a code and a name column per
                                 dimension, statistic, bin, prob (quantile rows), estimate, lower, upper,
                                 epsilon, query_id
    run_frame(run, names)        one row per figure of an indicator or pack run: indicator, title,
                                 period, figure, label, group and its name, unit, prob, estimate, lower,
                                 upper, epsilon (the indicator's charge), notes
    localized(frame, lang)       the same frame with its headers in Chinese or English (CSV, XLSX)

Column names are stable identifiers (English, snake case) so code can rely on them; `localized` is for
people. Every number is a released (noisy, post-processed) value; `exact` appears only when an unsafe
exact evaluation filled it in tests. The run's notes and guarantee travel in `frame.attrs`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from gateway.codenames import CodeNames
from gateway.i18n import Lang, translate

__all__ = ["NAME_SUFFIX", "localized", "query_frame", "run_frame"]

NAME_SUFFIX = "_name"
"""A code column `village` has its names in `village_name`."""

_QUANTILE_FIGURE = re.compile(r"^P(\d{1,2})$")
QUERY_COLUMNS = ("statistic", "bin", "prob", "estimate", "lower", "upper", "epsilon", "query_id")
RUN_COLUMNS = (
    "indicator",
    "title",
    "period_start",
    "period_end",
    "figure",
    "label",
    "group",
    "group_name",
    "unit",
    "prob",
    "estimate",
    "lower",
    "upper",
    "epsilon",
    "notes",
)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _short_names(refs: tuple[str, ...]) -> dict[str, str]:
    """A column per dimension: its own name (`village`), or the whole reference where two share one."""
    last = [r.rsplit(".", 1)[-1] for r in refs]
    return {r: (s if last.count(s) == 1 else r) for r, s in zip(refs, last, strict=True)}


def query_frame(result: Mapping[str, Any], names: CodeNames | None = None) -> pd.DataFrame:
    """The cells of a released query result (the `result` of `GET /v1/queries/{id}/result`)."""
    names = names or CodeNames()
    release = result["release"]
    refs = tuple(release["group_names"])
    columns = _short_names(refs)
    rows = []
    for cell in release["cells"]:
        row: dict[str, Any] = {}
        for ref in refs:
            code = cell["groups"].get(ref)
            row[columns[ref]] = code
            row[columns[ref] + NAME_SUFFIX] = names.name(ref, code)
        row.update(
            statistic=cell["statistic"],
            bin=cell.get("bin"),
            prob=cell.get("prob"),
            estimate=_number(cell.get("display")),
            lower=_number(cell.get("low")),
            upper=_number(cell.get("high")),
            epsilon=str(result["epsilon"]),
            query_id=result["query_id"],
        )
        rows.append(row)
    header = [c for ref in refs for c in (columns[ref], columns[ref] + NAME_SUFFIX)] + list(QUERY_COLUMNS)
    frame = pd.DataFrame(rows, columns=header)
    # A dimension without names in its code list keeps no empty name column.
    empty = [columns[r] + NAME_SUFFIX for r in refs if frame[columns[r] + NAME_SUFFIX].isna().all()]
    frame = frame.drop(columns=empty)
    frame.attrs.update(
        kind="query",
        query_id=result["query_id"],
        epsilon=str(result["epsilon"]),
        neighbouring=result.get("neighbouring", "add_remove_household"),
        notes=list(result.get("notes", [])),
        dimensions={columns[r]: r for r in refs},
    )
    return frame


def _prob(figure: str) -> float | None:
    match = _QUANTILE_FIGURE.match(figure)
    return int(match.group(1)) / 100 if match else None


def run_frame(
    run: Mapping[str, Any],
    names: CodeNames | None = None,
    *,
    lang: Lang | str = Lang.ZH,
    village: str | None = None,
) -> pd.DataFrame:
    """The figures of an indicator or pack run (`POST /v1/indicators/{name}/run`, `/v1/packs/{name}/run`).

    `village` is the monitoring configuration's village dimension, where the names are looked up
    (default: whichever code list has the code); `lang` names the county, urban and rural pools."""
    names = names or CodeNames()
    rows = []
    with_exact = False
    for item in run["indicators"]:
        for f in item["figures"]:
            with_exact = with_exact or f.get("exact") is not None
            rows.append(
                {
                    "indicator": item["indicator"],
                    "title": item["title_zh"] if str(lang).startswith("zh") else item["title"],
                    "period_start": item["period_start"],
                    "period_end": item["period_end"],
                    "figure": f["figure"],
                    "label": f["label"],
                    "group": f["group"],
                    "group_name": names.group_name(f["group"], str(lang), village),
                    "unit": f["unit"],
                    "prob": _prob(f["figure"]),
                    "estimate": _number(f.get("value")),
                    "lower": _number(f.get("low")),
                    "upper": _number(f.get("high")),
                    "epsilon": str(item["epsilon"]),
                    "notes": f.get("note"),
                    "exact": _number(f.get("exact")),
                }
            )
    header = list(RUN_COLUMNS) + (["exact"] if with_exact else [])
    frame = pd.DataFrame(rows, columns=header)
    frame.attrs.update(
        kind="run",
        pack=run.get("pack"),
        period=run["period"],
        epsilon=str(run["epsilon"]),
        neighbouring="add_remove_household",
        notes=sorted({n for item in run["indicators"] for n in item.get("notes", [])}),
    )
    return frame


def header(column: str, lang: Lang | str, dimensions: Mapping[str, str] | None = None) -> str:
    """A column's header for people: from the `columns` catalog; a dimension's code and name columns by
    the dimension's own name."""
    dimensions = dimensions or {}
    if column in dimensions:
        return column
    if column.endswith(NAME_SUFFIX) and column.removesuffix(NAME_SUFFIX) in dimensions:
        return translate("columns.name_suffix", lang, dimension=column.removesuffix(NAME_SUFFIX))
    return translate(f"columns.{column}", lang)


def localized(frame: pd.DataFrame, lang: Lang | str) -> pd.DataFrame:
    """The frame with headers in `lang` (the values are unchanged)."""
    dimensions = frame.attrs.get("dimensions", {})
    out = frame.rename(columns={c: header(str(c), lang, dimensions) for c in frame.columns})
    out.attrs = dict(frame.attrs)
    return out
