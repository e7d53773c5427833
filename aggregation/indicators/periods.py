"""Month arithmetic on `YYYY-MM` periods: packs, rolling figures, the early warning's earlier period."""

from __future__ import annotations

from aggregation.indicators.model import IndicatorError


def month_index(period: str) -> int:
    year, month = period.split("-")
    return int(year) * 12 + int(month) - 1


def month(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def months_ending(period: str, count: int) -> tuple[str, str]:
    """The `count` months ending with `period` (YYYY-MM), as (first, last)."""
    end = month_index(period)
    if end - count + 1 < 0:
        raise IndicatorError("period", "the period is too early to look back from")
    return month(end - count + 1), period


def months_before(start: str, end: str) -> tuple[str, str]:
    """The range as long as `start`..`end` that ends the month before `start`."""
    length = month_index(end) - month_index(start) + 1
    first = month_index(start) - length
    if first < 0:
        raise IndicatorError("period_start", "the period has no earlier period to compare with")
    return month(first), month(first + length - 1)


def previous_months(period: str, count: int) -> list[str]:
    """The `count` months before `period`, oldest first (the earlier releases of a rolling figure)."""
    end = month_index(period)
    if end - count < 0:
        raise IndicatorError("period", "the period is too early to look back from")
    return [month(i) for i in range(end - count, end)]
