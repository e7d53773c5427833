"""Example request bodies for the OpenAPI document, one set per body the API takes.

Values are the synthetic county's (`fedgate synth`): its connectors, datasets, village codes and the
monitoring plan's bands. Signatures are shown as what they are (base64 Ed25519 over the canonical JSON):
`fedgate approve` and `fedgate rules add` make real ones on the department's machine.
"""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

__all__ = [
    "ANALYST_KEY",
    "APPROVAL",
    "CONNECTOR",
    "ENDPOINT",
    "EPSILON",
    "INDICATOR_RUN",
    "JOB",
    "KEY_GROUP",
    "MONITORING",
    "PACK_RUN",
    "QUERY",
    "REJECTION",
    "RULE",
    "SCHEDULE",
]

_INCOME_TERMS: list[dict[str, Any]] = [
    {"dataset": "tax.wages", "measure": "wage_income", "sign": 1},
    {"dataset": "tax.business_income", "measure": "business_income", "sign": 1},
    {"dataset": "social.pensions", "measure": "pension_income", "sign": 1},
    {"dataset": "civil.assistance", "measure": "assistance_income", "sign": 1},
    {"dataset": "social.contributions", "measure": "personal_contribution", "sign": -1},
]
_SIGNATURE = "base64 Ed25519 signature over the canonical JSON (RFC 8785), 88 characters"


def _one(summary: str, value: Any, description: str = "") -> dict[str, Example]:
    return {"example": Example(summary=summary, description=description, value=value)}


ENDPOINT = _one("allow a connector's endpoint", {"url": "https://tax-connector.county.example:8443"})

CONNECTOR = _one(
    "register the tax bureau's connector",
    {
        "name": "tax",
        "endpoint": "https://tax-connector.county.example:8443",
        "key_fingerprint": "9f2c4e1a7b3d5f60817a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708",
    },
    "The fingerprint is the one `fedgate connector init` printed on the department's machine.",
)

QUERY: dict[str, Example] = {
    "bands_by_village": Example(
        summary="households by income band, by village",
        value={
            "version": "fedgate-query/1",
            "purpose": "Household income bands for the monthly monitoring report",
            "unit": "household",
            "period_start": "2025-01",
            "period_end": "2025-12",
            "measure": {
                "terms": _INCOME_TERMS,
                "lower": -200000,
                "upper": 5000000,
                "label": "disposable income proxy",
            },
            "group_by": ["register.persons.village"],
            "statistics": [{"kind": "histogram", "edges": [100000, 200000, 500000, 600000]}],
            "epsilon": "1",
        },
    ),
    "median_by_urban_rural": Example(
        summary="P10, P50, P90 of household income, urban and rural",
        value={
            "version": "fedgate-query/1",
            "purpose": "Income quantiles for the urban-rural comparison",
            "unit": "household",
            "period_start": "2025-01",
            "period_end": "2025-12",
            "measure": {
                "terms": _INCOME_TERMS,
                "lower": 0,
                "upper": 2000000,
                "label": "disposable income proxy",
            },
            "group_by": ["register.persons.urban_rural"],
            "statistics": [
                {"kind": "quantiles", "probs": [0.1, 0.5, 0.9], "edges": list(range(0, 600000, 20000))}
            ],
            "epsilon": "0.5",
        },
    ),
}

APPROVAL = _one(
    "the tax bureau approves what the query reads of its data",
    {
        "approval": {
            "version": "fedgate-approval/1",
            "department": "tax",
            "query_id": "q-5433f6ee1191173b3e9dfea576f5ac32",
            "query_digest": "3d1f0c8e5b7a9264f1e3c5a7b9d0e2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4f6",
            "unit": "household",
            "period_start": "2025-01",
            "period_end": "2025-12",
            "datasets": [
                {"dataset": "tax.wages", "measures": ["wage_income"], "dimensions": []},
                {"dataset": "tax.business_income", "measures": ["business_income"], "dimensions": []},
            ],
            "epsilon": "1",
        },
        "signature": _SIGNATURE,
    },
    "Made by `fedgate approve QUERY_ID --key FILE` (the key never leaves the department).",
)

REJECTION = _one(
    "reject with a reason", {"reason": "the purpose does not need village detail; ask by township"}
)

RULE = _one(
    "pre-approve household counts of wages up to epsilon 0.5",
    {
        "rule": {
            "version": "fedgate-rule/1",
            "department": "tax",
            "rule_id": "monthly-monitoring",
            "datasets": [{"dataset": "tax.wages", "measures": ["wage_income"], "dimensions": []}],
            "units": ["household"],
            "max_epsilon_per_query": "0.5",
            "analysts": ["*"],
            "expires_at": 1798761600,
        },
        "signature": _SIGNATURE,
    },
)

EPSILON = _one("an epsilon of 2", {"epsilon": "2"})

KEY_GROUP = _one(
    "households with a member on minimum-livelihood assistance",
    {
        "definition": {"name": "assisted", "measure": "civil.assistance.assistance_income", "at_least": 1},
        "title": "Households receiving minimum-livelihood assistance",
        "title_zh": "低保户",
        "description": "a member received assistance in the period",
    },
)

INDICATOR_RUN = _one(
    "income bands for the 12 months to December 2025",
    {"period": "2025-12", "epsilon": "0.5", "bands": {"100k–500k": [100000, 500000]}},
)

PACK_RUN = _one("the monthly pack for October 2025", {"period": "2025-10"})

MONITORING = _one(
    "the county's monitoring plan (defaults for bounds, edges and bands)",
    {
        "version": "fedgate-monitoring/1",
        "income_terms": _INCOME_TERMS,
        "village": "register.persons.village",
        "urban_rural": "register.persons.urban_rural",
        "coverage_datasets": ["tax.wages", "social.pensions", "civil.assistance"],
        "bands": {"100k–500k": [100000, 500000], "200k–600k": [200000, 600000]},
    },
    "The YAML file `fedgate synth` writes, as JSON.",
)

ANALYST_KEY = _one(
    "pin an analyst's own key",
    {"public_key": "ed25519:9mK2vQ7xZpL4c8nR1tY6wB3eH5jD0sF2gA7kU4oI1qE="},
    "The public key `fedgate analysts keygen` printed on the analyst's machine.",
)

JOB: dict[str, Example] = {
    "query": Example(
        summary="run an approved query in the background",
        value={"kind": "query", "query_id": "q-0673c320d93cf6235e0ad284d0fc935a"},
    ),
    "indicator": Example(
        summary="run an indicator for December 2025",
        value={"kind": "indicator", "name": "income_bands", "period": "2025-12"},
    ),
    "pack": Example(
        summary="run the monthly pack for December 2025",
        value={"kind": "pack", "name": "monthly", "period": "2025-12"},
    ),
}

SCHEDULE = _one(
    "the monthly pack on the 5th at 02:00, for the month before",
    {
        "name": "monthly pack",
        "pack": "monthly",
        "period_rule": "previous_month",
        "cron": {"day": "5", "hour": "2", "minute": "0"},
        "run_as": "analyst",
    },
)
