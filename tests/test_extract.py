"""The extract pipeline in process, over the in-memory source (fast, exact)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from connector_fixture import (
    EXPECTED,
    INVALID,
    PERSON_A,
    PERSON_B,
    PERSON_C,
    Department,
    make_department,
    wage_rows,
)

from connectors.config import load_config
from connectors.extract import Extract, Extractor
from connectors.federation_keys import generate_keyring, load_keyring, write_keyring
from connectors.ids import IdKind, make_resident_id, normalize, to_legacy_15
from connectors.protocol import (
    BASELINE_SUFFIX,
    HOUSEHOLD_TOKEN_COLUMN,
    TOKEN_COLUMN,
    ExtractRequest,
    TokenSpec,
)
from connectors.sources.memory import MemorySource


@pytest.fixture
def dept(tmp_path: Path) -> Department:
    return make_department(tmp_path, "sqlite")


def _extract(dept: Department, request: ExtractRequest, frame: pd.DataFrame | None = None) -> Extract:
    loaded = load_config(dept.config_path)
    source = MemorySource({"wages": frame if frame is not None else pd.DataFrame(wage_rows())})
    dataset = loaded.config.dataset(request.dataset)
    assert dataset is not None
    return Extractor(loaded, source, load_keyring(dept.keyring_path)).run(request, dataset)


def test_one_clipped_row_per_person(dept: Department) -> None:
    result = _extract(dept, dept.request("q-unit-00001"))
    assert result.table.num_rows == len(EXPECTED)
    got = sorted((r["wage_income"], r["months_paid"]) for r in result.table.to_pylist())
    assert got == sorted(EXPECTED.values())
    q = result.quality
    assert (q.invalid_ids, q.legacy_ids, q.cleaned_ids, q.duplicate_ids, q.out_of_domain) == (4, 1, 1, 2, 1)
    assert sum(q.invalid_reasons.values()) == 4


def test_the_period_filter_excludes_other_months(dept: Department) -> None:
    req = dept.request("q-unit-00002", period_start="2025-01", period_end="2025-03")
    req = req.model_copy(update={"approval": dept.approval("q-unit-00002")})
    result = _extract(dept, req)
    by_months = sorted(r["months_paid"] for r in result.table.to_pylist())
    assert by_months == [3, 3]  # A's and B's first quarter; C has no row in it


def test_bad_values_are_counted_and_skipped(dept: Department) -> None:
    frame = pd.DataFrame(wage_rows())
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[0, "amount"] = "twelve thousand"
    result = _extract(dept, dept.request("q-unit-00003"), frame)
    assert result.quality.bad_values == 1
    assert result.table.num_rows == len(EXPECTED)


def test_legacy_sloppy_and_clean_forms_give_one_token(dept: Department) -> None:
    rows = [
        {"pid": PERSON_A, "month": "2025-01", "amount": 1, "district": "A"},
        {"pid": to_legacy_15(PERSON_A), "month": "2025-02", "amount": 2, "district": "A"},
        {"pid": " " + PERSON_A.lower() + "\t", "month": "2025-03", "amount": 4, "district": "A"},
    ]
    result = _extract(dept, dept.request("q-unit-00004"), pd.DataFrame(rows))
    assert result.table.num_rows == 1
    assert result.table.to_pylist()[0]["wage_income"] == 7


def test_household_mapping_tokenises_household_numbers(tmp_path: Path) -> None:
    import yaml

    dept = make_department(tmp_path, "sqlite", name="register")
    cfg = yaml.safe_load(dept.config_path.read_text())
    cfg["datasets"][0]["household"] = {"column": "hh"}
    dept.config_path.write_text(yaml.safe_dump(cfg))
    other = make_resident_id("330922", datetime.date(1950, 1, 1), 3, male=False)
    rows = [
        {"pid": PERSON_A, "month": "2025-01", "amount": 1, "district": "A", "hh": "h0001"},
        {"pid": other, "month": "2025-01", "amount": 1, "district": "A", "hh": " H0001 "},
        {"pid": PERSON_B, "month": "2025-01", "amount": 1, "district": "B", "hh": "H0002"},
    ]
    approval = dept.approval("q-unit-00005", unit="household")
    req = dept.request("q-unit-00005", unit="household", household=True, approval=approval)
    table = _extract(dept, req, pd.DataFrame(rows)).table
    households = table.column(HOUSEHOLD_TOKEN_COLUMN).to_pylist()
    assert len(set(households)) == 2 and all(len(h) == 16 for h in households)
    assert set(table.column(TOKEN_COLUMN).to_pylist()).isdisjoint(households)


def test_a_rotated_out_epoch_is_refused(dept: Department) -> None:
    from connectors.errors import UnknownKeyEpoch
    from connectors.federation_keys import rotate_keyring

    doc = generate_keyring("test-county", epoch=1)
    doc = rotate_keyring(rotate_keyring(doc))  # epochs 3 and 2 held; 1 revoked
    write_keyring(doc, dept.keyring_path)
    req = dept.request("q-unit-00006")
    assert req.token.epoch == 3
    assert _extract(dept, req).table.num_rows == len(EXPECTED)
    old = req.model_copy(update={"token": req.token.model_copy(update={"epoch": 1})})
    with pytest.raises(UnknownKeyEpoch):
        _extract(dept, old)


def _by_nid(dept: Department, query_id: str, table: pa.Table) -> dict[str, dict[str, object]]:
    """The rows of an extract keyed by the normalised ID whose token they carry (known IDs only)."""
    keyring = load_keyring(dept.keyring_path)
    tok = keyring.tokenizer(
        epoch=keyring.current_epoch,
        suite=TokenSpec(epoch=0).suite,
        entity_kind="person",
        query_id=dept.qid(query_id),
    )
    rows = {r[TOKEN_COLUMN]: r for r in table.to_pylist()}
    return {nid: rows[tok.token(nid)] for nid in EXPECTED if tok.token(nid) in rows}


def test_a_baseline_carries_both_periods_as_two_separate_extracts_would(dept: Department) -> None:
    # The extractor alone, in process: one query's tokens for three roll-ups (the service would serve
    # only the one its plan of the query needs).
    query_id = "q-unit-base1"
    one = {"query": dept.query(query_id)}
    main = _extract(dept, dept.request(query_id, period_start="2025-07", period_end="2025-12", **one))
    base = _extract(dept, dept.request(query_id, period_start="2025-01", period_end="2025-06", **one))
    both = _extract(
        dept,
        dept.request(
            query_id,
            **one,
            period_start="2025-07",
            period_end="2025-12",
            baseline_start="2025-01",
            baseline_end="2025-06",
        ),
    ).table
    s = BASELINE_SUFFIX
    assert both.column_names == [
        TOKEN_COLUMN,
        "wage_income",
        "wage_income" + s,
        "months_paid",
        "months_paid" + s,
        "district",
        "sex",
        "birth_year_band",
    ]
    tokens = both.column(TOKEN_COLUMN).to_pylist()
    assert tokens == sorted(tokens)
    # Tokens depend on the query only, so the separate extracts of one query line up with the joint one.
    main_rows = {r[TOKEN_COLUMN]: r for r in main.table.to_pylist()}
    base_rows = {r[TOKEN_COLUMN]: r for r in base.table.to_pylist()}
    assert set(tokens) == set(main_rows) | set(base_rows) and len(main_rows) < len(tokens)
    for row in both.to_pylist():
        alone, before = main_rows.get(row[TOKEN_COLUMN]), base_rows.get(row[TOKEN_COLUMN])
        for m in ("wage_income", "months_paid"):
            assert row[m] == (alone[m] if alone else 0)
            assert row[m + s] == (before[m] if before else 0)
        for d in ("district", "sex", "birth_year_band"):
            assert row[d] in {r[d] for r in (alone, before) if r is not None}
    # The same, against the known rows: A and C were paid only in the first half, B all year (clipped).
    got = {
        nid: (r["wage_income"], r["wage_income" + s], r["months_paid"], r["months_paid" + s])
        for nid, r in _by_nid(dept, query_id, both).items()
    }
    assert got == {
        normalize(IdKind.RESIDENT_ID, PERSON_A): (0, 50_000, 0, 5),
        PERSON_B: (100_000, 100_000, 6, 6),
        PERSON_C: (0, 7_000, 0, 1),
    }


def test_a_baseline_counts_quality_per_roll_up(dept: Department) -> None:
    req = dept.request(
        "q-unit-base2",
        query=dept.query("q-unit-base2"),
        period_start="2025-01",
        period_end="2025-03",
        baseline_start="2024-01",
        baseline_end="2024-12",
    )
    q = _extract(dept, req).quality
    # The query period holds A (clean form only), B and the invalid IDs; the baseline holds C's 2024 row.
    # Each roll-up's raw IDs are counted, so the three valid ones are all there.
    assert q.raw_ids == 3 + len(INVALID)
    assert (q.invalid_ids, q.duplicate_ids, q.out_of_domain) == (len(INVALID), 0, 0)


def test_without_measures_a_baseline_changes_nothing(dept: Department) -> None:
    period = {
        "period_start": "2025-07",
        "period_end": "2025-12",
        "measures": (),
        "query": dept.query("base3"),
    }
    plain = _extract(dept, dept.request("q-unit-base3", **period)).table
    with_base = _extract(
        dept,
        dept.request("q-unit-base3", baseline_start="2025-01", baseline_end="2025-06", **period),
    ).table
    assert with_base.equals(plain) and plain.num_rows == 1


def test_a_baseline_keeps_the_household_of_someone_seen_in_either_period(tmp_path: Path) -> None:
    import yaml

    dept = make_department(tmp_path, "sqlite", name="register")
    cfg = yaml.safe_load(dept.config_path.read_text())
    cfg["datasets"][0]["household"] = {"column": "hh"}
    dept.config_path.write_text(yaml.safe_dump(cfg))
    rows = [
        {"pid": PERSON_A, "month": "2025-01", "amount": 1, "district": "A", "hh": "H0001"},
        {"pid": PERSON_B, "month": "2025-07", "amount": 1, "district": "B", "hh": "H0002"},
    ]
    req = dept.request(
        "q-unit-base4",
        unit="household",
        household=True,
        approval=dept.approval("q-unit-base4", unit="household"),
        period_start="2025-07",
        period_end="2025-12",
        baseline_start="2025-01",
        baseline_end="2025-06",
    )
    table = _extract(dept, req, pd.DataFrame(rows)).table
    assert table.num_rows == 2
    assert None not in table.column(HOUSEHOLD_TOKEN_COLUMN).to_pylist()
    assert sorted(table.column("wage_income" + BASELINE_SUFFIX).to_pylist()) == [0, 1]
