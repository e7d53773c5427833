"""A first connector configuration proposed from a department's table, for its admin to edit.

`fedgate connector init` reflects the table (column names and types) and reads a small sample of its
rows, inside the department: which column holds valid identity numbers (the entity), which holds the
month (the period, with its format), which numeric columns can be measures, and which text columns look
like coded categories. Nothing here leaves the department; the proposal is written to a local file with
notes saying what to review. Bounds and code lists are public policy: the proposal rounds the sample's
range up to one significant figure for the admin to replace, and never derives a code list from the data.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from connectors.config import NAME, EntityKind
from connectors.errors import ConfigError, SourceError
from connectors.ids import IdKind, normalize

SAMPLE_ROWS = 500
# A column is the entity when most of its sampled values are valid numbers of one kind.
ENTITY_SHARE = 0.5
CATEGORY_MAX = 30

_PERIOD_NAMES = re.compile(r"(month|period|ym|yyyymm|yearmonth|pay_?month|date|月)", re.IGNORECASE)
_YYYY_MM = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_YYYYMM = re.compile(r"^\d{4}(0[1-9]|1[0-2])$")
_YYYY_MM_DD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-\d{2}$")


@dataclass(frozen=True)
class Column:
    """A reflected column: its name, the database's type name, a coarse kind and sampled values."""

    name: str
    type_name: str
    kind: str  # text | integer | decimal | date | datetime | other
    sample: tuple[Any, ...]
    primary_key: bool = False


@dataclass
class Proposal:
    dataset: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _kind_of_sql(type_: Any) -> str:
    import sqlalchemy as sa

    if isinstance(type_, sa.DateTime):
        return "datetime"
    if isinstance(type_, sa.Date):
        return "date"
    if isinstance(type_, sa.Integer):
        return "integer"
    if isinstance(type_, sa.Numeric):
        return "decimal"
    if isinstance(type_, sa.String):
        return "text"
    return "other"


def reflect_sql(url: str, table: str, sample_rows: int = SAMPLE_ROWS) -> list[Column]:
    """Columns of one table with a sample of their values (the first rows the database returns)."""
    import sqlalchemy as sa
    from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

    try:
        engine = sa.create_engine(url)
    except (SQLAlchemyError, ValueError) as exc:
        raise ConfigError(f"--url: not a usable SQLAlchemy URL ({type(exc).__name__})") from None
    try:
        t = sa.Table(table, sa.MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(t).limit(sample_rows)).all()
    except NoSuchTableError:
        raise ConfigError(f"--table: table {table!r} does not exist in the database") from None
    except SQLAlchemyError as exc:
        raise SourceError(f"the database cannot be read ({type(exc).__name__})") from None
    finally:
        engine.dispose()
    return [
        Column(str(c.name), str(c.type), _kind_of_sql(c.type), tuple(r[i] for r in rows), c.primary_key)
        for i, c in enumerate(t.columns)
    ]


def reflect_file(directory: Path, name: str, sample_rows: int = SAMPLE_ROWS) -> list[Column]:
    """Columns of one CSV (read as text, as the connector reads it) or Parquet file, with a sample."""
    import pyarrow as pa
    import pyarrow.dataset as pds

    path = directory / name
    if not path.is_file():
        raise ConfigError(f"--table: file {name!r} does not exist in {directory}")
    try:
        data = pds.dataset(path, format="parquet" if name.endswith(".parquet") else "csv")
        head = data.head(sample_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{name} cannot be read ({type(exc).__name__})") from None
    columns = []
    for f in head.schema:
        values = tuple(head.column(f.name).to_pylist())
        if name.endswith(".csv"):
            # The connector reads CSV cells as text (IDs keep their leading zeros and X).
            values = tuple(None if v is None else str(v) for v in values)
            kind = "integer" if all(re.fullmatch(r"-?\d+", v) for v in values if v) else "text"
            if kind == "text" and all(re.fullmatch(r"-?\d+(\.\d+)?", v) for v in values if v):
                kind = "decimal"
        elif pa.types.is_timestamp(f.type):
            kind = "datetime"
        elif pa.types.is_date(f.type):
            kind = "date"
        elif pa.types.is_integer(f.type):
            kind = "integer"
        elif pa.types.is_floating(f.type) or pa.types.is_decimal(f.type):
            kind = "decimal"
        elif pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            kind = "text"
        else:
            kind = "other"
        columns.append(Column(f.name, str(f.type), kind, values))
    return columns


def _valid_share(values: tuple[Any, ...], kind: IdKind) -> float:
    present = [str(v) for v in values if v is not None and str(v).strip()]
    if not present:
        return 0.0
    ok = 0
    for v in present:
        try:
            normalize(kind, v)
            ok += 1
        except ValueError:
            pass
    return ok / len(present)


def _id_columns(columns: list[Column]) -> list[tuple[Column, EntityKind, float]]:
    """Text columns where most sampled values are valid numbers, persons first (the household, the
    federation's protected unit, is reached through persons), then by the share that validates."""
    found = []
    for c in columns:
        if c.kind != "text":
            continue
        for id_kind, entity in (
            (IdKind.RESIDENT_ID, EntityKind.PERSON),
            (IdKind.CREDIT_CODE, EntityKind.ORGANISATION),
        ):
            share = _valid_share(c.sample, id_kind)
            if share >= ENTITY_SHARE:
                found.append((c, entity, share))
    return sorted(found, key=lambda f: (f[1] is not EntityKind.PERSON, -f[2]))


def _period_format(c: Column) -> str | None:
    """The month format a column's type and sample show, or None if it does not look like a month."""
    if c.kind in ("date", "datetime"):
        return c.kind
    present = [v for v in c.sample if v is not None]
    if not present:
        return None
    if c.kind == "integer" and all(_YYYYMM.fullmatch(str(v)) for v in present):
        return "integer YYYYMM"
    if c.kind != "text":
        return None
    for fmt, pattern in (("YYYY-MM", _YYYY_MM), ("YYYYMM", _YYYYMM), ("YYYY-MM-DD", _YYYY_MM_DD)):
        if all(pattern.fullmatch(str(v).strip()) for v in present):
            return fmt
    return None


def _period(columns: list[Column]) -> tuple[Column, str] | None:
    found = [(c, f) for c in columns if (f := _period_format(c)) is not None]
    if not found:
        return None
    named = [(c, f) for c, f in found if _PERIOD_NAMES.search(c.name)]
    return (named or found)[0]


def measure_name(column: str) -> str:
    """A lower-case protocol name for a column."""
    name = re.sub(r"[^a-z0-9_]", "_", column.lower()).strip("_") or "value"
    if not name[0].isalpha():
        name = "m_" + name
    name = name[:63]
    assert re.fullmatch(NAME, name)
    return name


def round_up(value: float) -> int:
    """Up (away from zero) to one significant figure: 87 345 -> 90 000, -1 234 -> -2 000."""
    if value == 0:
        return 0
    magnitude = 10 ** math.floor(math.log10(abs(value)))
    # Bounds are whole numbers: the last ceil keeps a fraction's bound away from zero too.
    return int(math.copysign(math.ceil(math.ceil(abs(value) / magnitude) * magnitude), value))


def _numbers(values: tuple[Any, ...]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, int | float | Decimal) and not isinstance(v, bool):
            out.append(float(v))
        elif isinstance(v, str):
            with contextlib.suppress(ValueError):
                out.append(float(v))
    return out


def propose(name: str, location: dict[str, str], columns: list[Column]) -> Proposal:
    """The dataset entry of a configuration, and notes on what the admin must review."""
    notes: list[str] = []
    dataset: dict[str, Any] = {"name": name, "description": f"proposed from {next(iter(location.values()))}"}
    dataset.update(location)
    ids = _id_columns(columns)
    entity = ids[0] if ids else None
    used: set[str] = {c.name for c, _k, _s in ids}
    if entity is None:
        notes.append(
            "no text column holds mostly valid resident IDs (GB 11643) or credit codes (GB 32100): set "
            "entity.column by hand; an integer-typed ID column cannot hold the check character X"
        )
        dataset["entity"] = {"column": columns[0].name, "kind": "person"}
    else:
        column, kind, share = entity
        dataset["entity"] = {"column": column.name, "kind": kind.value}
        notes.append(f"entity: {column.name} ({kind.value}; most sampled values are valid numbers)")
        for other, other_kind, _share in ids[1:]:
            notes.append(
                f"{other.name} also holds {other_kind.value} numbers: it is left out (identity numbers are "
                "never a measure or a dimension)"
            )
        if share < 0.95:
            notes.append(f"entity: some sampled values of {column.name} are not valid: see `connector check`")
    period = _period(columns)
    if period is None:
        notes.append("no month column found: the dataset is proposed as a snapshot (no period)")
    else:
        column, fmt = period
        used.add(column.name)
        dataset["period"] = {"column": column.name}
        notes.append(f"period: {column.name}, type {column.type_name}, looks like {fmt}")
        if fmt != "YYYY-MM":
            notes.append(
                f"period: {column.name} is not 'YYYY-MM' text: declare its format (see the period formats "
                "in docs/architecture.md) and let `connector check` confirm it"
            )
    measures = []
    for c in columns:
        if c.name in used or c.kind not in ("integer", "decimal"):
            continue
        if c.primary_key:
            notes.append(f"{c.name} is the table's primary key: it is left out (not a measure)")
            continue
        values = _numbers(c.sample)
        # Bounds clip an entity's total over the requested months: a year of the sampled rows' range.
        months = 12 if period is not None else 1
        low = min(0, round_up(min(values) * months)) if values else 0
        high = round_up(max(values) * months) if values else 0
        measures.append(
            {
                "name": measure_name(c.name),
                "column": c.name,
                "rollup": "sum",
                "unit": "yuan",
                "bounds": [low, high],
            }
        )
        used.add(c.name)
    if measures:
        dataset["measures"] = measures
        notes.append(
            "measures: bounds are published and clip every entity's total: replace the proposed ones "
            "(twelve months of the sampled rows' range, rounded up) with your department's policy, and "
            "check each unit"
        )
    if dataset["entity"]["kind"] == "person":
        dataset["dimensions"] = [
            {"name": "sex", "derived": "sex"},
            {"name": "birth_year_band", "derived": "birth_year_band"},
        ]
    for c in columns:
        if c.name in used or c.kind != "text":
            continue
        distinct = {str(v).strip() for v in c.sample if v is not None}
        if 0 < len(distinct) <= CATEGORY_MAX:
            notes.append(
                f"dimension? {c.name} looks like a coded category: add it with the published code list, "
                f"e.g. {{name: {measure_name(c.name)}, column: {c.name}, codelist: FILE.csv}}"
            )
    return Proposal(dataset=dataset, notes=notes)
