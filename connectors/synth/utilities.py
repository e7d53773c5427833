"""Household electricity and water accounts, one of each per household, held by the household head.

Electricity: a median of about 2,600 kWh a year (215 a month), more for larger households, with a summer
air-conditioning peak and a winter heating bump; some homes stand nearly empty while their owners work
away. Bills follow Zhejiang's residential tiers on the year's running total (0.538 yuan/kWh up to
2,760 kWh, 0.588 up to 4,800, 0.838 above). Water tariffs are illustrative island tariffs (desalinated
water is dear), tiered the same way per year.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.synth.population import Population

__all__ = ["ELECTRICITY_TIERS", "WATER_TIERS", "Utilities", "build_utilities"]

# (upper end of the tier per year, price per unit in yuan)
ELECTRICITY_TIERS = ((2_760, 0.538), (4_800, 0.588), (float("inf"), 0.838))
WATER_TIERS = ((216, 5.30), (288, 7.95), (float("inf"), 15.90))

_ELECTRICITY_SEASON = np.array([1.2, 1.15, 0.9, 0.8, 0.8, 0.95, 1.3, 1.35, 1.0, 0.8, 0.85, 1.0])
_WATER_SEASON = np.array([0.9, 0.95, 0.9, 0.95, 1.0, 1.05, 1.2, 1.2, 1.05, 0.95, 0.9, 0.95])


@dataclass(frozen=True)
class Utilities:
    """Monthly readings; `person` is the account holder's population index, months run 1..12."""

    electricity: pd.DataFrame  # person, month, kwh, bill_yuan
    water: pd.DataFrame  # person, month, m3, bill_yuan


def _tiered_cost(
    cumulative: npt.NDArray[np.float64], tiers: tuple[tuple[float, float], ...]
) -> npt.NDArray[np.float64]:
    cost = np.zeros_like(cumulative)
    lower = 0.0
    for upper, price in tiers:
        cost += (np.clip(cumulative, lower, upper) - lower) * price
        lower = upper
    return cost


def _monthly(
    rng: np.random.Generator,
    annual: npt.NDArray[np.float64],
    season: npt.NDArray[np.float64],
    tiers: tuple[tuple[float, float], ...],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    use = annual[:, None] * (season / season.sum())[None, :] * rng.normal(1.0, 0.1, size=(len(annual), 12))
    units = np.rint(np.maximum(use, 0)).astype(np.int64)
    cumulative = np.cumsum(units, axis=1).astype(np.float64)
    cost = _tiered_cost(cumulative, tiers)
    bill = np.diff(np.rint(cost), axis=1, prepend=0).astype(np.int64)
    return units, bill


def build_utilities(rng: np.random.Generator, population: Population) -> Utilities:
    """Twelve monthly readings of each household's electricity and water account."""
    h = population.households
    size = population.household_size.astype(np.float64)
    vacant = rng.random(h) < 0.04
    kwh_year = np.exp(rng.normal(np.log(2_800), 0.45, size=h)) * (size / 2) ** 0.35
    kwh_year = np.where(vacant, rng.uniform(60, 400, size=h), kwh_year)
    m3_year = np.exp(rng.normal(np.log(30), 0.35, size=h)) * size
    m3_year = np.where(vacant, rng.uniform(2, 20, size=h), m3_year)

    kwh, kwh_bill = _monthly(rng, kwh_year, _ELECTRICITY_SEASON, ELECTRICITY_TIERS)
    m3, m3_bill = _monthly(rng, m3_year, _WATER_SEASON, WATER_TIERS)
    holder = np.repeat(population.household_head, 12)
    month = np.tile(np.arange(1, 13), h)
    return Utilities(
        electricity=pd.DataFrame(
            {"person": holder, "month": month, "kwh": kwh.ravel(), "bill_yuan": kwh_bill.ravel()}
        ),
        water=pd.DataFrame(
            {"person": holder, "month": month, "m3": m3.ravel(), "bill_yuan": m3_bill.ravel()}
        ),
    )
