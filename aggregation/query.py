"""The analyst's query model, as the gateway side imports it.

The model itself lives in `connectors.query`: every extract request carries the canonical query, and a
connector (installed without `aggregation/`) recomputes its digest and plans its own part of it.
"""

from __future__ import annotations

from connectors.query import (
    COVERED,
    COVERED_DOMAIN,
    DATASET_REF,
    DIMENSION_REF,
    HAS_PREFIX,
    HOUSEHOLD_MEMBERS,
    INCOME_TREND,
    MAX_EPSILON_PER_QUERY,
    MEMBER_FLAG_DOMAIN,
    MEMBERS_MEASURE,
    MIN_EPSILON_PER_QUERY,
    SIZE_BAND,
    SIZE_BANDS,
    TREND_DOMAIN,
    TREND_FELL,
    TREND_NO_BASELINE,
    TREND_NOT_FELL,
    Baseline,
    Filter,
    Measure,
    MemberGroup,
    QuerySpec,
    Statistic,
    StatisticKind,
    Term,
    split_dimension,
)

__all__ = [
    "COVERED",
    "COVERED_DOMAIN",
    "DATASET_REF",
    "DIMENSION_REF",
    "HAS_PREFIX",
    "HOUSEHOLD_MEMBERS",
    "INCOME_TREND",
    "MAX_EPSILON_PER_QUERY",
    "MEMBERS_MEASURE",
    "MEMBER_FLAG_DOMAIN",
    "MIN_EPSILON_PER_QUERY",
    "SIZE_BAND",
    "SIZE_BANDS",
    "TREND_DOMAIN",
    "TREND_FELL",
    "TREND_NOT_FELL",
    "TREND_NO_BASELINE",
    "Baseline",
    "Filter",
    "Measure",
    "MemberGroup",
    "QuerySpec",
    "Statistic",
    "StatisticKind",
    "Term",
    "split_dimension",
]
