"""Identity numbers: validation, normalisation and coarse attributes.

Two kinds are supported:

* resident identity numbers (公民身份号码, GB 11643-1999), 18 characters, or the legacy 15-digit form
  which is widened to 18 by inserting the century "19" and computing the check digit;
* unified social credit codes (统一社会信用代码, GB 32100-2015), 18 characters.

`normalize` is the one entry point for a single value and `normalize_many` the fast path for a column;
both raise or report `InvalidIdentifier` with a reason that never contains the value itself, because
reasons end up in logs and extraction reports.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from connectors.errors import InvalidIdentifier

__all__ = [
    "BIRTH_YEAR_BANDS",
    "SEX_CODES",
    "IdKind",
    "NormalizedBatch",
    "ResidentAttributes",
    "credit_code_check_char",
    "make_credit_code",
    "make_resident_id",
    "normalize",
    "normalize_many",
    "resident_attributes",
    "resident_check_digit",
    "to_legacy_15",
]


class IdKind(StrEnum):
    """The identifier kinds a connector can normalise; the value is the name used in configuration."""

    RESIDENT_ID = "resident_id"
    CREDIT_CODE = "credit_code"


# GB/T 2261.1 sex codes: 1 male, 2 female.
SEX_CODES: tuple[str, ...] = ("1", "2")

# GB 11643-1999 sets no lower bound on the birth year and its own worked example (440524188001010014)
# was born in 1880, so years from 1800 are accepted. Births before 1900 share one century-wide band so
# the attribute domain stays small; everyone else gets a decade. A valid number is never born in the
# future, so the decades run to the end of the century: the public domain stays fixed while every
# valid number has its band (tests fail once the current year passes the last band).
_MIN_BIRTH_YEAR = 1800
_OLD_BAND = "1800-1899"
LAST_BAND_YEAR = 2099
BIRTH_YEAR_BANDS: tuple[str, ...] = (
    _OLD_BAND,
    *(f"{y}-{y + 9}" for y in range(1900, LAST_BAND_YEAR + 1, 10)),
)

# Province-level codes of GB/T 2260 (first two digits of an administrative division code).
# North, north-east, east, south-central, south-west, north-west, then Taiwan, Hong Kong and Macao.
_PROVINCE_RANGES = ((11, 15), (21, 23), (31, 37), (41, 46), (50, 54), (61, 65), (71, 71), (81, 82))
_PROVINCES = frozenset(code for low, high in _PROVINCE_RANGES for code in range(low, high + 1))
# Nationally registered organisations (ministries, national associations) carry the country code.
_NATIONAL_REGION = "100000"

_DIGITS = frozenset("0123456789")

# GB 11643-1999 / ISO 7064 MOD 11-2.
_RESIDENT_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RESIDENT_CHECK = "10X98765432"

# GB 32100-2015: 31 characters, no I, O, S, V, Z (too easily misread as 1, 0, 5, U, 2).
_CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_VALUE = {c: i for i, c in enumerate(_CREDIT_ALPHABET)}
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

# Registration authority (position 1) -> organisation types (position 2). The 2015 text lists only
# 1, 5, 9 and Y; the code table maintained under the standard since then adds the other authorities
# (foreign affairs, justice, culture, tourism, religion, trade unions, the military staffing office
# and agriculture), and codes from them are in circulation, so refusing them would drop real rows.
_CREDIT_ORG_TYPES: dict[str, frozenset[str]] = {
    "1": frozenset("1239"),  # 机构编制: 机关, 事业单位, 编办直管群众团体, 其他
    "2": frozenset("19"),  # 外交: 外国常驻新闻机构, 其他
    "3": frozenset("123459"),  # 司法行政: 律所, 公证处, 基层法律服务所, 司法鉴定机构, 仲裁委员会, 其他
    "4": frozenset("19"),  # 文化: 外国在华文化中心, 其他
    "5": frozenset("1239"),  # 民政: 社会团体, 民办非企业单位, 基金会, 其他
    "6": frozenset("129"),  # 旅游: 外国旅游部门代表机构, 港澳台旅游部门代表机构, 其他
    "7": frozenset("129"),  # 宗教: 宗教活动场所, 宗教院校, 其他
    "8": frozenset("19"),  # 工会: 基层工会, 其他
    "9": frozenset("123"),  # 工商 (市场监管): 企业, 个体工商户, 农民专业合作社
    "A": frozenset("19"),  # 中央军委改革和编制办公室: 军队事业单位, 其他
    "N": frozenset("1239"),  # 农业: 组级, 村级, 乡镇级集体经济组织, 其他
    "Y": frozenset("1"),  # 其他
}

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

_REASON_REGION_SHAPE = "region code must be 6 digits not starting with 0"
_REASON_REGION_PROVINCE = "region code does not start with a province-level code"
_REASON_DATE_UNREAL = "birth date is not a real date"
_REASON_DATE_EARLY = f"birth year is before {_MIN_BIRTH_YEAR}"
_REASON_DATE_FUTURE = "birth date is in the future"
_REASON_CHECK_DIGIT = "check digit mismatch"
_REASON_AUTHORITY = "registration authority code is not recognised"
_REASON_ORG_TYPE = "organisation type code is not valid for the registration authority"
_REASON_CHECK_CHAR = "check character mismatch"


def _kind(kind: IdKind | str) -> IdKind:
    try:
        return IdKind(kind)
    except ValueError:
        expected = ", ".join(k.value for k in IdKind)
        raise ValueError(f"unknown identifier kind {str(kind)!r}; expected one of {expected}") from None


def _bad_position(text: str, allowed: frozenset[str] | dict[str, int]) -> int | None:
    for i, c in enumerate(text):
        if c not in allowed:
            return i + 1
    return None


def _char_reason(position: int) -> str:
    return f"character at position {position} is not allowed"


# --- resident identity numbers ---------------------------------------------------------------------


def _resident_region_reason(region: str) -> str | None:
    if len(region) != 6 or _bad_position(region, _DIGITS) is not None or region[0] == "0":
        return _REASON_REGION_SHAPE
    if int(region[:2]) not in _PROVINCES:
        return _REASON_REGION_PROVINCE
    return None


def _birth_reason(yyyymmdd: str, today: datetime.date) -> str | None:
    try:
        birth = datetime.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        return _REASON_DATE_UNREAL
    if birth.year < _MIN_BIRTH_YEAR:
        return _REASON_DATE_EARLY
    if birth > today:
        return _REASON_DATE_FUTURE
    return None


def _resident_sum(first17: str) -> int:
    return sum((ord(c) - 48) * w for c, w in zip(first17, _RESIDENT_WEIGHTS, strict=True))


def resident_check_digit(first17: str) -> str:
    """The GB 11643 check character ("0"-"9" or "X") for the first 17 digits of a resident number."""
    if len(first17) != 17 or _bad_position(first17, _DIGITS) is not None:
        raise ValueError("a resident number body is exactly 17 ASCII digits")
    return _RESIDENT_CHECK[_resident_sum(first17) % 11]


def _normalize_resident(raw: str, today: datetime.date) -> tuple[str, bool]:
    """Return the 18-character form and whether the input was a legacy 15-digit number."""
    kind = IdKind.RESIDENT_ID.value
    text = raw.strip()
    legacy = len(text) == 15
    if legacy:
        bad = _bad_position(text, _DIGITS)
        if bad is not None:
            raise InvalidIdentifier(kind, _char_reason(bad))
        first17 = text[:6] + "19" + text[6:]
        text = first17 + _RESIDENT_CHECK[_resident_sum(first17) % 11]
    elif len(text) == 18:
        if text[17] == "x":
            text = text[:17] + "X"
        bad = _bad_position(text[:17], _DIGITS)
        if bad is not None:
            raise InvalidIdentifier(kind, _char_reason(bad))
        if text[17] not in _RESIDENT_CHECK:
            raise InvalidIdentifier(kind, _char_reason(18))
    else:
        raise InvalidIdentifier(kind, f"length {len(text)}, expected 18 or legacy 15")
    reason = _resident_region_reason(text[:6]) or _birth_reason(text[6:14], today)
    if reason is None and text[17] != _RESIDENT_CHECK[_resident_sum(text[:17]) % 11]:
        reason = _REASON_CHECK_DIGIT
    if reason is not None:
        raise InvalidIdentifier(kind, reason)
    return text, legacy


def make_resident_id(region_code: str, birth: datetime.date, sequence: int, male: bool) -> str:
    """Build a valid synthetic resident number.

    `sequence` (0..499) picks the order code; its last digit is odd for men and even for women, so
    the order code is ``2 * sequence + male``.
    """
    reason = _resident_region_reason(region_code)
    if reason is not None:
        raise ValueError(reason)
    if not _MIN_BIRTH_YEAR <= birth.year <= 9999:
        raise ValueError(f"birth year must be between {_MIN_BIRTH_YEAR} and 9999")
    if not 0 <= sequence <= 499:
        raise ValueError("sequence must be between 0 and 499")
    order = 2 * sequence + (1 if male else 0)
    first17 = f"{region_code}{birth.year:04d}{birth.month:02d}{birth.day:02d}{order:03d}"
    return first17 + resident_check_digit(first17)


def to_legacy_15(resident_id: str) -> str:
    """The pre-1999 15-digit form of a resident number (only people born 1900-1999 ever had one)."""
    text, _ = _normalize_resident(resident_id, datetime.date.max)
    if text[6:8] != "19":
        raise ValueError("only resident numbers of people born 1900-1999 have a legacy 15-digit form")
    return text[:6] + text[8:17]


@dataclass(frozen=True)
class ResidentAttributes:
    """Coarse attributes printed in a resident number; the birth date itself is deliberately absent."""

    region_code: str
    sex: str
    birth_year_band: str


def _band(year: int) -> str:
    if year < 1900:
        return _OLD_BAND
    start = year - year % 10
    return f"{start}-{start + 9}"


def resident_attributes(normalized: str) -> ResidentAttributes:
    """Region, sex (GB/T 2261.1 code) and birth-year band of a normalized resident number."""
    text, legacy = _normalize_resident(normalized, datetime.date.today())
    if legacy or text != normalized:
        raise ValueError("resident_attributes expects the output of normalize")
    sex = SEX_CODES[0] if (ord(text[16]) - 48) % 2 == 1 else SEX_CODES[1]
    return ResidentAttributes(region_code=text[:6], sex=sex, birth_year_band=_band(int(text[6:10])))


# --- unified social credit codes -------------------------------------------------------------------


def _credit_region_reason(region: str) -> str | None:
    if len(region) != 6 or _bad_position(region, _DIGITS) is not None or region[0] == "0":
        return _REASON_REGION_SHAPE
    if region != _NATIONAL_REGION and int(region[:2]) not in _PROVINCES:
        return _REASON_REGION_PROVINCE
    return None


def _credit_type_reason(authority: str, org_type: str) -> str | None:
    types = _CREDIT_ORG_TYPES.get(authority)
    if types is None:
        return _REASON_AUTHORITY
    if org_type not in types:
        return _REASON_ORG_TYPE
    return None


def _credit_check(first17: str) -> str:
    total = sum(_CREDIT_VALUE[c] * w for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return _CREDIT_ALPHABET[(31 - total % 31) % 31]


def credit_code_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a credit code."""
    if len(first17) != 17 or _bad_position(first17, _CREDIT_VALUE) is not None:
        raise ValueError(f"a credit code body is exactly 17 characters from {_CREDIT_ALPHABET}")
    return _credit_check(first17)


def _normalize_credit(raw: str) -> str:
    kind = IdKind.CREDIT_CODE.value
    # Only ASCII letters are folded: str.upper() turns some non-ASCII letters into ASCII ones.
    text = raw.strip().translate(_ASCII_UPPER)
    if len(text) != 18:
        raise InvalidIdentifier(kind, f"length {len(text)}, expected 18")
    bad = _bad_position(text, _CREDIT_VALUE)
    if bad is not None:
        raise InvalidIdentifier(kind, _char_reason(bad))
    reason = _credit_type_reason(text[0], text[1]) or _credit_region_reason(text[2:8])
    if reason is None and text[17] != _credit_check(text[:17]):
        reason = _REASON_CHECK_CHAR
    if reason is not None:
        raise InvalidIdentifier(kind, reason)
    return text


def make_credit_code(region_code: str, body: str, authority: str = "9", org_type: str = "1") -> str:
    """Build a valid synthetic credit code from a region code and a 9-character organisation body."""
    reason = _credit_type_reason(authority, org_type) or _credit_region_reason(region_code)
    if reason is not None:
        raise ValueError(reason)
    if len(body) != 9 or _bad_position(body, _CREDIT_VALUE) is not None:
        raise ValueError(f"the organisation body is exactly 9 characters from {_CREDIT_ALPHABET}")
    first17 = authority + org_type + region_code + body
    return first17 + _credit_check(first17)


# --- entry points ----------------------------------------------------------------------------------


def normalize(kind: IdKind | str, raw: str, *, today: datetime.date | None = None) -> str:
    """Validate `raw` as an identifier of `kind` and return its canonical form.

    Surrounding whitespace is removed and letters are upper-cased; legacy 15-digit resident numbers
    are widened to 18. Raises `InvalidIdentifier` (a `ValueError`) with a value-free reason.
    """
    k = _kind(kind)
    if k is IdKind.RESIDENT_ID:
        return _normalize_resident(raw, today or datetime.date.today())[0]
    return _normalize_credit(raw)


@dataclass
class NormalizedBatch:
    """Result of `normalize_many`: canonical values (None where invalid) and what happened on the way."""

    values: list[str | None]
    invalid: int = 0
    legacy: int = 0
    cleaned: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)


_U8 = npt.NDArray[np.uint8]
_Bool = npt.NDArray[np.bool_]

_INVALID = 255


def _value_table(alphabet: str, fold_lower: bool) -> _U8:
    table = np.full(256, _INVALID, dtype=np.uint8)
    for i, c in enumerate(alphabet):
        table[ord(c)] = i
        if fold_lower and c.isalpha():
            table[ord(c.lower())] = i
    return table


# Position 18 of a resident number: "0"-"9", then "X" (or "x") as 10.
_RESIDENT_LAST_TABLE = _value_table("0123456789X", fold_lower=True)
_RESIDENT_EXPECTED = np.array(["0123456789X".index(c) for c in _RESIDENT_CHECK], dtype=np.uint8)
_RESIDENT_WEIGHTS_U16 = np.array(_RESIDENT_WEIGHTS, dtype=np.uint16)
_CREDIT_TABLE = _value_table(_CREDIT_ALPHABET, fold_lower=True)
_CREDIT_WEIGHTS_U16 = np.array(_CREDIT_WEIGHTS, dtype=np.uint16)
_PROVINCE_TABLE = np.zeros(100, dtype=bool)
_PROVINCE_TABLE[sorted(_PROVINCES)] = True
_DAYS_IN_MONTH = np.zeros(100, dtype=np.int32)
_DAYS_IN_MONTH[1:13] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
_CREDIT_TYPE_TABLE = np.zeros((32, 32), dtype=bool)
for _authority, _types in _CREDIT_ORG_TYPES.items():
    for _t in _types:
        _CREDIT_TYPE_TABLE[_CREDIT_VALUE[_authority], _CREDIT_VALUE[_t]] = True


def _ascii_matrix(texts: Sequence[str]) -> tuple[_U8, _Bool]:
    """Stack equal-length (18) strings into an (n, 18) byte matrix; rows that are not ASCII are marked."""
    try:
        joined = "".join(texts).encode("ascii")
        return np.frombuffer(joined, dtype=np.uint8).reshape(len(texts), 18), np.ones(len(texts), bool)
    except UnicodeEncodeError:
        ascii_rows = np.fromiter((t.isascii() for t in texts), dtype=bool, count=len(texts))
        joined = "".join(t if t.isascii() else "\0" * 18 for t in texts).encode("ascii")
        return np.frombuffer(joined, dtype=np.uint8).reshape(len(texts), 18), ascii_rows


def _resident_fast(rows: _U8, today: datetime.date) -> tuple[_Bool, _Bool]:
    """Rows that are valid exactly as written, and which of those end in a lower-case x."""
    # Non-digits wrap around to values above 9; the lookups below clip, so such rows only need masking.
    d = rows[:, :17] - np.uint8(48)
    ok: _Bool = np.all(d < 10, axis=1)
    # An unknown last character maps to 255, which no expected check value equals.
    last = _RESIDENT_LAST_TABLE[rows[:, 17]]
    col = [d[:, j].astype(np.int32) for j in range(14)]
    ok &= np.take(_PROVINCE_TABLE, col[0] * 10 + col[1], mode="clip")
    year = col[6] * 1000 + col[7] * 100 + col[8] * 10 + col[9]
    month = col[10] * 10 + col[11]
    day = col[12] * 10 + col[13]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    days = np.take(_DAYS_IN_MONTH, month, mode="clip") + ((month == 2) & leap)
    ok &= (day >= 1) & (day <= days) & (year >= _MIN_BIRTH_YEAR)
    ok &= year * 10000 + month * 100 + day <= today.year * 10000 + today.month * 100 + today.day
    total = np.einsum("ij,j->i", d, _RESIDENT_WEIGHTS_U16, dtype=np.int32)
    ok &= _RESIDENT_EXPECTED[total % 11] == last
    return ok, ok & (rows[:, 17] == ord("x"))


def _credit_fast(rows: _U8) -> tuple[_Bool, _Bool]:
    """Rows that are valid after ASCII upper-casing, and which of those contained lower-case letters."""
    v = _CREDIT_TABLE[rows]
    ok: _Bool = (v != _INVALID).all(axis=1)
    ok &= _CREDIT_TYPE_TABLE[np.minimum(v[:, 0], 31), np.minimum(v[:, 1], 31)]
    region = v[:, 2:8]
    # A leading 0 needs no test of its own: no province-level code starts with 0.
    ok &= (region < 10).all(axis=1)
    province = region[:, 0].astype(np.int32) * 10 + region[:, 1]
    national = (province == 10) & (region[:, 2:] == 0).all(axis=1)
    ok &= np.take(_PROVINCE_TABLE, province, mode="clip") | national
    total = np.einsum("ij,j->i", v[:, :17], _CREDIT_WEIGHTS_U16, dtype=np.int32)
    ok &= (31 - total % 31) % 31 == v[:, 17]
    lower = ((rows >= ord("a")) & (rows <= ord("z"))).any(axis=1)
    return ok, ok & lower


def normalize_many(
    kind: IdKind | str, raws: Sequence[str], *, today: datetime.date | None = None
) -> NormalizedBatch:
    """`normalize` over a column, with the same results, counting outcomes instead of raising.

    Rows of exactly 18 ASCII characters are checked with numpy in one pass; the rest (legacy numbers,
    padded or odd-length text, and every row that fails the fast check, so that its reason is the
    scalar one) go through the scalar path.
    """
    k = _kind(kind)
    day = today or datetime.date.today()
    n = len(raws)
    values: list[str | None] = list(raws)
    batch = NormalizedBatch(values=values)

    lengths = np.fromiter(map(len, raws), dtype=np.int64, count=n)
    fast_idx = np.flatnonzero(lengths == 18)
    slow: list[int] = np.flatnonzero(lengths != 18).tolist()
    if len(fast_idx):
        texts = raws if len(fast_idx) == n else [raws[i] for i in fast_idx.tolist()]
        rows, ascii_rows = _ascii_matrix(texts)
        ok, folded = _resident_fast(rows, day) if k is IdKind.RESIDENT_ID else _credit_fast(rows)
        ok &= ascii_rows
        slow.extend(fast_idx[~ok].tolist())
        fix_idx = fast_idx[folded & ascii_rows].tolist()
        batch.cleaned += len(fix_idx)
        for i in fix_idx:
            values[i] = raws[i].upper()

    for i in slow:
        raw = raws[i]
        try:
            if k is IdKind.RESIDENT_ID:
                value, legacy = _normalize_resident(raw, day)
            else:
                value, legacy = _normalize_credit(raw), False
        except InvalidIdentifier as exc:
            values[i] = None
            batch.invalid += 1
            batch.reasons[exc.reason] += 1
            continue
        values[i] = value
        if legacy:
            batch.legacy += 1
        elif value != raw:
            batch.cleaned += 1
    return batch
