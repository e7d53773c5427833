"""The key groups ("X" groups) of the county's monitoring plan, for the synthetic county's catalog.

Data only: each entry is what an operator would `POST /v1/groups` (or `fedgate groups add FILE.json`).
`gateway.localfed.register_everything` registers them, so the demo and the end-to-end tests have them;
a real deployment registers its own, named after its own catalog.

"Floating population" (`migrant`) needs care: a household query's population is the household register,
and persons who are not in the register belong to no household, so the group cannot mean people living
here without registration. It means registered residents whose resident ID was issued outside the county
(the ID's first six digits, a public code list), i.e. in-migrants, including those who moved their
registration here long ago.
"""

from __future__ import annotations

from aggregation.query import MemberGroup
from connectors.synth.geography import COUNTY_CODE, REGION_CODES
from gateway.api.schemas import KeyGroupIn

__all__ = ["OUTSIDE_THE_COUNTY", "SEED_GROUPS"]

OUTSIDE_THE_COUNTY: tuple[str, ...] = tuple(sorted(code for code in REGION_CODES if code != COUNTY_CODE))
"""Every code of the published region code list but the county's own."""

SEED_GROUPS: tuple[KeyGroupIn, ...] = (
    KeyGroupIn(
        definition=MemberGroup(name="dibao", measure="civil.assistance.assistance_income", at_least=1),
        title="Households receiving minimum-livelihood assistance (dibao)",
        title_zh="低保户（有成员领取最低生活保障金）",
        description=(
            "At least one registered member was paid minimum-livelihood assistance (civil affairs, "
            "assistance_income of at least 1 yuan) in the query period."
        ),
    ),
    KeyGroupIn(
        definition=MemberGroup(
            name="fishery", dimension="social.occupations.occupation_medium", values=("5-04",)
        ),
        title="Households with a fishery worker",
        title_zh="有渔业生产人员的家庭户",
        description=(
            "At least one registered member's occupation with social insurance is 5-04, fishery production "
            "workers (national occupation classification)."
        ),
    ),
    KeyGroupIn(
        definition=MemberGroup(name="pensioner", measure="social.pensions.pension_income", at_least=1),
        title="Households with a pensioner",
        title_zh="有领取养老金成员的家庭户",
        description=(
            "At least one registered member was paid a basic pension (employees' or residents' scheme; "
            "pension_income of at least 1 yuan) in the query period."
        ),
    ),
    KeyGroupIn(
        definition=MemberGroup(
            name="no_wage_earner", measure="tax.wages.wage_income", at_least=1, negate=True
        ),
        title="Households with no wage earner",
        title_zh="无工资收入成员的家庭户",
        description=(
            "No registered member had wages withheld by an employer (tax, wage_income of at least 1 yuan) "
            "in the query period; business income and pensions do not count as wages."
        ),
    ),
    KeyGroupIn(
        definition=MemberGroup(
            name="migrant", dimension="register.persons.region_code", values=OUTSIDE_THE_COUNTY
        ),
        title="Floating-population households: a member whose ID was issued outside the county (in-migrants)",
        title_zh="有外地迁入人口的家庭户（成员身份证号签发地在本县以外）",
        description=(
            "At least one registered member's resident ID was issued outside the county (its region code "
            "is any code of the published region code list but the county's own, 330922). Floating "
            "population here means registered residents whose ID was issued elsewhere (in-migrants, "
            "including long-settled ones): persons who are not in the household register belong to no "
            "household and cannot be counted by a household query; person queries reach them."
        ),
    ),
)
