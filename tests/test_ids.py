"""Tests for connectors.ids: standard test vectors, every rejection reason, and property tests."""

from __future__ import annotations

import collections
import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import ids
from connectors.errors import ConnectorError, InvalidIdentifier
from connectors.ids import (
    BIRTH_YEAR_BANDS,
    SEX_CODES,
    IdKind,
    ResidentAttributes,
    credit_code_check_char,
    make_credit_code,
    make_resident_id,
    normalize,
    normalize_many,
    resident_attributes,
    resident_check_digit,
    to_legacy_15,
)

TODAY = datetime.date(2025, 6, 30)
PROVINCES = (*range(11, 16), *range(21, 24), *range(31, 38), *range(41, 47), *range(50, 55), *range(61, 66))
PROVINCES += (71, 81, 82)
CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
RESIDENT_CHARS = "0123456789X"
# Authority / organisation type pairs from the GB 32100 code table.
CREDIT_TYPES = (
    ("1", "1"),
    ("1", "2"),
    ("1", "3"),
    ("1", "9"),
    ("3", "1"),
    ("3", "5"),
    ("5", "1"),
    ("5", "2"),
    ("5", "3"),
    ("5", "9"),
    ("9", "1"),
    ("9", "2"),
    ("9", "3"),
    ("A", "1"),
    ("N", "2"),
    ("Y", "1"),
)
FAST = settings(max_examples=200, deadline=None)


def assert_no_leak(raw: str, exc: InvalidIdentifier) -> None:
    # Any run of six characters from the value (a region code, half a birth date) would be a leak.
    text = raw.strip()
    for start in range(len(text) - 5):
        assert text[start : start + 6] not in str(exc)


def resident_reason(raw: str, today: datetime.date = TODAY) -> str:
    with pytest.raises(InvalidIdentifier) as info:
        normalize(IdKind.RESIDENT_ID, raw, today=today)
    exc = info.value
    assert exc.kind == "resident_id"
    assert str(exc) == f"invalid resident_id: {exc.reason}"
    assert_no_leak(raw, exc)
    return exc.reason


def credit_reason(raw: str) -> str:
    with pytest.raises(InvalidIdentifier) as info:
        normalize(IdKind.CREDIT_CODE, raw)
    exc = info.value
    assert exc.kind == "credit_code"
    assert str(exc) == f"invalid credit_code: {exc.reason}"
    assert_no_leak(raw, exc)
    return exc.reason


def with_check(first17: str) -> str:
    return first17 + resident_check_digit(first17)


# --- known answers ---------------------------------------------------------------------------------


def test_gb11643_examples_are_valid() -> None:
    assert normalize(IdKind.RESIDENT_ID, "11010519491231002X", today=TODAY) == "11010519491231002X"
    assert normalize("resident_id", "440524188001010014", today=TODAY) == "440524188001010014"
    assert resident_check_digit("11010519491231002") == "X"
    assert resident_check_digit("44052418800101001") == "4"


def test_gb32100_example_is_valid_and_bad_check_character_is_not() -> None:
    assert normalize(IdKind.CREDIT_CODE, "91350100M000100Y43") == "91350100M000100Y43"
    assert credit_code_check_char("91350100M000100Y4") == "3"
    assert credit_reason("91350100M000100Y4Z") == "character at position 18 is not allowed"
    assert credit_reason("91350100M000100Y44") == "check character mismatch"


def test_sloppy_forms_are_cleaned() -> None:
    assert normalize("resident_id", " 11010519491231002x ", today=TODAY) == "11010519491231002X"
    assert normalize("resident_id", "\t11010519491231002X\u3000\n", today=TODAY) == "11010519491231002X"
    assert normalize("credit_code", "\u300091350100m000100y43 ") == "91350100M000100Y43"


def test_legacy_number_is_widened_to_18() -> None:
    full = "11010519491231002X"
    legacy = to_legacy_15(full)
    assert legacy == "110105491231002"
    assert normalize("resident_id", legacy, today=TODAY) == full
    assert normalize("resident_id", f" {legacy}\t", today=TODAY) == full


def test_legacy_form_only_exists_for_the_twentieth_century() -> None:
    with pytest.raises(ValueError, match="1900-1999"):
        to_legacy_15("440524188001010014")
    with pytest.raises(ValueError, match="1900-1999"):
        to_legacy_15(make_resident_id("110105", datetime.date(2001, 1, 1), 3, male=True))


def test_national_region_is_accepted_for_credit_codes_only() -> None:
    code = make_credit_code("100000", "500000001", authority="5", org_type="1")
    assert normalize("credit_code", code) == code
    with pytest.raises(ValueError, match="province-level"):
        make_resident_id("100000", datetime.date(1990, 1, 1), 1, male=True)


# --- every rejection reason ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1101051949123100", "length 16, expected 18 or legacy 15"),
        ("11010519491231002X1", "length 19, expected 18 or legacy 15"),
        ("", "length 0, expected 18 or legacy 15"),
        ("1101A519491231002X", "character at position 5 is not allowed"),
        ("11010519491231002Y", "character at position 18 is not allowed"),
        ("X10105491231002", "character at position 1 is not allowed"),
        ("１1010519491231002X", "character at position 1 is not allowed"),
        ("1101051949123100X2", "character at position 17 is not allowed"),
        ("11010519491231002 X", "length 19, expected 18 or legacy 15"),
    ],
)
def test_resident_structure_reasons(raw: str, reason: str) -> None:
    assert resident_reason(raw) == reason


@pytest.mark.parametrize(
    ("first17", "reason"),
    [
        ("01010519491231002", "region code must be 6 digits not starting with 0"),
        ("99010519491231002", "region code does not start with a province-level code"),
        ("10000019491231002", "region code does not start with a province-level code"),
        ("11010519900230002", "birth date is not a real date"),
        ("11010519000229002", "birth date is not a real date"),
        ("11010519491300002", "birth date is not a real date"),
        ("11010519490100002", "birth date is not a real date"),
        ("11010517991231002", "birth year is before 1800"),
        ("11010520250701002", "birth date is in the future"),
    ],
)
def test_resident_content_reasons(first17: str, reason: str) -> None:
    raw = with_check(first17)
    assert resident_reason(raw) == reason
    assert first17[6:14] not in str(resident_reason(raw))


def test_resident_check_digit_mismatch() -> None:
    assert resident_reason("110105194912310021") == "check digit mismatch"
    assert normalize("resident_id", "110105491231003", today=TODAY).startswith("11010519491231003")


def test_legacy_content_reasons() -> None:
    assert resident_reason("990105491231002") == "region code does not start with a province-level code"
    assert resident_reason("110105490230002") == "birth date is not a real date"


def test_leap_day_is_a_real_date() -> None:
    for first17 in ("11010520000229002", "11010519960229002"):
        assert normalize("resident_id", with_check(first17), today=TODAY) == with_check(first17)


def test_birth_today_is_accepted_and_tomorrow_is_not() -> None:
    born_today = make_resident_id("310101", TODAY, 7, male=False)
    assert normalize("resident_id", born_today, today=TODAY) == born_today
    tomorrow = TODAY + datetime.timedelta(days=1)
    born_tomorrow = make_resident_id("310101", tomorrow, 7, male=False)
    assert resident_reason(born_tomorrow) == "birth date is in the future"
    assert normalize("resident_id", born_tomorrow, today=tomorrow) == born_tomorrow


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("91350100M000100Y4", "length 17, expected 18"),
        ("91350100M000100Y433", "length 19, expected 18"),
        ("91350100I000100Y43", "character at position 9 is not allowed"),
        ("91350100O000100Y43", "character at position 9 is not allowed"),
        ("91350100S000100Y43", "character at position 9 is not allowed"),
        ("91350100V000100Y43", "character at position 9 is not allowed"),
        ("91350100-000100Y43", "character at position 9 is not allowed"),
        ("91350100Ｍ000100Y43", "character at position 9 is not allowed"),
    ],
)
def test_credit_structure_reasons(raw: str, reason: str) -> None:
    assert credit_reason(raw) == reason


@pytest.mark.parametrize(
    ("first17", "reason"),
    [
        ("B1350100M000100Y4", "registration authority code is not recognised"),
        ("01350100M000100Y4", "registration authority code is not recognised"),
        ("94350100M000100Y4", "organisation type code is not valid for the registration authority"),
        ("Y2350100M000100Y4", "organisation type code is not valid for the registration authority"),
        ("9135A100M000100Y4", "region code must be 6 digits not starting with 0"),
        ("91050100M000100Y4", "region code must be 6 digits not starting with 0"),
        ("91990100M000100Y4", "region code does not start with a province-level code"),
        ("91100001M000100Y4", "region code does not start with a province-level code"),
    ],
)
def test_credit_content_reasons(first17: str, reason: str) -> None:
    assert credit_reason(first17 + credit_code_check_char(first17)) == reason


def test_unknown_kind_is_a_plain_value_error() -> None:
    with pytest.raises(ValueError, match="unknown identifier kind 'passport'") as info:
        normalize("passport", "11010519491231002X")
    assert not isinstance(info.value, ConnectorError)
    with pytest.raises(ValueError, match="unknown identifier kind"):
        normalize_many("passport", [])


def test_invalid_identifier_is_a_connector_and_value_error() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalize("credit_code", "nonsense")
    assert isinstance(info.value, ConnectorError)
    assert isinstance(info.value, ValueError)


# --- attributes and generators ---------------------------------------------------------------------


def test_resident_attributes_of_the_examples() -> None:
    assert resident_attributes("11010519491231002X") == ResidentAttributes("110105", "2", "1940-1949")
    assert resident_attributes("440524188001010014") == ResidentAttributes("440524", "1", "1800-1899")


def test_resident_attributes_need_normalized_input() -> None:
    with pytest.raises(ValueError, match="output of normalize"):
        resident_attributes("11010519491231002x")
    with pytest.raises(ValueError, match="output of normalize"):
        resident_attributes("110105491231002")
    with pytest.raises(InvalidIdentifier):
        resident_attributes("11010519491231002Y")


def test_band_domain_covers_the_current_decade() -> None:
    # Fails once the calendar passes the last band, which is when the domain must grow.
    year = datetime.date.today().year
    assert f"{year - year % 10}-{year - year % 10 + 9}" in BIRTH_YEAR_BANDS
    assert BIRTH_YEAR_BANDS[0] == "1800-1899"
    assert BIRTH_YEAR_BANDS[1] == "1900-1909"
    assert BIRTH_YEAR_BANDS[-1] == "2090-2099"
    assert SEX_CODES == ("1", "2")


def test_every_year_a_valid_id_can_carry_has_its_band() -> None:
    # A valid number is born between 1800 and today: each such year, down to someone born today, lands
    # in the published domain (this fails once the current year passes the list's end).
    today = datetime.date.today()
    for year in range(1800, today.year + 1):
        birth = today if year == today.year else datetime.date(year, 6, 1)
        attrs = resident_attributes(make_resident_id("110105", birth, 1, male=True))
        assert attrs.birth_year_band in BIRTH_YEAR_BANDS, year
    assert len(set(BIRTH_YEAR_BANDS)) == len(BIRTH_YEAR_BANDS)


def test_generator_arguments_are_checked() -> None:
    birth = datetime.date(1990, 1, 1)
    with pytest.raises(ValueError, match="sequence"):
        make_resident_id("110105", birth, 500, male=True)
    with pytest.raises(ValueError, match="sequence"):
        make_resident_id("110105", birth, -1, male=True)
    with pytest.raises(ValueError, match="6 digits"):
        make_resident_id("11010", birth, 1, male=True)
    with pytest.raises(ValueError, match="birth year"):
        make_resident_id("110105", datetime.date(1799, 12, 31), 1, male=True)
    with pytest.raises(ValueError, match="organisation body"):
        make_credit_code("350100", "M000100Y")
    with pytest.raises(ValueError, match="organisation body"):
        make_credit_code("350100", "M000100YI")
    with pytest.raises(ValueError, match="organisation type"):
        make_credit_code("350100", "M000100Y4", authority="9", org_type="9")
    with pytest.raises(ValueError, match="authority"):
        make_credit_code("350100", "M000100Y4", authority="Z")
    with pytest.raises(ValueError):
        resident_check_digit("1101051949123100X")
    with pytest.raises(ValueError):
        credit_code_check_char("91350100M000100Y")


def test_make_credit_code_reproduces_the_example() -> None:
    assert make_credit_code("350100", "M000100Y4") == "91350100M000100Y43"


# --- properties ------------------------------------------------------------------------------------

regions = st.builds(lambda p, rest: f"{p}{rest:04d}", st.sampled_from(PROVINCES), st.integers(0, 9999))
births = st.dates(min_value=datetime.date(1800, 1, 1), max_value=TODAY)
resident_ids = st.builds(make_resident_id, regions, births, st.integers(0, 499), st.booleans())
credit_regions = st.one_of(st.just("100000"), regions)
credit_codes = st.builds(
    lambda region, body, pair: make_credit_code(region, body, *pair),
    credit_regions,
    st.text(CREDIT_ALPHABET, min_size=9, max_size=9),
    st.sampled_from(CREDIT_TYPES),
)


@FAST
@given(regions, births, st.integers(0, 499), st.booleans())
def test_generated_resident_ids_are_valid(region: str, birth: datetime.date, seq: int, male: bool) -> None:
    rid = make_resident_id(region, birth, seq, male)
    assert normalize(IdKind.RESIDENT_ID, rid, today=TODAY) == rid
    assert normalize(IdKind.RESIDENT_ID, f" {rid.lower()}\t", today=TODAY) == rid
    assert rid[14:17] == f"{2 * seq + male:03d}"
    attrs = resident_attributes(rid)
    assert attrs.region_code == region
    assert attrs.sex == ("1" if male else "2")
    assert attrs.birth_year_band in BIRTH_YEAR_BANDS
    assert birth.isoformat().replace("-", "") not in repr(attrs)
    if 1900 <= birth.year <= 1999:
        legacy = to_legacy_15(rid)
        assert len(legacy) == 15
        assert normalize(IdKind.RESIDENT_ID, legacy, today=TODAY) == rid


@FAST
@given(resident_ids, st.integers(0, 17), st.sampled_from(RESIDENT_CHARS))
def test_any_single_substitution_breaks_a_resident_id(rid: str, position: int, char: str) -> None:
    if rid[position] == char:
        char = RESIDENT_CHARS[(RESIDENT_CHARS.index(char) + 1) % len(RESIDENT_CHARS)]
    broken = rid[:position] + char + rid[position + 1 :]
    with pytest.raises(InvalidIdentifier):
        normalize(IdKind.RESIDENT_ID, broken, today=TODAY)


@FAST
@given(credit_codes)
def test_generated_credit_codes_are_valid(code: str) -> None:
    assert normalize(IdKind.CREDIT_CODE, code) == code
    assert normalize(IdKind.CREDIT_CODE, f"\u3000{code.lower()} ") == code
    assert credit_code_check_char(code[:17]) == code[17]


@FAST
@given(credit_codes, st.integers(0, 17), st.sampled_from(CREDIT_ALPHABET))
def test_any_single_substitution_breaks_a_credit_code(code: str, position: int, char: str) -> None:
    if code[position] == char:
        char = CREDIT_ALPHABET[(CREDIT_ALPHABET.index(char) + 1) % len(CREDIT_ALPHABET)]
    broken = code[:position] + char + code[position + 1 :]
    with pytest.raises(InvalidIdentifier):
        normalize(IdKind.CREDIT_CODE, broken)


def _sloppy(value: str, draw: st.DrawFn) -> str:
    pad = st.text(" \t\u3000\n", max_size=2)
    body = value.lower() if draw(st.booleans()) else value
    return draw(pad) + body + draw(pad)


@st.composite
def resident_inputs(draw: st.DrawFn) -> str:
    rid = draw(resident_ids)
    forms = ["clean", "sloppy", "legacy", "substituted", "cut", "future", "junk", "checksummed"]
    form = draw(st.sampled_from(forms))
    if form == "sloppy":
        return _sloppy(rid, draw)
    if form == "legacy":
        birth = draw(st.dates(datetime.date(1900, 1, 1), datetime.date(1999, 12, 31)))
        legacy = to_legacy_15(make_resident_id(rid[:6], birth, 0, male=True))
        return _sloppy(legacy, draw) if draw(st.booleans()) else legacy
    if form == "substituted":
        position = draw(st.integers(0, 17))
        return rid[:position] + draw(st.sampled_from(RESIDENT_CHARS + "x １ ")) + rid[position + 1 :]
    if form == "cut":
        return rid[: draw(st.integers(0, 17))]
    if form == "future":
        birth = draw(st.dates(TODAY, datetime.date(2099, 12, 31)))
        return make_resident_id(rid[:6], birth, draw(st.integers(0, 499)), draw(st.booleans()))
    if form == "junk":
        return draw(st.text(RESIDENT_CHARS + "x０ \u3000", min_size=14, max_size=19))
    if form == "checksummed":
        # Well-formed and with a correct check digit, so only the region and date checks can refuse it.
        region = f"{draw(st.integers(0, 99)):02d}{draw(st.integers(0, 9999)):04d}"
        year, month, day = draw(st.integers(1790, 2100)), draw(st.integers(0, 13)), draw(st.integers(0, 32))
        first17 = f"{region}{year:04d}{month:02d}{day:02d}{draw(st.integers(0, 999)):03d}"
        return with_check(first17)
    return rid


@st.composite
def credit_inputs(draw: st.DrawFn) -> str:
    code = draw(credit_codes)
    form = draw(st.sampled_from(["clean", "sloppy", "substituted", "cut", "junk", "checksummed"]))
    if form == "sloppy":
        return _sloppy(code, draw)
    if form == "substituted":
        position = draw(st.integers(0, 17))
        return code[:position] + draw(st.sampled_from(CREDIT_ALPHABET + "IOSVZaiМ ")) + code[position + 1 :]
    if form == "cut":
        return code[: draw(st.integers(0, 17))]
    if form == "junk":
        return draw(st.text(CREDIT_ALPHABET + "abz\u3000Ｍ", min_size=17, max_size=19))
    if form == "checksummed":
        # Over the alphabet and with a correct check character, so only the field checks can refuse it.
        head = draw(st.text(CREDIT_ALPHABET, min_size=2, max_size=2))
        region = draw(st.one_of(st.text(CREDIT_ALPHABET, min_size=6, max_size=6), credit_regions))
        first17 = head + region + code[8:17]
        return first17 + credit_code_check_char(first17)
    return code


def _expected_batch(
    kind: IdKind, raws: list[str]
) -> tuple[list[str | None], int, int, int, collections.Counter[str]]:
    values: list[str | None] = []
    invalid = legacy = cleaned = 0
    reasons: collections.Counter[str] = collections.Counter()
    for raw in raws:
        try:
            value = normalize(kind, raw, today=TODAY)
        except InvalidIdentifier as exc:
            values.append(None)
            invalid += 1
            reasons[exc.reason] += 1
            continue
        values.append(value)
        if kind is IdKind.RESIDENT_ID and len(raw.strip()) == 15:
            legacy += 1
        elif value != raw:
            cleaned += 1
    return values, invalid, legacy, cleaned, reasons


def _assert_batch_matches(kind: IdKind, raws: list[str]) -> None:
    batch = normalize_many(kind, raws, today=TODAY)
    values, invalid, legacy, cleaned, reasons = _expected_batch(kind, raws)
    assert batch.values == values
    assert (batch.invalid, batch.legacy, batch.cleaned) == (invalid, legacy, cleaned)
    assert batch.reasons == reasons


@FAST
@given(st.lists(resident_inputs(), max_size=40))
def test_normalize_many_resident_equals_normalize(raws: list[str]) -> None:
    _assert_batch_matches(IdKind.RESIDENT_ID, raws)


@FAST
@given(st.lists(credit_inputs(), max_size=40))
def test_normalize_many_credit_equals_normalize(raws: list[str]) -> None:
    _assert_batch_matches(IdKind.CREDIT_CODE, raws)


@FAST
@given(st.lists(resident_ids, min_size=1, max_size=40))
def test_normalize_many_on_clean_input_changes_nothing(raws: list[str]) -> None:
    batch = normalize_many("resident_id", raws, today=TODAY)
    assert batch.values == raws
    assert (batch.invalid, batch.legacy, batch.cleaned) == (0, 0, 0)
    assert not batch.reasons


def _no_scalar_path(*args: object) -> str:
    raise AssertionError("a clean 18-character value took the scalar path")


@FAST
@given(
    st.lists(st.one_of(resident_ids, resident_ids.map(str.lower)), min_size=1, max_size=40),
    st.lists(st.one_of(credit_codes, credit_codes.map(str.lower)), min_size=1, max_size=40),
)
def test_clean_values_stay_on_the_vectorised_path(residents: list[str], credits: list[str]) -> None:
    # The scalar path is the slow one; valid 18-character rows must never need it.
    born_today = make_resident_id("650102", TODAY, 499, male=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ids, "_normalize_resident", _no_scalar_path)
        patch.setattr(ids, "_normalize_credit", _no_scalar_path)
        batch = normalize_many(IdKind.RESIDENT_ID, [*residents, born_today], today=TODAY)
        assert batch.invalid == 0
        assert batch.cleaned == sum(r.endswith("x") for r in residents)
        batch = normalize_many(IdKind.CREDIT_CODE, credits)
        assert batch.invalid == 0
        assert batch.values == [c.upper() for c in credits]


def test_normalize_many_agrees_on_calendar_and_region_edges() -> None:
    tomorrow = TODAY + datetime.timedelta(days=1)
    first17s = [
        "11010520000229002",
        "11010519960229002",
        "11010519000229002",
        "11010518000229002",
        "11010519990431002",
        "11010519991231002",
        "11010519990132002",
        "11010517991231002",
        "11010518000101002",
        "01010519491231002",
        "10000019491231002",
        "82010519491231002",
        "83010519491231002",
        f"110105{TODAY:%Y%m%d}002",
        f"110105{tomorrow:%Y%m%d}002",
    ]
    raws = [with_check(f) for f in first17s]
    _assert_batch_matches(IdKind.RESIDENT_ID, raws)
    assert normalize_many(IdKind.RESIDENT_ID, raws, today=TODAY).invalid == 9
    credit_first17s = [
        "51100000500000001",
        "51100001500000001",
        "91820100M000100Y4",
        "91830100M000100Y4",
        "91010100M000100Y4",
        "Y1350100M000100Y4",
        "Y9350100M000100Y4",
        "N3350100M000100Y4",
        "A5350100M000100Y4",
    ]
    codes = [f + credit_code_check_char(f) for f in credit_first17s]
    _assert_batch_matches(IdKind.CREDIT_CODE, codes)
    assert normalize_many(IdKind.CREDIT_CODE, codes).invalid == 5


def test_normalize_many_counts_a_known_mixture() -> None:
    raws = [
        "11010519491231002X",
        "11010519491231002x",
        " 440524188001010014 ",
        "110105491231002",
        "11010519491231002Y",
        "110105194912310021",
        "１1010519491231002X",
    ]
    batch = normalize_many(IdKind.RESIDENT_ID, raws, today=TODAY)
    assert batch.values == [
        "11010519491231002X",
        "11010519491231002X",
        "440524188001010014",
        "11010519491231002X",
        None,
        None,
        None,
    ]
    assert (batch.invalid, batch.legacy, batch.cleaned) == (3, 1, 2)
    assert batch.reasons == {
        "character at position 18 is not allowed": 1,
        "check digit mismatch": 1,
        "character at position 1 is not allowed": 1,
    }
    assert normalize_many(IdKind.CREDIT_CODE, []).values == []
