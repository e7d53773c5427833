"""The synthetic island county's geography: townships, villages and communities, region codes.

The county is modelled on Shengsi (330922, Zhoushan): a county-seat subdistrict and town, two fishing
towns and four small island townships. The towns and townships carry Shengsi's names (the subdistrict is
invented); the village and community names and codes below them are invented.

Codes follow the statistical division scheme: twelve digits, county (6) + township (3) + village
committee (3), where residents' committees (社区) take 001-199 and village committees (村) 200 and up,
and every village carries one of the seven NBS urban-rural codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "COUNTY_CODE",
    "COUNTY_NAME",
    "REGION_CODES",
    "URBAN_RURAL",
    "Geography",
    "build_geography",
    "is_urban",
]

COUNTY_CODE = "330922"
COUNTY_NAME = "嵊泗县"

# NBS urban-rural classification codes (统计用城乡划分代码): 1xx urban, 2xx rural.
URBAN_RURAL: dict[str, str] = {
    "111": "主城区",
    "112": "城乡结合区",
    "121": "镇中心区",
    "122": "镇乡结合区",
    "123": "特殊区域",
    "210": "乡中心区",
    "220": "村庄",
}

# Administrative division codes that appear in the resident numbers of the county's people: its own,
# the rest of Zhoushan, places in Zhejiang people moved from, and the home counties of migrant workers.
REGION_CODES: dict[str, str] = {
    "330922": "浙江省舟山市嵊泗县",
    "330921": "浙江省舟山市岱山县",
    "330902": "浙江省舟山市定海区",
    "330903": "浙江省舟山市普陀区",
    "330102": "浙江省杭州市上城区",
    "330106": "浙江省杭州市西湖区",
    "330203": "浙江省宁波市海曙区",
    "330212": "浙江省宁波市鄞州区",
    "330302": "浙江省温州市鹿城区",
    "330381": "浙江省温州市瑞安市",
    "330402": "浙江省嘉兴市南湖区",
    "330602": "浙江省绍兴市越城区",
    "330702": "浙江省金华市婺城区",
    "331002": "浙江省台州市椒江区",
    "331082": "浙江省台州市临海市",
    "340102": "安徽省合肥市瑶海区",
    "341202": "安徽省阜阳市颍州区",
    "350102": "福建省福州市鼓楼区",
    "360702": "江西省赣州市章贡区",
    "410102": "河南省郑州市中原区",
    "411302": "河南省南阳市宛城区",
    "420102": "湖北省武汉市江岸区",
    "430102": "湖南省长沙市芙蓉区",
    "510104": "四川省成都市锦江区",
    "511302": "四川省南充市顺庆区",
    "520102": "贵州省贵阳市南明区",
}

# (code, name, share of the county's population, share of its villages that are urban communities,
#  urban-rural codes used for its communities, for its villages)
_TOWNSHIPS: tuple[tuple[str, str, float, float, tuple[str, ...], tuple[str, ...]], ...] = (
    ("001", "城东街道", 0.17, 1.00, ("111", "111", "112"), ("220",)),
    ("100", "菜园镇", 0.27, 0.65, ("111", "112"), ("220", "220", "210")),
    ("101", "嵊山镇", 0.12, 0.40, ("121", "122"), ("220", "220", "210")),
    ("102", "洋山镇", 0.14, 0.45, ("121", "122", "123"), ("220", "220", "210")),
    ("200", "五龙乡", 0.08, 0.00, ("122",), ("210", "220", "220")),
    ("201", "黄龙乡", 0.08, 0.00, ("122",), ("210", "220", "220")),
    ("202", "枸杞乡", 0.08, 0.00, ("122",), ("210", "220", "220")),
    ("203", "花鸟乡", 0.06, 0.00, ("122",), ("210", "220", "220")),
)

# Share of the registered population living in urban-coded villages; with Zhoushan's urban and rural
# per-capita incomes (about 72,100 and 45,924 yuan) it reproduces the city-wide 63,848.
URBAN_POPULATION_SHARE = 0.68

PERSONS_PER_VILLAGE = 700
MIN_VILLAGES = 10
# Past this many villages the invented names and the 3-digit village codes of the largest township run
# out; bigger populations (a city-sized benchmark) get bigger villages instead.
MAX_VILLAGES = 640

_NAME_HEADS = "东西南北金银青沙港渔海石峰田湾礁龙凤平安兴和新长太清黄白大小前后里外上下"
_NAME_TAILS = "岙沙港湾礁山岭浦头门峰园塘河田嘴滩岗"


def is_urban(urban_rural_code: str) -> bool:
    """Urban-rural codes starting with 1 are urban."""
    return urban_rural_code.startswith("1")


@dataclass(frozen=True)
class Geography:
    """Townships and villages, with each village's share of the registered population."""

    township_codes: tuple[str, ...]
    township_names: tuple[str, ...]
    village_codes: npt.NDArray[np.str_]
    village_names: npt.NDArray[np.str_]
    village_township: npt.NDArray[np.str_]
    village_urban_rural: npt.NDArray[np.str_]
    village_weight: npt.NDArray[np.float64]

    @property
    def village_is_urban(self) -> npt.NDArray[np.bool_]:
        return np.char.startswith(self.village_urban_rural.astype(str), "1")

    def __len__(self) -> int:
        return len(self.village_codes)


def _allocate(total: int, weights: list[float], minimum: int) -> list[int]:
    """Largest-remainder allocation of `total` items, at least `minimum` each."""
    spare = total - minimum * len(weights)
    shares = np.array(weights) / sum(weights) * spare
    counts = np.floor(shares).astype(int)
    order = np.argsort(-(shares - counts), kind="stable")
    counts[order[: spare - int(counts.sum())]] += 1
    return [minimum + int(c) for c in counts]


def build_geography(rng: np.random.Generator, persons: int) -> Geography:
    """Townships and about one village or community per 700 registered persons (at least 10)."""
    n_villages = min(MAX_VILLAGES, max(MIN_VILLAGES, round(persons / PERSONS_PER_VILLAGE)))
    per_township = _allocate(n_villages, [t[2] for t in _TOWNSHIPS], minimum=1)
    pairs = [h + t for h in _NAME_HEADS for t in _NAME_TAILS]
    picked = rng.choice(len(pairs), size=n_villages, replace=False)

    codes: list[str] = []
    names: list[str] = []
    townships: list[str] = []
    urban_rural: list[str] = []
    weights: list[float] = []
    for (code, _name, share, urban_share, urban_codes, rural_codes), count in zip(
        _TOWNSHIPS, per_township, strict=True
    ):
        township = COUNTY_CODE + code
        n_urban = round(count * urban_share)
        village_weights = rng.lognormal(0.0, 0.45, size=count)
        village_weights *= share / village_weights.sum()
        for i in range(count):
            community = i < n_urban
            serial = 1 + i if community else 200 + (i - n_urban) + 1
            kinds = urban_codes if community else rural_codes
            codes.append(f"{township}{serial:03d}")
            names.append(pairs[int(picked[len(names)])] + ("社区" if community else "村"))
            townships.append(township)
            # The first community (or village) of a township is its centre.
            urban_rural.append(kinds[0] if i in (0, n_urban) else kinds[int(rng.integers(len(kinds)))])
            weights.append(float(village_weights[i]))

    ur = np.array(urban_rural)
    w = np.array(weights)
    urban = np.char.startswith(ur, "1")
    # Rescale so the urban share of the population is Zhoushan's; a county too small to have both kinds
    # of village keeps what it has.
    if urban.any() and (~urban).any():
        w[urban] *= URBAN_POPULATION_SHARE / w[urban].sum()
        w[~urban] *= (1 - URBAN_POPULATION_SHARE) / w[~urban].sum()
    w /= w.sum()
    return Geography(
        township_codes=tuple(COUNTY_CODE + t[0] for t in _TOWNSHIPS),
        township_names=tuple(t[1] for t in _TOWNSHIPS),
        village_codes=np.array(codes),
        village_names=np.array(names),
        village_township=np.array(townships),
        village_urban_rural=ur,
        village_weight=w,
    )
