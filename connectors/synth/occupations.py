"""Occupation categories (2022 national occupation classification) and who in the county holds them.

Only the eight major categories and the medium categories an island county needs are listed; the
public code lists written for the connectors are exactly these. The mixes below are invented but shaped
like Shengsi's economy: fishing and its moratorium, seafood processing, port work and island tourism.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["MAJOR", "MEDIUM", "WAGE_FACTOR", "draw_occupations"]

MAJOR: dict[str, str] = {
    "1": "党的机关、国家机关、群众团体和社会组织、企事业单位负责人",
    "2": "专业技术人员",
    "3": "办事人员和有关人员",
    "4": "社会生产服务和生活服务人员",
    "5": "农、林、牧、渔业生产及辅助人员",
    "6": "生产制造及有关人员",
    "7": "军人",
    "8": "不便分类的其他从业人员",
}

MEDIUM: dict[str, str] = {
    "1-02": "国家机关负责人",
    "1-05": "基层群众自治组织负责人",
    "1-06": "企事业单位负责人",
    "2-02": "工程技术人员",
    "2-04": "飞机和船舶技术人员",
    "2-05": "卫生专业技术人员",
    "2-06": "经济和金融专业人员",
    "2-08": "教学人员",
    "3-01": "办事人员",
    "3-02": "安全和消防人员",
    "4-01": "批发与零售服务人员",
    "4-02": "交通运输、仓储物流和邮政业服务人员",
    "4-03": "住宿和餐饮服务人员",
    "4-05": "金融服务人员",
    "4-07": "租赁和商务服务人员",
    "4-09": "水利、环境和公共设施管理服务人员",
    "4-10": "居民服务人员",
    "4-12": "修理及制作服务人员",
    "4-14": "健康、体育和休闲服务人员",
    "5-01": "农业生产人员",
    "5-04": "渔业生产人员",
    "5-05": "农林牧渔业生产辅助人员",
    "6-01": "农副产品加工人员",
    "6-02": "食品、饮料生产加工人员",
    "6-23": "铁路、船舶、航空设备制造人员",
    "6-29": "建筑施工人员",
    "6-30": "运输设备和通用工程机械操作人员及有关人员",
    "8-00": "不便分类的其他从业人员",
}

# Relative wage level of a medium category (1.0 = an office clerk).
WAGE_FACTOR: dict[str, float] = {
    "1-02": 1.9,
    "1-05": 1.2,
    "1-06": 2.2,
    "2-02": 1.5,
    "2-04": 1.7,
    "2-05": 1.5,
    "2-06": 1.6,
    "2-08": 1.4,
    "3-01": 1.0,
    "3-02": 1.0,
    "4-01": 0.75,
    "4-02": 0.95,
    "4-03": 0.75,
    "4-05": 1.5,
    "4-07": 1.0,
    "4-09": 0.7,
    "4-10": 0.7,
    "4-12": 0.85,
    "4-14": 0.85,
    "5-01": 0.55,
    "5-04": 1.15,
    "5-05": 0.8,
    "6-01": 0.75,
    "6-02": 0.8,
    "6-23": 1.05,
    "6-29": 0.95,
    "6-30": 1.0,
    "8-00": 0.7,
}

# Occupation mixes of the groups that hold a job; weights need not sum to one.
_MIXES: dict[str, dict[str, float]] = {
    "urban_employee": {
        "1-02": 2,
        "1-05": 1,
        "1-06": 4,
        "2-02": 5,
        "2-04": 3,
        "2-05": 5,
        "2-06": 3,
        "2-08": 6,
        "3-01": 12,
        "3-02": 2,
        "4-01": 9,
        "4-02": 9,
        "4-03": 8,
        "4-05": 3,
        "4-07": 3,
        "4-09": 2,
        "4-10": 3,
        "4-12": 2,
        "4-14": 2,
        "5-04": 6,
        "5-05": 2,
        "6-02": 5,
        "6-23": 3,
        "6-29": 5,
        "6-30": 3,
        "8-00": 2,
    },
    "rural_employee": {
        "1-05": 2,
        "1-06": 1,
        "2-05": 1,
        "2-08": 2,
        "3-01": 4,
        "4-01": 6,
        "4-02": 7,
        "4-03": 10,
        "4-09": 2,
        "4-10": 2,
        "5-01": 4,
        "5-04": 28,
        "5-05": 5,
        "6-01": 3,
        "6-02": 10,
        "6-29": 8,
        "6-30": 3,
        "8-00": 2,
    },
    "self_employed": {
        "4-01": 30,
        "4-03": 28,
        "4-10": 8,
        "4-12": 5,
        "4-14": 3,
        "5-04": 22,
        "5-01": 2,
        "6-02": 2,
    },
    "floating": {"5-04": 40, "6-29": 20, "6-02": 15, "4-03": 9, "4-02": 8, "6-23": 5, "8-00": 3},
}


def draw_occupations(rng: np.random.Generator, group: str, n: int) -> npt.NDArray[np.str_]:
    """Medium occupation codes for `n` people of one group."""
    mix = _MIXES[group]
    codes = np.array(list(mix))
    p = np.array(list(mix.values()), dtype=float)
    return codes[rng.choice(len(codes), size=n, p=p / p.sum())]
