"""The words the gateway and the connectors share: what a query counts, what a key identifies, how a
measure rolls up, what a period is, which MAC makes tokens.

A leaf: it imports nothing of this project, so the wire protocol (`connectors.protocol`), a connector's
configuration (`connectors.config`), the tokens and the gateway all take the same definitions from here
without importing one another.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

__all__ = [
    "DEFAULT_NEIGHBOURING",
    "PERIOD_PATTERN",
    "EntityKind",
    "Neighbouring",
    "Period",
    "Rollup",
    "Suite",
    "Unit",
]


class EntityKind(StrEnum):
    """What a dataset's key identifies."""

    PERSON = "person"
    ORGANISATION = "organisation"


class Unit(StrEnum):
    """The unit a query counts: one row per unit is measured."""

    PERSON = "person"
    HOUSEHOLD = "household"
    ORGANISATION = "organisation"


class Rollup(StrEnum):
    """How a measure's rows roll up per entity over the requested periods."""

    SUM = "sum"
    COUNT = "count"
    MAX = "max"


class Suite(StrEnum):
    """The MAC a federation uses for tokens; it travels in the signed request."""

    HMAC_SHA256 = "hmac-sha256"
    # Keyed BLAKE2b with a 32-byte digest; the digest size is part of BLAKE2b's parameter block, so this
    # is not the same function as a 16-byte BLAKE2b digest.
    BLAKE2B = "blake2b"
    # For deployments bound to the national standard (GB/T 32905 SM3).
    HMAC_SM3 = "hmac-sm3"


class Neighbouring(StrEnum):
    """The neighbour relation a query's epsilon is guaranteed under (`privacy.neighbours` says what each
    means for OpenDP's map); part of the canonical query, so it is shared vocabulary."""

    ADD_REMOVE_HOUSEHOLD = "add_remove_household"
    CHANGE_HOUSEHOLD = "change_household"


DEFAULT_NEIGHBOURING = Neighbouring.ADD_REMOVE_HOUSEHOLD


PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
Period = Annotated[str, Field(pattern=PERIOD_PATTERN, description="a month, YYYY-MM")]
"""The grain of every period: a calendar month."""
