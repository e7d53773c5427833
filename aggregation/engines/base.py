"""The engine interface: a query's extracts in, the exact aggregates of every public cell out."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Protocol

import polars as pl
import pyarrow as pa

from aggregation.planner import Plan
from privacy.cells import CellLayout


class EngineRun(Protocol):
    """One query's join on one engine. Close it (it is a context manager) to delete what it staged."""

    def add(self, ref: str, table: pa.Table) -> None:
        """One extract (`connector.dataset`), called as each arrives, possibly from several threads."""

    def cells(self) -> Mapping[str, pl.DataFrame]:
        """The exact aggregates of every public cell, once every planned extract was added."""

    def close(self) -> None:
        """Delete every staged or spilled file of this run; safe to call twice, also after a failure."""

    def __enter__(self) -> EngineRun: ...

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class CellEngine(Protocol):
    """Where the gateway joins a query's extracts and aggregates them exactly per cell."""

    name: str

    def start(self, plan: Plan, layout: CellLayout) -> EngineRun:
        """A run for one query, its planned extracts and its release's cell layout."""
