"""Writing the departments' tables into the stores their connectors read.

SQL stores go through SQLAlchemy: tables are dropped and recreated, loaded in bulk over the driver's
own connection (PostgreSQL COPY, SQLite and MariaDB batched inserts), and indexed on the ID and month
columns (covering the rest, so that roll-ups read the index alone) after the load, which is much faster
than maintaining the index row by row. File stores are
Parquet (row groups of a month's readings, so period filters skip the rest) and CSV.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from connectors.synth.departments import Table

__all__ = ["write_csv", "write_parquet", "write_sql"]

_CHUNK_ROWS = 200_000
_MYSQL_BATCH_ROWS = 20_000


def _column_type(frame: pd.DataFrame, column: str) -> sa.types.TypeEngine[Any]:
    if pd.api.types.is_integer_dtype(frame[column]):
        return sa.Integer()
    # MariaDB cannot index an unbounded TEXT column; every value here is short.
    return sa.Text().with_variant(sa.String(40), "mysql", "mariadb")


def _sa_table(metadata: sa.MetaData, table: Table) -> sa.Table:
    columns = [sa.Column(c, _column_type(table.frame, c), nullable=False) for c in table.frame.columns]
    return sa.Table(table.name, metadata, *columns)


def _index(sa_table: sa.Table, table: Table) -> sa.Index:
    """ID and month first, then every other column: the roll-ups read the index alone.

    Without the other columns MariaDB walks the (ID, month) index in order for the GROUP BY and fetches
    every row's amount from the table, one random read each: minutes at city scale with the default
    128 MiB buffer pool, where an index-only scan takes seconds.
    """
    cols = [table.id_column] + ([table.month_column] if table.month_column else [])
    cols += [c for c in table.frame.columns if c not in cols]
    return sa.Index(f"ix_{table.name}_rollup", *(sa_table.c[c] for c in cols))


def _chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]


def _rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return list(zip(*(frame[c].tolist() for c in frame.columns), strict=True))


def _insert_sql(engine: sa.Engine, table: Table, marker: str) -> str:
    quote = engine.dialect.identifier_preparer.quote
    columns = ", ".join(quote(c) for c in table.frame.columns)
    markers = ", ".join([marker] * len(table.frame.columns))
    return f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({markers})"


def _load_postgresql(engine: sa.Engine, table: Table) -> None:
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c) for c in table.frame.columns)
    )
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for chunk in _chunks(table.frame, _CHUNK_ROWS):
                copy.write(chunk.to_csv(header=False, index=False))
        raw.commit()
    finally:
        raw.close()


def _load_mysql(engine: sa.Engine, table: Table) -> None:
    # PyMySQL turns executemany of one INSERT ... VALUES into multi-row statements of up to 1 MB.
    statement = _insert_sql(engine, table, "%s")
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SET unique_checks = 0")
        for chunk in _chunks(table.frame, _MYSQL_BATCH_ROWS):
            cur.executemany(statement, _rows(chunk))
        raw.commit()
    finally:
        raw.close()


def _load_sqlite(engine: sa.Engine, table: Table) -> None:
    statement = _insert_sql(engine, table, "?")
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        # A fresh file that is rewritten whole on failure needs no rollback journal while loading.
        cur.execute("PRAGMA journal_mode = OFF")
        cur.execute("PRAGMA synchronous = OFF")
        for chunk in _chunks(table.frame, _CHUNK_ROWS):
            cur.executemany(statement, _rows(chunk))
        raw.commit()
        cur.execute("PRAGMA journal_mode = DELETE")
    finally:
        raw.close()


def write_sql(url: str, tables: Sequence[Table]) -> dict[str, int]:
    """Drop, recreate, load and index `tables` in the database at `url`; rows written per table."""
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        pairs = [(t, _sa_table(metadata, t)) for t in tables]
        metadata.drop_all(engine)
        metadata.create_all(engine)
        dialect = engine.dialect.name
        for table, sa_table in pairs:
            if dialect == "postgresql":
                _load_postgresql(engine, table)
            elif dialect in ("mysql", "mariadb"):
                _load_mysql(engine, table)
            elif dialect == "sqlite":
                _load_sqlite(engine, table)
            else:
                raise ValueError(f"unsupported database {dialect!r}: use SQLite, PostgreSQL or MariaDB/MySQL")
            with engine.begin() as conn:
                _index(sa_table, table).create(conn)
        if dialect == "postgresql":
            # Fresh statistics, so the connectors' first GROUP BY is planned on the real sizes.
            with engine.begin() as conn:
                for table, _ in pairs:
                    conn.execute(sa.text(f"ANALYZE {engine.dialect.identifier_preparer.quote(table.name)}"))
    finally:
        engine.dispose()
    return {t.name: len(t.frame) for t in tables}


def write_parquet(directory: Path, table: Table) -> Path:
    """One Parquet file per table, a row group per month of readings."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{table.name}.parquet"
    arrow = pa.Table.from_pandas(table.frame, preserve_index=False)
    months = table.frame[table.month_column].nunique() if table.month_column else 1
    pq.write_table(arrow, path, row_group_size=max(1, -(-len(table.frame) // max(months, 1))))
    return path


def write_csv(directory: Path, table: Table) -> Path:
    """One UTF-8 CSV file per table, with a header row."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{table.name}.csv"
    table.frame.to_csv(path, index=False)
    return path
