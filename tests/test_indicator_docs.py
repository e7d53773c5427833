"""docs/indicators.md states the epsilon splits the code uses: each indicator's releases, the pack's shares,
the epsilons quoted for the pack, and the equal split inside a release.

The documented fractions are parsed from the page itself, so a change of a declared weight (or of the page)
that is not made in both places fails here.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from aggregation.indicators import INDICATORS, PACKS, IndicatorParams
from gateway.dev.seed_groups import SEED_GROUPS, synthetic_config
from privacy.release import prepare_release
from privacy.vocabulary import Lorenz, ReleaseSpec

DOC = Path(__file__).resolve().parents[1] / "docs" / "indicators.md"
CONFIG = synthetic_config()  # the synthetic county's plan, the one the page documents
GROUPS = tuple(g.definition for g in SEED_GROUPS)


def _sections() -> dict[str, str]:
    """Each indicator's section of the page, keyed by the name in its heading (### `name` ...)."""
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^### `(\w+)`.*$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts) - 1, 2)}


def _bullet(section: str, title: str) -> str:
    """The text of a `- **Title (...).**` bullet, its heading included, continuation lines joined."""
    match = re.search(rf"^- \*\*({title}.*?)(?=^- \*\*|\Z)", section, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"no **{title}.** bullet"
    return " ".join(match.group(1).split())


def _params(name: str, groups: tuple = GROUPS) -> IndicatorParams:
    return IndicatorParams(
        period_start="2025-01",
        period_end="2025-12",
        epsilon=Decimal(1),
        analyst="ana",
        groups=groups if name == "key_groups" else (),
    )


def _declared_shares(name: str, groups: tuple = GROUPS) -> list[Fraction]:
    decls = INDICATORS[name].releases(_params(name, groups), CONFIG)
    whole = sum((d.weight for d in decls), Fraction(0))
    return [d.weight / whole for d in decls]


def test_every_indicator_is_documented() -> None:
    assert set(_sections()) == set(INDICATORS)


@pytest.mark.parametrize("name", sorted(set(INDICATORS) - {"key_groups"}))
def test_the_documented_release_split_is_the_declared_one(name: str) -> None:
    releases = _bullet(_sections()[name], "Releases")
    fractions = re.findall(r"(?<![\d.])(\d+)/(\d+)(?![\d.])", releases)
    documented = [Fraction(int(a), int(b)) for a, b in fractions]
    assert documented == _declared_shares(name), (name, releases)


def test_the_documented_key_group_split_is_the_declared_one() -> None:
    releases = _bullet(_sections()["key_groups"], "Releases")
    assert "1/(2 · groups) of ε each" in releases
    for n in (1, 2, len(GROUPS)):
        assert _declared_shares("key_groups", GROUPS[:n]) == [Fraction(1, 2 * n)] * (2 * n)


def _calendar_shares() -> dict[str, dict[str, Fraction]]:
    """Each pack's members and their shares, as the monitoring calendar's table states them."""
    text = DOC.read_text(encoding="utf-8").split("## The monitoring calendar")[1]
    rows = re.findall(r"^\| `(\w+)` / [^|]+\|[^|]+\|[^|]+\|[^|]+\| (.+?) \|$", text, flags=re.MULTILINE)
    return {
        pack: {name: Fraction(int(pct), 100) for name, pct in re.findall(r"`(\w+)` (\d+)%", members)}
        for pack, members in rows
    }


def test_the_documented_pack_splits_are_the_declared_ones() -> None:
    documented = _calendar_shares()
    assert set(documented) == set(PACKS)
    for name, pack in PACKS.items():
        whole = sum((m.weight for m in pack.members), Fraction(0))
        assert {m.indicator.name: m.weight / whole for m in pack.members} == documented[name], name


def test_the_epsilons_quoted_for_the_pack_are_the_pack_s() -> None:
    """`(ε X in the pack: a ..., b ...)` in an indicator's expected error: X is its share of the year-end
    pack at ε = 1, and a, b are the epsilons of its releases in the order declared."""
    members = PACKS["year_end"].params(period="2025-12", epsilon=Decimal(1), analyst="ana", groups=GROUPS)
    quoted = 0
    for template, params in members:
        error = _bullet(_sections()[template.name], "Expected error")
        epsilons = [q.spec.epsilon for q in template.queries(params, CONFIG)]
        match = re.search(r"ε (?:= 1 pack, )?([\d.]+) (?:in the pack|to this indicator)(?:: ([^)]*))?", error)
        if match is None:
            continue
        quoted += 1
        assert Decimal(match.group(1)) == params.epsilon, (template.name, match.group(0))
        if match.group(2):
            numbers = [Decimal(x) for x in re.findall(r"\d+\.\d+", match.group(2))]
            if "per release" in match.group(2):
                assert set(epsilons) == set(numbers), (template.name, match.group(0))
            else:
                assert numbers == epsilons, (template.name, match.group(0))
    assert quoted >= 4  # income_bands, coverage, key_groups, early_warning quote their pack epsilon


def test_inside_a_release_epsilon_is_split_equally_as_documented() -> None:
    """ "Count and sum take half the release's ε each" (income_distribution) and the general rule."""
    releases = _bullet(_sections()["income_distribution"], "Releases")
    assert "Count and sum take half the release's ε each" in releases
    spec = ReleaseSpec(
        groups=(),
        measure="v",
        lower=0,
        upper=100,
        statistics=(Lorenz(edges=(10, 50)),),
        epsilon=Decimal("0.3"),
    )
    shares = prepare_release(spec).quantities
    assert {name: q.share for name, q in shares.items()} == {
        "lorenz_count": Decimal("0.15"),
        "lorenz_sum": Decimal("0.15"),
    }
