"""Accuracy: released household band counts fall within their stated 95% intervals of the as-linked truth
as often as the noise distribution says they should: not less (intervals too narrow) and not much more
(intervals uselessly wide). The truth is the exact frame a correct federation builds, itself checked
against the county's truth file."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from county_fixture import BAND_EDGES, headline_query, truth
from test_aggregation import CONNECTORS, _run

from aggregation.executor import VALUE
from aggregation.planner import plan_query
from connectors.config import load_config
from connectors.service import build_service
from connectors.synth import generate_county
from gateway.runner import release_spec
from privacy.release import prepare_release
from privacy.vocabulary import OTHER, histogram_bin_labels

RELEASES = 30
EPSILON = "0.1"


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("accuracy")
    generate_county(out, persons=3_000, seed=21)
    return out


def _exact_counts(frame: pl.DataFrame, group: str) -> dict[tuple[str | None, str], int]:
    labels = histogram_bin_labels(BAND_EDGES)
    edges = (-math.inf, *BAND_EDGES, math.inf)
    counts: dict[tuple[str | None, str], int] = {}
    for key, value in frame.select(group, VALUE).iter_rows():
        for i, label in enumerate(labels):
            if edges[i] <= value < edges[i + 1]:
                counts[(key, label)] = counts.get((key, label), 0) + 1
    return counts


def _discrete_laplace_coverage(scale: float, half_width: int) -> float:
    q = math.exp(-1 / scale)
    return 1 - 2 * q ** (half_width + 1) / (1 + q)


def test_band_counts_are_covered_as_often_as_promised(county: Path) -> None:
    services = {n: build_service(load_config(county / "connectors" / f"{n}.yaml")) for n in CONNECTORS}
    catalog = {n: s.schema for n, s in services.items()}
    plan = plan_query(headline_query(epsilon=EPSILON), catalog)
    frame = _run(plan, services)
    assert frame.height == truth(county)["as_linked"]["household_count"]
    group = plan.groups[0].ref
    exact = _exact_counts(frame, group)
    spec = release_spec(plan)
    assert spec.epsilon == Decimal(EPSILON)
    hits = total = 0
    widths = set()
    scale = 0.0
    for _ in range(RELEASES):
        prepared = prepare_release(spec)
        scale = prepared.scales["histogram"]
        result = prepared.run(frame)
        for cell in result.cells:
            if cell.statistic != "histogram":
                continue
            key = cell.groups[group]
            true = exact.get((OTHER if key is None else key, cell.bin or ""), 0)
            assert cell.low is not None and cell.high is not None and cell.value is not None
            hits += cell.low <= true <= cell.high
            total += 1
            if cell.low > 0:  # an interval reaching below 0 is shown clamped at 0, like the value
                widths.add(int(cell.high) - int(cell.value))
    assert scale == pytest.approx(1 / float(EPSILON), rel=1e-6)
    assert len(widths) == 1  # one analytic half-width for every direct cell
    half_width = widths.pop()
    promised = _discrete_laplace_coverage(scale, half_width)
    assert 0.95 <= promised < _discrete_laplace_coverage(scale, half_width - 1) + 0.05
    assert _discrete_laplace_coverage(scale, half_width - 1) < 0.95  # the narrowest interval that keeps 95%
    rate = hits / total
    sd = math.sqrt(promised * (1 - promised) / total)
    assert abs(rate - promised) < 4 * sd, (rate, promised, total)
