"""Tests of the synthetic county generator: its stores, defects, configurations, keys and truth file."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dbservers import mariadb_url, postgres_url  # noqa: F401 (fixtures)

from connectors.config import load_config, read_codelist
from connectors.errors import InvalidIdentifier
from connectors.federation_keys import load_keyring
from connectors.ids import IdKind, normalize, resident_attributes
from connectors.synth import CountySummary, generate_county
from connectors.synth.keys import DEMO_MARKER, public_key_text
from connectors.synth.policy import BOUNDS

PERSONS = 3_000
SEED = 11
CONNECTORS = ("register", "tax", "social", "utility", "civil")


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> CountySummary:
    messages: list[str] = []
    summary = generate_county(
        tmp_path_factory.mktemp("county"), persons=PERSONS, seed=SEED, progress=messages.append
    )
    assert messages and messages[-1].startswith("truth.json written")
    return summary


@pytest.fixture(scope="module")
def truth(county: CountySummary) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(county.truth.read_text(encoding="utf-8"))
    return doc


def _sql(path: Path, table: str) -> pd.DataFrame:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return pd.read_sql_table(table, conn)
    finally:
        engine.dispose()


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {
        "register.persons": _sql(out / "register.db", "persons"),
        "tax.wages": _sql(out / "tax.db", "wages"),
        "tax.business_income": _sql(out / "tax.db", "business_income"),
        "social.contributions": _sql(out / "social.db", "contributions"),
        "social.pensions": _sql(out / "social.db", "pensions"),
        "social.occupations": _sql(out / "social.db", "occupations"),
        "utility.electricity": pd.read_parquet(out / "utility" / "electricity.parquet"),
        "utility.water": pd.read_parquet(out / "utility" / "water.parquet"),
        "civil.assistance": pd.read_csv(out / "civil" / "assistance.csv", dtype=str, keep_default_na=False),
    }


@pytest.fixture(scope="module")
def tables(county: CountySummary) -> dict[str, pd.DataFrame]:
    return _tables(county.out)


def _normalizer() -> Callable[[pd.Series], pd.Series]:
    cache: dict[str, str | None] = {}

    def one(raw: str) -> str | None:
        if raw not in cache:
            try:
                cache[raw] = normalize(IdKind.RESIDENT_ID, raw)
            except InvalidIdentifier:
                cache[raw] = None
        return cache[raw]

    def column(values: pd.Series) -> pd.Series:
        return values.map(one)

    return column


norm = _normalizer()


# --- determinism and shape ---------------------------------------------------------------------------


def test_same_seed_same_county_and_another_seed_another(tmp_path: Path) -> None:
    a = generate_county(tmp_path / "a", persons=800, seed=5)
    b = generate_county(tmp_path / "b", persons=800, seed=5)
    c = generate_county(tmp_path / "c", persons=800, seed=6)
    assert a.rows == b.rows
    assert a.truth.read_text() == b.truth.read_text()
    assert a.truth.read_text() != c.truth.read_text()
    ta, tb = _tables(a.out), _tables(b.out)
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], obj=name)
    for codelist in sorted((a.out / "codelists").iterdir()):
        assert codelist.read_bytes() == (b.out / "codelists" / codelist.name).read_bytes()
    # Keys are fresh on every run, never derived from the seed.
    assert (a.out / "keys" / "gateway.key").read_bytes() != (b.out / "keys" / "gateway.key").read_bytes()


def test_too_small_a_county_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        generate_county(tmp_path, persons=10, seed=1)


def test_summary_counts_match_the_stores(county: CountySummary, tables: dict[str, pd.DataFrame]) -> None:
    assert county.persons == PERSONS
    assert county.villages >= 10 and county.townships == 8
    assert set(county.configs) == set(CONNECTORS)
    assert county.rows == {name: len(frame) for name, frame in tables.items()}
    assert 1.9 < PERSONS / county.households < 2.3
    assert county.floating == round(0.05 * PERSONS)


# --- configurations and keys -------------------------------------------------------------------------


def test_every_config_loads(county: CountySummary) -> None:
    expected = {
        "register": {"persons"},
        "tax": {"wages", "employer_wages", "business_income"},
        "social": {"contributions", "pensions", "occupations"},
        "utility": {"electricity", "water"},
        "civil": {"assistance"},
    }
    ports = set()
    for name in CONNECTORS:
        loaded = load_config(county.configs[name])
        cfg = loaded.config
        assert cfg.name == cfg.department == name
        assert {d.name for d in cfg.datasets} == expected[name]
        assert cfg.signing_key_file.is_file() and cfg.federation_keyring_file is not None
        assert cfg.federation_keyring_file.is_file()
        ports.add(cfg.listen.port)
        for ds in cfg.datasets:
            for m in ds.measures:
                assert tuple(m.bounds) == BOUNDS[m.name]
        if cfg.source.kind == "files":
            assert Path(cfg.source.url).is_dir()
    assert ports == set(range(8711, 8716))
    register = load_config(county.configs["register"])
    persons = register.config.dataset("persons")
    assert persons is not None and persons.household is not None
    assert persons.household.column == "household_no"
    assert {d.name for d in persons.dimensions} >= {
        "village",
        "urban_rural",
        "birth_year_band",
        "sex",
        "region_code",
    }
    assert len(register.domains[("persons", "urban_rural")]) == 7
    social = load_config(county.configs["social"])
    assert social.domains[("occupations", "occupation_major")] == tuple("12345678")
    assert "5-04" in social.domains[("occupations", "occupation_medium")]


def test_configs_pin_the_demo_keys(county: CountySummary) -> None:
    keys = county.out / "keys"
    assert (keys / DEMO_MARKER).is_file()

    def public(path: Path) -> str:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return public_key_text(key)

    gateway = public(keys / "gateway.key")
    for name in CONNECTORS:
        policy = load_config(county.configs[name]).config.policy
        assert policy.gateway_public_keys == (gateway,)
        assert policy.approval_public_key == public(keys / f"{name}-approval.key")
        admin = (keys / f"{name}-admin.key").read_text()
        assert policy.admin_key_sha256 == hashlib.sha256(admin.encode()).hexdigest()
        public(keys / f"{name}-connector.key")
    for path in keys.iterdir():
        if path.name != "public-keys.json":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert load_keyring(keys / "federation-keyring.json").federation_id == "demo-county"


# --- defects in the ID columns -----------------------------------------------------------------------


def test_tax_ids_carry_the_planned_defects(tables: dict[str, pd.DataFrame], truth: dict[str, Any]) -> None:
    ids = pd.concat([tables["tax.wages"]["taxpayer_id"], tables["tax.business_income"]["taxpayer_id"]])
    normalised = norm(ids)
    invalid_raw = set(ids[normalised.isna()])
    persons = normalised.nunique() + len(invalid_raw)
    assert 0.002 <= len(invalid_raw) / persons <= 0.012
    assert len(invalid_raw) == truth["data_quality"]["tax"]["invalid_id_persons"]
    lengths = {len(raw.strip()) for raw in invalid_raw}
    assert lengths <= {17, 18, 19}

    legacy = ids[ids.str.len() == 15]
    assert len(legacy) > 0
    legacy_people = set(norm(legacy))
    assert len(legacy_people) == truth["data_quality"]["tax"]["legacy_form_persons"]
    # The same person also appears under the clean 18-digit form in other rows.
    clean_people = set(normalised[ids.str.len() == 18])
    assert len(legacy_people & clean_people) >= 0.5 * len(legacy_people)

    assert ids.str.startswith(" ").any() or ids.str.endswith(" ").any()
    assert ids.str.endswith("x").any()
    assert all(len(p) == 18 for p in normalised.dropna())


def test_every_department_has_invalid_and_legacy_forms(truth: dict[str, Any]) -> None:
    for name in ("register", "tax", "social", "utility"):
        quality = truth["data_quality"][name]
        assert 0.002 <= quality["invalid_id_persons"] / quality["persons"] <= 0.012, name
        assert 0.015 <= quality["legacy_form_persons"] / quality["persons"] <= 0.045, name
        assert quality["sloppy_rows"] > 0, name
    assert truth["data_quality"]["register"]["duplicate_rows"] > 0
    assert truth["data_quality"]["social"]["duplicate_rows"] > 0


def test_duplicates_are_exact_rows(tables: dict[str, pd.DataFrame], truth: dict[str, Any]) -> None:
    for table, department in (("register.persons", "register"), ("social.occupations", "social")):
        frame = tables[table]
        assert int(frame.duplicated().sum()) == truth["data_quality"][department]["duplicate_rows"]


def test_one_household_per_person_and_floating_people_not_registered(
    tables: dict[str, pd.DataFrame], truth: dict[str, Any]
) -> None:
    register = tables["register.persons"].assign(pid=lambda f: norm(f["id_number"])).dropna(subset=["pid"])
    assert (register.groupby("pid")["household_no"].nunique() == 1).all()
    registered = set(register["pid"])
    wage_people = set(norm(tables["tax.wages"]["taxpayer_id"]).dropna())
    outsiders = wage_people - registered
    floating = truth["floating_population"]["persons"]
    # Everyone in the wages but not in the register is floating, or registered under a broken number.
    assert floating - truth["data_quality"]["tax"]["invalid_id_persons"] <= len(outsiders)
    assert len(outsiders) <= floating + truth["data_quality"]["register"]["invalid_id_persons"]
    # The floating population's numbers were issued elsewhere: not one is in the register.
    migrant_regions = {p[:6] for p in outsiders} - {p[:6] for p in registered}
    assert migrant_regions, "floating workers come from regions the register does not hold"


def test_village_codes_are_twelve_digits_from_the_code_list(
    county: CountySummary, tables: dict[str, pd.DataFrame]
) -> None:
    lists = county.out / "codelists"
    villages = pd.read_csv(lists / "villages.csv", dtype=str)
    townships = set(read_codelist(lists / "townships.csv"))
    urban_rural = set(read_codelist(lists / "urban_rural.csv"))
    assert urban_rural == {"111", "112", "121", "122", "123", "210", "220"}
    assert villages["code"].str.fullmatch(r"33092\d{7}").all()
    assert set(villages["township_code"]) <= townships
    assert (villages["code"].str[:9] == villages["township_code"]).all()
    assert set(villages["urban_rural_code"]) <= urban_rural
    register = tables["register.persons"]
    assert register["village_code"].str.fullmatch(r"\d{12}").all()
    assert set(register["village_code"]) <= set(villages["code"])
    assert register["household_no"].str.fullmatch(r"H\d{17}").all()
    assert (register["household_no"].str[1:13] == register["village_code"]).all()
    for name in ("occupation_major", "occupation_medium", "region_codes", "relations"):
        read_codelist(lists / f"{name}.csv")
    regions = set(read_codelist(lists / "region_codes.csv"))
    valid = norm(register["id_number"]).dropna()
    assert {resident_attributes(p).region_code for p in valid} <= regions


def test_occupations_use_the_code_lists(county: CountySummary, tables: dict[str, pd.DataFrame]) -> None:
    lists = county.out / "codelists"
    occupations = tables["social.occupations"]
    assert set(occupations["occupation_major"]) <= set(read_codelist(lists / "occupation_major.csv"))
    assert set(occupations["occupation_medium"]) <= set(read_codelist(lists / "occupation_medium.csv"))
    assert (occupations["occupation_medium"].str[0] == occupations["occupation_major"]).all()
    assert occupations["occupation_medium"].value_counts().index[0] == "5-04"


def test_the_county_looks_like_shengsi(
    county: CountySummary, tables: dict[str, pd.DataFrame], truth: dict[str, Any]
) -> None:
    register = tables["register.persons"].drop_duplicates()
    pids = norm(register["id_number"]).dropna()
    birth_years = pids.str[6:10].astype(int)
    assert 0.25 <= (birth_years <= 2025 - 61).mean() <= 0.37
    raw = truth["raw"]
    assert 1.95 <= raw["person_count"] / raw["household_count"] <= 2.25  # Shengsi 2.05, Zhoushan 2.15
    assert 45_000 <= raw["per_capita_income"]["county"] <= 62_000
    assert 1.35 <= raw["urban_rural_ratio"] <= 1.9
    months = tables["utility.electricity"].groupby("month")["kwh"].median()
    assert 150 <= months.median() <= 300
    assert set(tables["tax.wages"]["month"]) == {f"2025-{m:02d}" for m in range(1, 13)}
    pensions = tables["social.pensions"]
    assert pensions["amount"].gt(0).all() and tables["tax.wages"]["amount"].gt(0).all()


# --- truth -------------------------------------------------------------------------------------------


def test_truth_fields_present_and_shares_are_shares(truth: dict[str, Any]) -> None:
    assert truth["synthetic"] is True and truth["year"] == 2025 and truth["seed"] == SEED
    assert "property income" in truth["definitions"]["disposable_income_proxy"]
    for view in ("raw", "as_linked"):
        doc = truth[view]
        for key in (
            "household_count",
            "person_count",
            "households_by_village",
            "income_totals",
            "disposable_income_total",
            "per_capita_income",
            "urban_rural_ratio",
            "share_income_100k_500k",
            "share_income_200k_600k",
            "persons_seen",
        ):
            assert key in doc, (view, key)
        for band in ("share_income_100k_500k", "share_income_200k_600k"):
            shares = doc[band]
            values = [shares["county"], shares["urban"], shares["rural"], *shares["by_village"].values()]
            assert all(v is None or 0.0 <= v <= 1.0 for v in values)
            assert shares["county"] is not None
        assert sum(doc["households_by_village"].values()) == doc["household_count"]
    assert truth["raw"]["person_count"] == PERSONS
    assert truth["floating_population"]["in_register"] == 0
    assert truth["floating_population"]["in_tax_wages"] == truth["floating_population"]["persons"]
    assert truth["raw"]["persons_seen"] == PERSONS + truth["floating_population"]["persons"]
    assert set(truth["data_quality"]) == set(CONNECTORS)


def test_as_linked_differs_from_raw_where_defects_exist(truth: dict[str, Any]) -> None:
    raw, linked = truth["raw"], truth["as_linked"]
    lost = truth["data_quality"]["register"]["invalid_id_persons"]
    assert linked["person_count"] == raw["person_count"] - lost
    assert linked["household_count"] <= raw["household_count"]
    assert linked["income_totals"]["wage_income"] < raw["income_totals"]["wage_income"]
    assert linked["disposable_income_total"] != raw["disposable_income_total"]


def _relinked(tables: dict[str, pd.DataFrame], bounds: dict[str, list[int]]) -> dict[str, Any]:
    """The as-linked indicators recomputed from the stores with nothing but `ids.normalize`."""
    register = tables["register.persons"].assign(pid=lambda f: norm(f["id_number"])).dropna(subset=["pid"])
    register = register.drop_duplicates("pid").set_index("pid")
    sources = {
        "wage_income": (tables["tax.wages"], "taxpayer_id", "amount"),
        "business_income": (tables["tax.business_income"], "taxpayer_id", "amount"),
        "pension_income": (tables["social.pensions"], "person_id", "amount"),
        "assistance_income": (tables["civil.assistance"], "id_number", "amount"),
        "personal_contribution": (tables["social.contributions"], "person_id", "personal_contribution"),
    }
    income = pd.Series(0, index=register.index, dtype="int64")
    for measure, (frame, id_column, column) in sources.items():
        per_person = frame[column].astype("int64").groupby(norm(frame[id_column])).sum()
        low, high = bounds[measure]
        clipped = per_person.clip(low, high).reindex(register.index, fill_value=0)
        income += -clipped if measure == "personal_contribution" else clipped
    households = pd.DataFrame(
        {
            "income": income.groupby(register["household_no"]).sum(),
            "size": register.groupby("household_no").size(),
            "urban": register.groupby("household_no")["urban_rural_code"].first().str.startswith("1"),
        }
    )
    urban, rural = households[households["urban"]], households[~households["urban"]]
    return {
        "household_count": len(households),
        "person_count": int(households["size"].sum()),
        "disposable_income_total": int(households["income"].sum()),
        "urban_per_capita": urban["income"].sum() / urban["size"].sum(),
        "rural_per_capita": rural["income"].sum() / rural["size"].sum(),
        "share_100k_500k": households["income"].between(100_000, 500_000, inclusive="left").mean(),
        "share_200k_600k": households["income"].between(200_000, 600_000, inclusive="left").mean(),
    }


def test_as_linked_truth_matches_an_independent_relinking(
    tables: dict[str, pd.DataFrame], truth: dict[str, Any]
) -> None:
    got = _relinked(tables, truth["bounds"])
    linked = truth["as_linked"]
    assert got["household_count"] == linked["household_count"]
    assert got["person_count"] == linked["person_count"]
    assert got["disposable_income_total"] == linked["disposable_income_total"]
    assert got["urban_per_capita"] == pytest.approx(linked["per_capita_income"]["urban"])
    assert got["rural_per_capita"] == pytest.approx(linked["per_capita_income"]["rural"])
    assert got["share_100k_500k"] == pytest.approx(linked["share_income_100k_500k"]["county"])
    assert got["share_200k_600k"] == pytest.approx(linked["share_income_200k_600k"]["county"])


def test_parquet_has_a_row_group_per_month(county: CountySummary) -> None:
    meta = pq.ParquetFile(county.out / "utility" / "electricity.parquet").metadata
    assert meta.num_row_groups == 12


# --- server-backed stores ----------------------------------------------------------------------------


def _server_counts(url: str, names: list[str]) -> tuple[dict[str, int], dict[str, list[list[str]]]]:
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        indexes = {n: [i["column_names"] for i in inspector.get_indexes(n)] for n in names}
        with engine.connect() as conn:
            counts = {
                n: conn.execute(sa.select(sa.func.count()).select_from(sa.table(n))).scalar_one()
                for n in names
            }
        return counts, indexes
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_tax_into_postgresql(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    summary = generate_county(tmp_path, persons=1_000, seed=3, tax_url=postgres_url)
    counts, indexes = _server_counts(postgres_url, ["wages", "business_income"])
    assert counts == {
        "wages": summary.rows["tax.wages"],
        "business_income": summary.rows["tax.business_income"],
    }
    # ID and month first, the rest after: the roll-ups read the index alone.
    assert indexes["wages"] == [["taxpayer_id", "month", "employer_code", "amount"]]
    assert load_config(summary.configs["tax"]).config.source.url == postgres_url
    assert not (tmp_path / "tax.db").exists()
    # A second run replaces the tables instead of appending to them.
    again = generate_county(tmp_path, persons=1_000, seed=3, tax_url=postgres_url)
    assert _server_counts(postgres_url, ["wages"])[0]["wages"] == again.rows["tax.wages"]


@pytest.mark.mariadb
def test_social_into_mariadb(tmp_path: Path, mariadb_url: str) -> None:  # noqa: F811
    summary = generate_county(tmp_path, persons=1_000, seed=3, social_url=mariadb_url)
    names = ["contributions", "pensions", "occupations"]
    counts, indexes = _server_counts(mariadb_url, names)
    assert counts == {n: summary.rows[f"social.{n}"] for n in names}
    assert indexes["contributions"] == [["person_id", "month", "personal_contribution"]]
    assert indexes["occupations"] == [["person_id", "occupation_major", "occupation_medium"]]
    assert load_config(summary.configs["social"]).config.source.url == mariadb_url
    # Stray spaces survive the load: the connector, not the store, cleans them.
    engine = sa.create_engine(mariadb_url)
    try:
        with engine.connect() as conn:
            padded = conn.execute(
                sa.text("SELECT COUNT(*) FROM pensions WHERE person_id LIKE ' %'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert padded > 0
