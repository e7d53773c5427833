"""The synthetic county's monitoring configuration, written as its operator would write it.

`fedgate synth` writes `monitoring.yaml` beside the connector configurations: the income proxy's terms
and signs, the clamps, bands and edges, the register's village and urban-rural dimensions, the coverage
datasets, the early warning's drop share and the five key groups of the county's plan, all under the
names of the county's layout. The gateway loads it (`FEDGATE_MONITORING_CONFIG_FILE` or
`fedgate indicators configure`); `fedgate indicators check --config` checks it against the catalog.

The values are the truth file's own copy of the plan (`connectors.synth.truth`), so the truth and the
gateway's figures are computed from one definition; tests/test_pack_truth.py checks the file the
gateway reads against that copy. The key groups' titles live here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from connectors.synth import truth
from connectors.synth.layout import STANDARD, Layout

__all__ = ["KEY_GROUP_TEXTS", "URBAN_RURAL", "VILLAGE", "monitoring_config", "write_monitoring_config"]

VILLAGE = "register.persons.village"
URBAN_RURAL = "register.persons.urban_rural"

# Household-income edges: fine where most households are (quantiles are read linearly inside a bin, so
# the bin width there is their resolution), coarse in the thin tail; per-capita alike.
HOUSEHOLD_EDGES: list[Any] = [
    {"from": 0, "to": 60_000, "step": 2_000},
    {"from": 60_000, "to": 300_000, "step": 5_000},
    {"from": 300_000, "to": 600_000, "step": 25_000},
    {"from": 600_000, "to": 1_000_000, "step": 100_000},
    1_000_000,
    1_250_000,
    1_500_000,
]
PER_CAPITA_EDGES: list[Any] = [
    {"from": 0, "to": 40_000, "step": 1_000},
    {"from": 40_000, "to": 150_000, "step": 2_500},
    {"from": 150_000, "to": 300_000, "step": 12_500},
    300_000,
    400_000,
]

KEY_GROUP_TEXTS: dict[str, tuple[str, str, str]] = {
    "dibao": (
        "Households receiving minimum-livelihood assistance (dibao)",
        "低保户（有成员领取最低生活保障金）",
        "At least one registered member was paid minimum-livelihood assistance (civil affairs, at least "
        "1 yuan) in the query period.",
    ),
    "fishery": (
        "Households with a fishery worker",
        "有渔业生产人员的家庭户",
        "At least one registered member's occupation with social insurance is 5-04, fishery production "
        "workers (national occupation classification).",
    ),
    "pensioner": (
        "Households with a pensioner",
        "有领取养老金成员的家庭户",
        "At least one registered member was paid a basic pension (employees' or residents' scheme; at "
        "least 1 yuan) in the query period.",
    ),
    "no_wage_earner": (
        "Households with no wage earner",
        "无工资收入成员的家庭户",
        "No registered member had wages withheld by an employer (tax, at least 1 yuan) in the query "
        "period; business income and pensions do not count as wages.",
    ),
    "migrant": (
        "Floating-population households: a member whose ID was issued outside the county (in-migrants)",
        "有外地迁入人口的家庭户（成员身份证号签发地在本县以外）",
        "At least one registered member's resident ID was issued outside the county (its region code is "
        "any code of the published region code list but the county's own, 330922). Floating population "
        "here means registered residents whose ID was issued elsewhere (in-migrants, including "
        "long-settled ones): persons who are not in the household register belong to no household and "
        "cannot be counted by a household query; person queries reach them.",
    ),
}


def _group(group: truth.KeyGroup, layout: Layout) -> dict[str, Any]:
    definition: dict[str, Any] = {"name": group.name}
    if group.measure is not None:
        definition.update(measure=layout.field_ref(group.measure), at_least=group.at_least)
    else:
        definition.update(dimension=layout.field_ref(group.dimension or ""), values=list(group.values or ()))
    if group.negate:
        definition["negate"] = True
    title, title_zh, description = KEY_GROUP_TEXTS[group.name]
    return {"definition": definition, "title": title, "title_zh": title_zh, "description": description}


def monitoring_config(layout: Layout = STANDARD) -> dict[str, Any]:
    """The monitoring configuration document of the synthetic county under `layout`'s names."""
    return {
        "version": "fedgate-monitoring/1",
        "description": f"Synthetic demo county ({layout.name} layout): the county's household income "
        "monitoring plan.",
        "income_terms": [
            {
                "dataset": layout.dataset(dataset),
                "measure": layout.field_ref(f"{dataset}.{measure}").rpartition(".")[2],
                "sign": sign,
            }
            for dataset, measure, sign in truth.INCOME_TERMS
        ],
        "income_lower": truth.INCOME_LOWER,
        "income_upper": truth.INCOME_UPPER,
        "income_sum_upper": truth.INCOME_SUM_UPPER,
        "distribution_lower": truth.DISTRIBUTION_LOWER,
        "distribution_upper": truth.DISTRIBUTION_UPPER,
        "per_capita_lower": truth.PER_CAPITA_LOWER,
        "per_capita_upper": truth.PER_CAPITA_UPPER,
        "village": layout.field_ref(VILLAGE),
        "urban_rural": layout.field_ref(URBAN_RURAL),
        "urban_prefixes": ["1"],
        "size_cap": truth.SIZE_CAP,
        "coverage_datasets": [layout.dataset(d) for d in truth.COVERAGE_DATASETS],
        "bands": {band: list(ends) for band, ends in truth.PACK_BANDS.items()},
        "household_edges": HOUSEHOLD_EDGES,
        "per_capita_edges": PER_CAPITA_EDGES,
        "key_groups": [_group(g, layout) for g in truth.KEY_GROUPS],
        "drop_share": str(truth.DROP_SHARE),
    }


def write_monitoring_config(path: Path, layout: Layout = STANDARD) -> Path:
    header = (
        f"# Monitoring configuration of the synthetic demo county ({layout.name} layout, generated).\n"
        "# Check it against the catalog: fedgate indicators check --config FILE\n"
        "# 监测配置（合成演示县）：fedgate indicators check --config FILE 对照目录检查\n"
    )
    doc = yaml.safe_dump(monitoring_config(layout), sort_keys=False, allow_unicode=True)
    path.write_text(header + doc, encoding="utf-8")
    return path
