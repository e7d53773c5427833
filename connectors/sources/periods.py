"""Period columns as departments store them: one plan per dataset, the month range as bounds, sampling.

A request names months as `'YYYY-MM'` text. A department may store the month as a `DATE`, a `TIMESTAMP`
(with or without time zone), an integer `YYYYMM`, text `'YYYY-MM'`, `'YYYYMM'` or `'YYYY-MM-DD'`, or a
pair of year and month columns. The adapters never compare the request's text with whatever the column
holds: each resolves a `PeriodPlan` from the column's own type (and the declared `period.format` where the
type is ambiguous), turns the request's months into bounds of the column's own type (so the database uses
its indexes), and verifies a sample of the values against the plan before serving anything. A format the
data does not follow is refused with the column, its type and the fix; it never becomes a silent empty or
partial period.

Storage kinds (what the adapter reflected) and the formats each admits:

    date          DATE                              -> date
    timestamp     TIMESTAMP / DATETIME (no zone)    -> timestamp
    timestamptz   TIMESTAMP WITH TIME ZONE          -> timestamp (month boundaries in period.timezone)
    integer       INTEGER / BIGINT / NUMERIC(n, 0)  -> yyyymm, year_month
    text          CHAR / VARCHAR / TEXT / CSV       -> text_yyyy_mm (default), text_yyyymm,
                                                       text_yyyy_mm_dd, year_month; `date`/`timestamp`
                                                       read as ISO text, `yyyymm` as digits
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connectors.config import PeriodFormat, PeriodSpec
from connectors.errors import ConfigError

DATE, TIMESTAMP, TIMESTAMPTZ, INTEGER, TEXT = "date", "timestamp", "timestamptz", "integer", "text"
STORAGE_KINDS = (DATE, TIMESTAMP, TIMESTAMPTZ, INTEGER, TEXT)

SAMPLE_ROWS = 500
"""Period values read to verify a plan, at start and at `check`."""

_NATURAL = {DATE: PeriodFormat.DATE, TIMESTAMP: PeriodFormat.TIMESTAMP, TIMESTAMPTZ: PeriodFormat.TIMESTAMP}
_TEXT_PATTERNS = {
    PeriodFormat.TEXT_YYYY_MM: re.compile(r"\d{4}-(0[1-9]|1[0-2])"),
    PeriodFormat.TEXT_YYYYMM: re.compile(r"\d{4}(0[1-9]|1[0-2])"),
    # A day, optionally followed by a time (and zone): ISO text of a date or a timestamp.
    PeriodFormat.TEXT_YYYY_MM_DD: re.compile(r"\d{4}-(0[1-9]|1[0-2])-\d{2}([ T].*)?"),
}
_FORMAT_OF_TEXT = {
    PeriodFormat.DATE: PeriodFormat.TEXT_YYYY_MM_DD,
    PeriodFormat.TIMESTAMP: PeriodFormat.TEXT_YYYY_MM_DD,
    PeriodFormat.YYYYMM: PeriodFormat.TEXT_YYYYMM,
}


@dataclass(frozen=True)
class PeriodPlan:
    """How one dataset's period is read: the effective format over the reflected storage."""

    column: str
    storage: str
    format: PeriodFormat
    month_column: str | None = None
    timezone: str = "Asia/Shanghai"
    padded: bool = False
    """CHAR(n) text: trailing blanks are padding (the database compares without them)"""

    def describe(self) -> str:
        cols = f"{self.column}, {self.month_column}" if self.month_column else self.column
        return f"period column {cols} ({self.storage}, read as {self.format.value})"


@dataclass(frozen=True)
class Bounds:
    """A month range in the column's own type: `low <= v <= high` if closed, else `low <= v < high`."""

    low: Any
    high: Any
    closed: bool


@dataclass(frozen=True)
class Month:
    """A calendar month: the connectors' one home for month arithmetic (they import no aggregation code)."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        return cls(int(text[:4]), int(text[5:7]))

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    @property
    def text(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def _refuse(column: str, storage: str, message: str) -> ConfigError:
    return ConfigError(f"period column {column!r} ({storage}): {message}")


def resolve_plan(spec: PeriodSpec, storage: str, month_storage: str | None = None) -> PeriodPlan:
    """The plan for a declared period over its reflected storage, or a `ConfigError` naming the fix."""
    declared = spec.format
    if declared is PeriodFormat.YEAR_MONTH or spec.month_column is not None:
        for col, kind in ((spec.column, storage), (spec.month_column, month_storage)):
            if kind not in (INTEGER, TEXT):
                raise _refuse(
                    str(col),
                    str(kind),
                    "a year and month pair needs integer (or digit text) columns; point period.column"
                    " at the year and period.month_column at the month",
                )
        return PeriodPlan(spec.column, storage, PeriodFormat.YEAR_MONTH, spec.month_column, spec.timezone)
    if storage == TEXT:
        fmt: PeriodFormat = declared or PeriodFormat.TEXT_YYYY_MM
        fmt = _FORMAT_OF_TEXT.get(fmt, fmt)
        return PeriodPlan(spec.column, storage, fmt, timezone=spec.timezone)
    if storage == INTEGER:
        if declared not in (None, PeriodFormat.YYYYMM, PeriodFormat.TEXT_YYYYMM):
            raise _refuse(
                spec.column,
                storage,
                f"period.format {declared.value} does not fit an integer column; an integer month is"
                " yyyymm (year times 100 plus month): set period.format: yyyymm or leave it out",
            )
        return PeriodPlan(spec.column, storage, PeriodFormat.YYYYMM, timezone=spec.timezone)
    natural = _NATURAL.get(storage)
    if natural is None:
        raise _refuse(
            spec.column,
            storage,
            "this column type holds no month this connector can read: use a DATE, TIMESTAMP, integer"
            " YYYYMM or text column, or a year and month pair",
        )
    if declared not in (None, natural):
        raise _refuse(
            spec.column,
            storage,
            f"period.format {declared.value} does not fit a {storage} column: set period.format:"
            f" {natural.value} or leave it out (it is taken from the column type)",
        )
    return PeriodPlan(spec.column, storage, natural, timezone=spec.timezone)


def month_bounds(plan: PeriodPlan, start: str, end: str) -> Bounds:
    """The request's `'YYYY-MM'` range as bounds in the column's own type (whole last month included).

    Not for year/month pairs: those compare two columns (`year_month_bounds`).
    """
    first, last = Month.parse(start), Month.parse(end)
    after = last.next()
    fmt = plan.format
    if fmt is PeriodFormat.DATE:
        return Bounds(
            datetime.date(first.year, first.month, 1), datetime.date(after.year, after.month, 1), False
        )
    if fmt is PeriodFormat.TIMESTAMP:
        tz = zoneinfo.ZoneInfo(plan.timezone) if plan.storage == TIMESTAMPTZ else None
        low = datetime.datetime(first.year, first.month, 1, tzinfo=tz)
        return Bounds(low, datetime.datetime(after.year, after.month, 1, tzinfo=tz), False)
    if fmt is PeriodFormat.YYYYMM:
        return Bounds(first.year * 100 + first.month, last.year * 100 + last.month, True)
    if fmt is PeriodFormat.TEXT_YYYY_MM:
        return Bounds(first.text, last.text, True)
    if fmt is PeriodFormat.TEXT_YYYYMM:
        return Bounds(first.text.replace("-", ""), last.text.replace("-", ""), True)
    if fmt is PeriodFormat.TEXT_YYYY_MM_DD:
        return Bounds(first.text + "-01", after.text + "-01", False)
    raise AssertionError(f"no single-column bounds for {fmt}")


def year_month_bounds(start: str, end: str) -> tuple[Month, Month]:
    return Month.parse(start), Month.parse(end)


def shape_of(value: object) -> str:
    """A value's shape without the value: digits become N, letters A (for messages and logs)."""
    if isinstance(value, datetime.datetime):
        return "a timestamp"
    if isinstance(value, datetime.date):
        return "a date"
    text = re.sub(r"[0-9]", "N", str(value))
    text = re.sub(r"[^\WN_]", "A", text)
    return f"{type(value).__name__} {text[:24]!r}"


def _int_like(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    try:
        as_int = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return as_int if as_int == value else None


def _fits(plan: PeriodPlan, value: object, *, month_part: bool = False) -> bool:
    fmt = plan.format
    if fmt is PeriodFormat.YEAR_MONTH:
        number = _int_like(value)
        return number is not None and (1 <= number <= 12 if month_part else 1800 <= number <= 9999)
    if fmt in (PeriodFormat.DATE, PeriodFormat.TIMESTAMP):
        if isinstance(value, str):  # SQLite keeps temporal columns as text
            return _TEXT_PATTERNS[PeriodFormat.TEXT_YYYY_MM_DD].fullmatch(value) is not None
        if fmt is PeriodFormat.DATE:
            return isinstance(value, datetime.date) and not isinstance(value, datetime.datetime)
        return isinstance(value, datetime.datetime)
    if fmt is PeriodFormat.YYYYMM:
        number = _int_like(value)
        return number is not None and 180001 <= number <= 999912 and 1 <= number % 100 <= 12
    if not isinstance(value, str):
        return False
    return _TEXT_PATTERNS[fmt].fullmatch(value.rstrip(" ") if plan.padded else value) is not None


def _guess(value: object) -> str:
    """The format a stray value looks like, for the fix in a refusal."""
    if isinstance(value, datetime.datetime):
        return "timestamp"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, int) and 180001 <= value <= 999912:
        return "yyyymm"
    text = str(value).strip()
    for fmt, pattern in _TEXT_PATTERNS.items():
        if pattern.fullmatch(text):
            return fmt.value
    return ""


def verify_sample(plan: PeriodPlan, values: Iterable[object], months: Iterable[object] = ()) -> None:
    """Raise a `ConfigError` naming the column, its type and the fix if a sampled value breaks the plan."""
    for value in values:
        if value is not None and not _fits(plan, value):
            guess = _guess(value)
            fix = (
                f"set period.format: {guess}"
                if guess and guess != plan.format.value
                else "correct period.column or period.format"
            )
            raise _refuse(
                plan.column,
                plan.storage,
                f"declared or inferred format {plan.format.value}, but the data holds values shaped"
                f" like {shape_of(value)}: {fix}",
            )
    for value in months:
        if value is not None and not _fits(plan, value, month_part=True):
            raise _refuse(
                str(plan.month_column),
                plan.storage,
                f"a month column holds 1 to 12, but the data holds values shaped like {shape_of(value)}:"
                " correct period.month_column",
            )


def month_key(plan: PeriodPlan, value: object, month: object = None) -> str | None:
    """The month ("YYYY-MM") a raw period value falls in, as the month ranges of `month_bounds` read it;
    None for a value that names no month (it falls in no requested range either).

    A TIMESTAMP WITH TIME ZONE counts in the plan's zone, as its range predicate does.
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    if plan.format is PeriodFormat.YEAR_MONTH:
        year, number = _int_like(value), _int_like(month)
        return _month_text(year, number)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(zoneinfo.ZoneInfo(plan.timezone))
        return _month_text(value.year, value.month)
    if isinstance(value, datetime.date):
        return _month_text(value.year, value.month)
    if isinstance(value, int) and not isinstance(value, bool):
        return _month_text(*divmod(value, 100)) if plan.format is PeriodFormat.YYYYMM else None
    text = str(value).strip()
    if plan.format is PeriodFormat.TEXT_YYYYMM or plan.format is PeriodFormat.YYYYMM:
        ok = len(text) == 6 and text.isdigit()
        return _month_text(int(text[:4]), int(text[4:])) if ok else None
    if len(text) >= 7 and text[:4].isdigit() and text[4] == "-" and text[5:7].isdigit():
        if plan.storage == TIMESTAMPTZ and len(text) > 10:
            return None  # a zone-aware text timestamp is not read here; such a column is a timestamp type
        return _month_text(int(text[:4]), int(text[5:7]))
    return None


def _month_text(year: int | None, month: int | None) -> str | None:
    if year is None or month is None or not 1 <= month <= 12 or not 1 <= year <= 9999:
        return None
    return f"{year:04d}-{month:02d}"
