"""How close an observed coverage must be to the nominal rate, given the number of trials.

A coverage test counts how often a stated interval contains the truth over ``trials`` independent
releases. The count is binomial, so the observed rate lies within ``Z`` standard errors of the true rate
with probability 99%; a 95% interval over 500 trials must cover in about 92.5–97.5% of them (too narrow
below, uselessly wide above), over 2,000 trials in about 93.7–96.3%.

**At a bound** (a true count of 0, a true share of 0 or 1, or a cell the noise swamps so that the shown
value is often clamped to a bound) the shown interval is clamped like the shown value and always contains
it, so it keeps the misses on one side only: it may cover up to ``1 - (1 - nominal) / 2`` (97.5% for a
95% interval), never less than nominal. ``at_bound=True`` allows that much above.
"""

from __future__ import annotations

import math

Z = 2.576
"""Two-sided 99%, for trials drawn from a seeded generator: the test is repeatable, and a correct interval
would fail it for about one seed in a hundred."""


Z_UNSEEDED = 3.29
"""For trials whose noise OpenDP draws (it cannot be seeded): two-sided 99.9%, so a correct interval
fails such a test about once in a thousand runs."""


def band(nominal: float, trials: int, z: float = Z) -> tuple[float, float]:
    """The range of observed coverage rates consistent with ``nominal`` over ``trials`` trials."""
    half = z * math.sqrt(nominal * (1.0 - nominal) / trials)
    return nominal - half, nominal + half


def check(
    hits: int, trials: int, nominal: float = 0.95, *, what: str = "", at_bound: bool = False, z: float = Z
) -> float:
    """Assert the observed coverage is consistent with ``nominal``; returns the rate for reporting."""
    rate = hits / trials
    low, high = band(nominal, trials, z)
    if at_bound:
        high = band(1.0 - (1.0 - nominal) / 2.0, trials, z)[1]
    expected = f"expected {low:.3f}–{high:.3f}"
    assert low <= rate <= high, f"{what}: covered {rate:.3f} over {trials} trials, {expected}"
    return rate
