"""The gateway's join and exact per-cell aggregation, behind one interface with two implementations.

:class:`~aggregation.engines.base.CellEngine` is what the runner calls: for one query it takes the
connectors' extracts as they arrive and returns the exact aggregates of every public cell
(:class:`privacy.cells.CellLayout`). :class:`~aggregation.engines.polars_engine.PolarsEngine` (default,
embedded) runs in the gateway's process, in memory or partitioned by token prefix and spilled to disk;
:class:`~aggregation.engines.spark_engine.SparkEngine` stages the extracts where a Spark cluster reads them.
Noise is never drawn here: :mod:`privacy.release` adds OpenDP's noise to the cells an engine returns.
"""

from aggregation.engines.base import CellEngine, EngineRun
from aggregation.engines.polars_engine import PolarsEngine

__all__ = ["CellEngine", "EngineRun", "PolarsEngine"]
