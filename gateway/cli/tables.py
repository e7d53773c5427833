"""Terminal tables that fit the terminal without cutting a value.

Rich's default shortens a cell that does not fit with an ellipsis. Here no cell is ever cut: columns
whose values must stay whole (numbers, codes, bins) are as wide as their widest value and never break,
text columns wrap at spaces and fold a long word onto the next line, and headers wrap. The tests check
at 100 columns that every value is shown whole (`tests/test_outputs.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.table import Table

__all__ = ["TERMINAL_WIDTH", "Col", "fitted_table", "unclipped"]

TERMINAL_WIDTH = 100
"""The width tables are designed for (and tested at); a wider terminal uses what it has."""


@dataclass(frozen=True)
class Col:
    """A column: its header, whether its values must stay whole (numbers, codes), right-aligned or not."""

    header: str
    whole: bool = False
    right: bool = False


def unclipped(table: Table) -> Table:
    """Make every column of an existing table wrap or fold instead of ending in an ellipsis."""
    for column in table.columns:
        column.overflow = "fold"
    return table


def fitted_table(title: str, columns: Sequence[Col], rows: Iterable[Sequence[str]]) -> Table:
    """A table of plain-text rows (markup escaped by the caller), the title left-aligned, a light box so
    that more of the width holds values; whole columns as wide as their widest value."""
    body = [list(r) for r in rows]
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAVY, pad_edge=False)
    for i, col in enumerate(columns):
        widest = max((cell_len(r[i]) for r in body), default=1)
        table.add_column(
            col.header,
            justify="right" if col.right else "left",
            overflow="fold",
            min_width=widest if col.whole else None,
        )
    for row in body:
        table.add_row(*row)
    return table
