"""Connector configuration files for the synthetic county's five departments.

One YAML file per connector under `out/connectors/`, in the shape `connectors.config.load_config` reads.
Paths are relative to the configuration's own directory, so the generated tree can be moved as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from connectors.synth.keys import DemoKeys
from connectors.synth.layout import STANDARD, Layout
from connectors.synth.policy import bounds

__all__ = ["CONNECTORS", "FIRST_PORT", "connector_configs", "write_configs"]

CONNECTORS = ("register", "tax", "social", "utility", "civil")
FIRST_PORT = 8711
SYNTHETIC = "Synthetic demo data."
PROXY_NOTE = "Part of the disposable-income proxy; no department holds property income."

_Doc = dict[str, Any]


def _measure(name: str, column: str | None, rollup: str, unit: str, description: str) -> _Doc:
    doc: _Doc = {"name": name}
    if column is not None:
        doc["column"] = column
    doc.update({"rollup": rollup, "unit": unit, "bounds": list(bounds(name)), "description": description})
    return doc


def _codelist(name: str, column: str, codelist: str, description: str) -> _Doc:
    return {
        "name": name,
        "column": column,
        "codelist": f"../codelists/{codelist}",
        "description": description,
    }


def _person_dims(region: bool = False) -> list[_Doc]:
    dims: list[_Doc] = [
        {
            "name": "birth_year_band",
            "derived": "birth_year_band",
            "description": "decade of birth, from the ID",
        },
        {"name": "sex", "derived": "sex", "description": "GB/T 2261.1 sex code, from the ID"},
    ]
    if region:
        dims.append(
            {
                "name": "region_code",
                "derived": "region_code",
                "codelist": "../codelists/region_codes.csv",
                "description": "administrative division that issued the ID",
            }
        )
    return dims


def _monthly(
    name: str, entity: str, description: str, measures: list[_Doc], *, file: str | None = None
) -> _Doc:
    """A monthly dataset over a table of the same name, or over `file` for file sources."""
    doc: _Doc = {"name": name, "description": description}
    if file is None:
        doc["table"] = name
    else:
        doc["file"] = file
    doc.update(
        {
            "entity": {"column": entity, "kind": "person"},
            "period": {"column": "month", "grain": "month"},
            "measures": measures,
            "dimensions": _person_dims(),
        }
    )
    return doc


def _datasets(name: str) -> list[_Doc]:
    if name == "register":
        return [
            {
                "name": "persons",
                "description": "Registered residents: household, village, urban-rural code. " + SYNTHETIC,
                "table": "persons",
                "entity": {"column": "id_number", "kind": "person"},
                "dimensions": [
                    {
                        **_codelist(
                            "village", "village_code", "villages.csv", "village or community (12-digit code)"
                        ),
                        "household_level": True,
                    },
                    {
                        **_codelist(
                            "urban_rural", "urban_rural_code", "urban_rural.csv", "NBS urban-rural code"
                        ),
                        "household_level": True,
                    },
                    _codelist(
                        "relation", "relation", "relations.csv", "GB/T 4761 relation to the household head"
                    ),
                    *_person_dims(region=True),
                ],
                "household": {"column": "household_no"},
            }
        ]
    if name == "tax":
        return [
            _monthly(
                "wages",
                "taxpayer_id",
                "Monthly wages withheld per employer. " + SYNTHETIC,
                [
                    _measure("wage_income", "amount", "sum", "yuan", "wages and salaries. " + PROXY_NOTE),
                    _measure(
                        "wage_records", None, "count", "records", "monthly wage records (one per employer)"
                    ),
                ],
            ),
            {
                "name": "employer_wages",
                "description": "The same wage records, per employing organisation. " + SYNTHETIC,
                "table": "wages",
                "entity": {"column": "employer_code", "kind": "organisation"},
                "period": {"column": "month", "grain": "month"},
                "measures": [
                    _measure("employer_wage_bill", "amount", "sum", "yuan", "wages paid by the organisation"),
                    _measure("employer_wage_records", None, "count", "records", "monthly wage records"),
                ],
            },
            _monthly(
                "business_income",
                "taxpayer_id",
                "Business income of the self-employed (individual businesses). " + SYNTHETIC,
                [
                    _measure(
                        "business_income", "amount", "sum", "yuan", "net business income. " + PROXY_NOTE
                    ),
                    _measure("business_records", None, "count", "records", "monthly or quarterly returns"),
                ],
            ),
        ]
    if name == "social":
        return [
            _monthly(
                "contributions",
                "person_id",
                "Personal social-insurance contributions. " + SYNTHETIC,
                [
                    _measure(
                        "personal_contribution",
                        "personal_contribution",
                        "sum",
                        "yuan",
                        "the insured's own pension, medical and unemployment contributions (subtracted "
                        "in the disposable-income proxy)",
                    ),
                    _measure("months_paid", None, "count", "months", "months with a contribution"),
                ],
            ),
            _monthly(
                "pensions",
                "person_id",
                "Basic pensions paid (employees' and residents' schemes). " + SYNTHETIC,
                [
                    _measure("pension_income", "amount", "sum", "yuan", "pension paid. " + PROXY_NOTE),
                    _measure("pension_months", None, "count", "months", "months with a pension payment"),
                ],
            ),
            {
                "name": "occupations",
                "description": "Occupation of the insured (2022 national occupation classification). "
                + SYNTHETIC,
                "table": "occupations",
                "entity": {"column": "person_id", "kind": "person"},
                "dimensions": [
                    _codelist(
                        "occupation_major", "occupation_major", "occupation_major.csv", "major category"
                    ),
                    _codelist(
                        "occupation_medium", "occupation_medium", "occupation_medium.csv", "medium category"
                    ),
                    *_person_dims(),
                ],
            },
        ]
    if name == "utility":
        return [
            _monthly(
                "electricity",
                "holder_id",
                "Residential electricity, one account per household, keyed by the holder. " + SYNTHETIC,
                [
                    _measure("electricity_kwh", "kwh", "sum", "kWh", "electricity used"),
                    _measure(
                        "electricity_bill", "bill_yuan", "sum", "yuan", "electricity billed (tiered tariff)"
                    ),
                ],
                file="electricity.parquet",
            ),
            _monthly(
                "water",
                "holder_id",
                "Residential water, one account per household, keyed by the holder. " + SYNTHETIC,
                [
                    _measure("water_m3", "m3", "sum", "m3", "water used"),
                    _measure("water_bill", "bill_yuan", "sum", "yuan", "water billed (tiered tariff)"),
                ],
                file="water.parquet",
            ),
        ]
    if name == "civil":
        return [
            _monthly(
                "assistance",
                "id_number",
                "Minimum-livelihood assistance (dibao), paid to one member of the household. " + SYNTHETIC,
                [
                    _measure("assistance_income", "amount", "sum", "yuan", "assistance paid. " + PROXY_NOTE),
                    _measure("assistance_months", None, "count", "months", "months with a payment"),
                ],
                file="assistance.csv",
            )
        ]
    raise ValueError(f"unknown connector {name!r}; expected one of {', '.join(CONNECTORS)}")


_DESCRIPTIONS = {
    "register": "Household register (public security)",
    "tax": "Tax bureau: withheld wages and business income",
    "social": "Human resources and social security: contributions, pensions, occupations",
    "utility": "Water and electricity utilities",
    "civil": "Civil affairs: minimum-livelihood assistance",
}


def connector_configs(sources: dict[str, _Doc], keys: DemoKeys, layout: Layout = STANDARD) -> dict[str, _Doc]:
    """The configuration document of every connector, by its name in `layout`; `sources` gives each
    one's `source` mapping (by standard name) and `keys` are under the layout's names."""
    docs: dict[str, _Doc] = {}
    for port, name in enumerate(CONNECTORS, start=FIRST_PORT):
        named = layout.connector(name)
        docs[name] = {
            "name": name,
            "department": name,
            "description": f"{_DESCRIPTIONS[name]}. {SYNTHETIC} Demo keys: never use in production.",
            "source": sources[name],
            "datasets": _datasets(name),
            "policy": {
                "allowed_units": ["person", "household"],
                "max_epsilon_per_query": "1.0",
                "max_epsilon_per_window": "20.0",
                "budget_window": "calendar_year",
                "gateway_public_keys": [keys.gateway_public],
                "approval_public_key": keys.approval_public[named],
                "admin_key_sha256": keys.admin_sha256[named],
                "audit_public_keys": [keys.audit_public],
                # The demo's indicator runs and monthly packs are built by the gateway, unsigned by any
                # analyst, so they need "*" rules; a real department decides this knowingly.
                "accept_any_analyst_rules": True,
            },
            "signing_key_file": f"../keys/{name}-connector.key",
            "federation_keyring_file": "../keys/federation-keyring.json",
            "state_dir": f"../state/{name}",
            "listen": {"host": "127.0.0.1", "port": port},
            # Demo on loopback: ports are chosen at start, so there is no https public URL to sign.
            # Witnessing stays on (audit_public_keys above).
            "unsafe_development": True,
        }
    # Tax also answers per organisation (employers' wage bills).
    docs["tax"]["policy"]["allowed_units"] = ["person", "household", "organisation"]
    return {layout.connector(name): layout.connector_doc(name, doc) for name, doc in docs.items()}


def write_configs(directory: Path, docs: dict[str, _Doc]) -> dict[str, Path]:
    """Write one YAML file per connector; returns connector name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, doc in docs.items():
        path = directory / f"{name}.yaml"
        header = f"# Connector '{name}' of the synthetic demo county (generated). Demo keys only.\n"
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        paths[name] = path
    return paths
