"""Excel workbooks of released results, for officials whose tools are Excel and WPS.

    write_xlsx(frame, path, lang)   a query's cells on one sheet, or an indicator/pack run with one sheet
                                    per indicator; then a notes sheet: the privacy guarantee (ε, the
                                    household as the protected unit, the neighbour relation), the income
                                    proxy caveat and the run's own notes
    workbook_bytes(frame, lang)     the same workbook in memory (for a download)

The frames come from `gateway.frames` (`query_frame`, `run_frame`); headers are translated through the
`columns` catalog. The command line and the console both call this module.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from gateway.frames import localized
from gateway.i18n import Lang, translate

__all__ = ["notes_lines", "workbook_bytes", "write_xlsx"]

# Excel refuses sheet names over 31 characters and these characters.
_SHEET_NAME_LIMIT = 31
_SHEET_FORBIDDEN = str.maketrans({c: "_" for c in "[]:*?/\\"})
_MAX_COLUMN_WIDTH = 60


def _sheet_title(name: str, taken: set[str]) -> str:
    base = name.translate(_SHEET_FORBIDDEN)[:_SHEET_NAME_LIMIT] or "sheet"
    title, n = base, 2
    while title.lower() in taken:
        suffix = f" ({n})"
        title, n = base[: _SHEET_NAME_LIMIT - len(suffix)] + suffix, n + 1
    taken.add(title.lower())
    return title


def _cell(value: Any) -> Any:
    # NaN and None are both an empty cell: the figure is undefined, its note says why.
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def _fill(sheet: Worksheet, frame: pd.DataFrame) -> None:
    sheet.append([str(c) for c in frame.columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in frame.itertuples(index=False):
        sheet.append([_cell(v) for v in row])
    sheet.freeze_panes = "A2"
    for i, column in enumerate(frame.columns, start=1):
        longest = max([len(str(column)), *(len(str(v)) for v in frame.iloc[:, i - 1] if v is not None)])
        sheet.column_dimensions[get_column_letter(i)].width = min(_MAX_COLUMN_WIDTH, longest + 2)


def notes_lines(frame: pd.DataFrame, lang: Lang | str) -> list[str]:
    """What the notes sheet says, in `lang`: what was run, the guarantee, the neighbours, the caveats."""
    attrs = frame.attrs
    if attrs.get("kind") == "query":
        what = translate("columns.note_query", lang, query_id=attrs["query_id"])
        period = ""
    else:
        pack = attrs.get("pack")
        what = translate("columns.note_pack", lang, pack=pack) if pack else ""
        what = what or translate("columns.note_indicators", lang)
        period = attrs.get("period", "")
    neighbouring = attrs.get("neighbouring", "add_remove_household")
    lines = [
        translate("columns.note_heading", lang),
        translate("columns.note_run", lang, what=what, period=period) if period else what,
        translate("columns.note_guarantee", lang, epsilon=attrs.get("epsilon", "?")),
        translate(f"columns.neighbours_{neighbouring}", lang),
        translate("columns.note_proxy", lang),
        translate("columns.note_no_exact", lang),
    ]
    return lines + [str(n) for n in attrs.get("notes", [])]


def _workbook(frame: pd.DataFrame, lang: Lang | str) -> Workbook:
    book = Workbook()
    first = book.active
    assert first is not None
    book.remove(first)
    taken: set[str] = set()
    if frame.attrs.get("kind") == "run" and "indicator" in frame.columns and len(frame):
        for indicator, part in frame.groupby("indicator", sort=False):
            part = part.drop(columns=["indicator"])
            part.attrs = dict(frame.attrs)
            _fill(book.create_sheet(_sheet_title(str(indicator), taken)), localized(part, lang))
    else:
        sheet = book.create_sheet(_sheet_title(translate("columns.sheet_result", lang), taken))
        _fill(sheet, localized(frame, lang))
    notes = book.create_sheet(_sheet_title(translate("columns.notes_sheet", lang), taken))
    for i, line in enumerate(notes_lines(frame, lang), start=1):
        notes.cell(row=i, column=1, value=line).alignment = Alignment(wrap_text=True, vertical="top")
    notes["A1"].font = Font(bold=True)
    notes.column_dimensions["A"].width = 110
    return book


def write_xlsx(frame: pd.DataFrame, path: Path, lang: Lang | str = Lang.ZH) -> Path:
    """Write the workbook to `path` (OSError if it cannot be written)."""
    _workbook(frame, lang).save(path)
    return path


def workbook_bytes(frame: pd.DataFrame, lang: Lang | str = Lang.ZH) -> bytes:
    """The workbook as bytes (`application/vnd.openxmlformats-officedocument.spreadsheetml.sheet`)."""
    buffer = io.BytesIO()
    _workbook(frame, lang).save(buffer)
    return buffer.getvalue()
