"""A released result as a table people use: labelled columns, code names beside codes, CSV and XLSX.

    result_table(doc, name_of, headers)   (columns, rows) of a stored release: one row per released
                                          figure, a column per group (its code and, beside it, its name),
                                          statistic, bin, prob, value and the 95% interval
    to_csv(columns, rows)                 UTF-8 with a byte-order mark, so Excel and WPS open Chinese text
    to_xlsx(sheets, notes)                one sheet per table and a notes sheet (the privacy guarantee, the
                                          income proxy caveat), with openpyxl

Everything here is post-processing of released (noisy) values and public names: no budget, no data.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Table", "result_table", "to_csv", "to_xlsx"]

Table = tuple[list[str], list[list[Any]]]
NameOf = Callable[[str, str | None], str | None]

# openpyxl's limit for a sheet title, and the characters it refuses there.
_SHEET_TITLE = 31
_BAD_TITLE = str.maketrans({c: "_" for c in "[]:*?/\\"})


def result_table(doc: Mapping[str, Any], name_of: NameOf, headers: Mapping[str, str]) -> Table:
    """The released cells of `doc` as rows; `headers` names the fixed columns (statistic, bin, prob,
    value, low, high and `name` for the suffix of a group's name column), in the reader's language."""
    groups = list(doc.get("group_names") or ())
    columns: list[str] = []
    for g in groups:
        columns += [g, f"{g} {headers['name']}"]
    columns += [headers[k] for k in ("statistic", "bin", "prob", "value", "low", "high")]
    rows: list[list[Any]] = []
    for cell in doc.get("cells", ()):
        row: list[Any] = []
        for g in groups:
            code = cell["groups"].get(g)
            row += [code if code is not None else headers["other"], name_of(g, code) or ""]
        row += [
            cell["statistic"],
            cell.get("bin") or "",
            cell.get("prob") if cell.get("prob") is not None else "",
            _number(cell.get("display")),
            _number(cell.get("low")),
            _number(cell.get("high")),
        ]
        rows.append(row)
    return columns, rows


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    return "" if value is None else value


def to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _title(text: str, used: set[str]) -> str:
    base = text.translate(_BAD_TITLE)[:_SHEET_TITLE] or "sheet"
    title, n = base, 2
    while title in used:
        suffix = f" ({n})"
        title, n = base[: _SHEET_TITLE - len(suffix)] + suffix, n + 1
    used.add(title)
    return title


def to_xlsx(sheets: Sequence[tuple[str, Table]], notes: Sequence[str], notes_title: str) -> bytes:
    """A workbook with one sheet per (title, table) and a last sheet of notes, one per row."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    first = book.active
    assert first is not None
    book.remove(first)
    used: set[str] = set()
    for title, (columns, rows) in sheets:
        sheet = book.create_sheet(_title(title, used))
        sheet.append(list(columns))
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append(list(row))
        for index, column in enumerate(columns, start=1):
            width = max([len(str(column)), *(len(str(r[index - 1])) for r in rows[:200])], default=8)
            sheet.column_dimensions[sheet.cell(1, index).column_letter].width = min(60, width + 2)
        sheet.freeze_panes = "A2"
    sheet = book.create_sheet(_title(notes_title, used))
    for note in notes:
        sheet.append([note])
    sheet.column_dimensions["A"].width = 120
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
