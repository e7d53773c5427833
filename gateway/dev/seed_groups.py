"""The key groups ("X" groups) of the synthetic county's monitoring plan, as registrations.

They are read from the county's own monitoring configuration (`connectors.synth.monitoring`, the file
`fedgate synth` writes as `monitoring.yaml`), so the groups a demo registers and the groups its monthly
pack measures are one definition. Each entry is what an operator would `POST /v1/groups`
(`fedgate groups add FILE.json`); a real deployment's groups come from its own configuration.

"Floating population" (`migrant`) needs care: a household query's population is the household register,
and persons who are not in the register belong to no household, so the group cannot mean people living
here without registration. It means registered residents whose resident ID was issued outside the county
(the ID's first six digits, a public code list), i.e. in-migrants, including those who moved their
registration here long ago.
"""

from __future__ import annotations

from aggregation.indicators.config_file import parse_monitoring_config
from aggregation.indicators.model import KeyGroupDecl, MonitoringConfig
from connectors.synth.geography import COUNTY_CODE, REGION_CODES
from connectors.synth.layout import STANDARD, Layout
from connectors.synth.monitoring import monitoring_config
from gateway.api.schemas import KeyGroupIn

__all__ = ["OUTSIDE_THE_COUNTY", "SEED_GROUPS", "registrations", "synthetic_config"]

OUTSIDE_THE_COUNTY: tuple[str, ...] = tuple(sorted(code for code in REGION_CODES if code != COUNTY_CODE))
"""Every code of the published region code list but the county's own."""


def synthetic_config(layout: Layout = STANDARD) -> MonitoringConfig:
    """The synthetic county's monitoring configuration under `layout`, as the gateway reads it."""
    return parse_monitoring_config(monitoring_config(layout), source=f"the synthetic county ({layout.name})")


def registrations(groups: tuple[KeyGroupDecl, ...]) -> tuple[KeyGroupIn, ...]:
    """A configuration's key groups as registrations."""
    return tuple(
        KeyGroupIn(definition=g.definition, title=g.title, title_zh=g.title_zh, description=g.description)
        for g in groups
    )


SEED_GROUPS: tuple[KeyGroupIn, ...] = registrations(synthetic_config().key_groups)
