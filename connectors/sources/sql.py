"""SQL sources through SQLAlchemy: SQLite, PostgreSQL (psycopg) and MariaDB/MySQL (pymysql).

The roll-up is a SQLAlchemy Core `SELECT ... WHERE period BETWEEN ... GROUP BY entity` built from
reflected tables, so names are quoted by the dialect and values are bound parameters: nothing from a
request is ever formatted into SQL. Results stream in chunks through a server-side cursor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from connectors.config import DatasetSpec
from connectors.errors import ConfigError, SourceError
from connectors.sources import ENTITY, HOUSEHOLD, RollupSpec
from connectors.vocabulary import Rollup


class SqlSource:
    """A department database reached by a SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        try:
            self._engine = sa.create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ValueError) as exc:
            raise ConfigError(f"source.url: not a usable SQLAlchemy URL ({type(exc).__name__})") from None
        self._tables: dict[str, sa.Table] = {}

    def _table(self, name: str) -> sa.Table:
        table = self._tables.get(name)
        if table is None:
            try:
                table = sa.Table(name, sa.MetaData(), autoload_with=self._engine)
            except NoSuchTableError:
                raise ConfigError(f"table {name!r} does not exist in the source database") from None
            except SQLAlchemyError as exc:
                raise SourceError(f"the source database cannot be reached ({type(exc).__name__})") from None
            self._tables[name] = table
        return table

    def check(self, dataset: DatasetSpec) -> None:
        assert dataset.table is not None
        table = self._table(dataset.table)
        wanted = [dataset.entity.column]
        wanted += [dataset.period.column] if dataset.period else []
        wanted += [m.column for m in dataset.measures if m.column]
        wanted += [d.column for d in dataset.dimensions if d.column]
        wanted += [dataset.household.column] if dataset.household else []
        missing = [c for c in wanted if c not in table.c]
        if missing:
            raise ConfigError(
                f"dataset {dataset.name!r}: table {dataset.table!r} has no column {', '.join(missing)}"
            )

    def _statement(self, spec: RollupSpec) -> sa.Select[Any]:
        t = self._table(spec.relation)
        entity = t.c[spec.entity_column]
        cols: list[Any] = [entity.label(ENTITY)]
        for name, column, rollup in spec.measures:
            if rollup is Rollup.COUNT or column is None:
                cols.append(sa.func.count().label(name))
            elif rollup is Rollup.SUM:
                cols.append(sa.func.sum(t.c[column]).label(name))
            else:
                cols.append(sa.func.max(t.c[column]).label(name))
        cols += [sa.func.max(t.c[column]).label(name) for name, column in spec.dimensions]
        if spec.household_column is not None:
            cols.append(sa.func.max(t.c[spec.household_column]).label(HOUSEHOLD))
        stmt = sa.select(*cols).group_by(entity)
        if spec.period_column is not None and spec.period_start is not None:
            stmt = stmt.where(t.c[spec.period_column].between(spec.period_start, spec.period_end))
        return stmt

    def rollup(self, spec: RollupSpec) -> Iterator[pd.DataFrame]:
        stmt = self._statement(spec)
        try:
            with self._engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=spec.chunk_rows).execute(stmt)
                for rows in result.partitions():
                    yield pd.DataFrame(rows, columns=list(spec.output_columns))
        except SQLAlchemyError as exc:
            raise SourceError(f"the source database failed the roll-up ({type(exc).__name__})") from None

    def close(self) -> None:
        self._engine.dispose()
