"""The neighbour relation of the federation's guarantee, and the frame distance OpenDP's map is checked at.

The protected unit is the household: all its members' records in every department. Two federations are
neighbours under

- ``add_remove_household`` (the default) when one holds one household more than the other;
- ``change_household`` when they differ only in one household's records (its members, what every
  department holds on them, its attributes): a removal and an addition, so twice the distance.

A release's frame holds at most ``rows_per_unit`` rows of one household (1 in household queries, the
member cap in person queries), so two neighbouring federations give frames at most ``rows_per_unit``
(add/remove) or ``2 * rows_per_unit`` (change) rows apart in symmetric distance. OpenDP's privacy map is
evaluated at that distance and must stay within the query's epsilon; `docs/privacy.md` states the promise.
"""

from __future__ import annotations

from enum import StrEnum


class Neighbouring(StrEnum):
    """The neighbour relation a release's epsilon holds under: add or remove one household, or change
    one household's records."""

    ADD_REMOVE_HOUSEHOLD = "add_remove_household"
    CHANGE_HOUSEHOLD = "change_household"


DEFAULT_NEIGHBOURING = Neighbouring.ADD_REMOVE_HOUSEHOLD

_FACTOR = {Neighbouring.ADD_REMOVE_HOUSEHOLD: 1, Neighbouring.CHANGE_HOUSEHOLD: 2}


def frame_distance(relation: Neighbouring, rows_per_unit: int) -> int:
    """The symmetric distance between the frames of two neighbouring federations (OpenDP's ``d_in``)."""
    if rows_per_unit < 1:
        raise ValueError("a household contributes at least one row to the frame it is in")
    return _FACTOR[relation] * rows_per_unit


def describe(relation: Neighbouring) -> str:
    """One sentence for results and notes: what a neighbouring federation is."""
    if relation is Neighbouring.CHANGE_HOUSEHOLD:
        return (
            "change one household: any one household's records (its members and what every department "
            "holds on them) may differ; charged at twice the add/remove distance"
        )
    return "add or remove one household: all its members' records in every department"
