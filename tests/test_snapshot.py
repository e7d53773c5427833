"""Connector snapshots: built from the source, reused while it is unchanged, rebuilt when it changes,
read whole by one extract, kept owner-only, and giving exactly what the source itself gives."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml
from connector_fixture import EXPECTED, PERSON_C, Department, make_department, wage_rows
from dbservers import mariadb_url, postgres_url  # noqa: F401 (fixtures)

from connectors.config import LoadedConfig, load_config
from connectors.extract import Extract, Extractor
from connectors.federation_keys import load_keyring
from connectors.protocol import ExtractRequest
from connectors.snapshot import SNAPSHOT_DIR, Snapshot, SnapshotStore
from connectors.sources import Source, open_source
from connectors.sources.memory import MemorySource


def _patch_config(dept: Department, *, source: dict[str, Any] | None = None, **dataset: Any) -> LoadedConfig:
    doc = yaml.safe_load(dept.config_path.read_text())
    doc["source"].update(source or {})
    doc["datasets"][0].update(dataset)
    dept.config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return load_config(dept.config_path)


def _extractors(dept: Department, loaded: LoadedConfig, source: Source) -> tuple[Extractor, Extractor]:
    """(from the source, from a snapshot) over the same source and keys."""
    keyring = load_keyring(dept.keyring_path)
    return (
        Extractor(loaded, source, keyring),
        Extractor(loaded, source, keyring, SnapshotStore(loaded, source)),
    )


def _run(extractor: Extractor, loaded: LoadedConfig, request: ExtractRequest) -> Extract:
    dataset = loaded.config.dataset(request.dataset)
    assert dataset is not None
    return extractor.run(request, dataset)


def _requests(dept: Department) -> list[ExtractRequest]:
    return [
        dept.request("q-snap-00001"),
        dept.request("q-snap-00002", period_start="2025-01", period_end="2025-03"),
        dept.request("q-snap-00003", period_start="2025-06", period_end="2025-06"),
        dept.request("q-snap-00004", period_start="2024-12", period_end="2025-02"),
        # A baseline is carried by the request: fedgate/2 queries take one only for households, and
        # this department has no household mapping, so the person query is carried without it.
        dept.request(
            "q-snap-00005",
            query=dept.query("q-snap-00005"),
            period_start="2025-07",
            period_end="2025-12",
            baseline_start="2025-01",
            baseline_end="2025-06",
        ),
        dept.request("q-snap-00006", measures=(), dimensions=("district",)),
    ]


class _CountingSource(MemorySource):
    """A memory source that counts the roll-ups it is asked for (one per month when building)."""

    def __init__(self, tables: dict[str, pd.DataFrame]) -> None:
        super().__init__(tables)
        self.calls = 0

    def rollup(self, spec):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().rollup(spec)

    def replace(self, name: str, frame: pd.DataFrame) -> None:
        self._tables[name] = frame


# --- the same answer as the source


@pytest.mark.parametrize("kind", ["sqlite", "parquet", "csv"])
def test_a_snapshot_answers_exactly_as_the_source(tmp_path: Path, kind: str) -> None:
    dept = make_department(tmp_path, kind)
    _same_answers(dept)


@pytest.mark.postgres
def test_a_snapshot_answers_exactly_as_a_postgresql_store(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    _same_answers(make_department(tmp_path, "postgres", db_url=postgres_url))


@pytest.mark.mariadb
def test_a_snapshot_answers_exactly_as_a_mariadb_store(tmp_path: Path, mariadb_url: str) -> None:  # noqa: F811
    _same_answers(make_department(tmp_path, "mariadb", db_url=mariadb_url))


def _same_answers(dept: Department) -> None:
    loaded = load_config(dept.config_path)
    source = open_source(loaded.config.source)
    try:
        direct, snapped = _extractors(dept, loaded, source)
        for request in _requests(dept):
            a, b = _run(direct, loaded, request), _run(snapped, loaded, request)
            assert a.snapshot is None and b.snapshot is not None
            assert b.table.num_rows > 0
            assert a.table.to_pylist() == b.table.to_pylist(), request.query_id
            assert (a.quality.out_of_domain, a.quality.missing_household) == (
                b.quality.out_of_domain,
                b.quality.missing_household,
            )
        first = _run(direct, loaded, dept.request("q-snap-00007"))
        got = sorted((r["wage_income"], r["months_paid"]) for r in first.table.to_pylist())
        assert got == sorted(EXPECTED.values())
    finally:
        source.close()


def test_numeric_money_sums_over_months_as_the_database_sums_it(tmp_path: Path) -> None:
    # Cents that add up to exactly half a yuan: a float sum over months could land either side of it.
    dept = make_department(tmp_path, "sqlite")
    url = f"sqlite:///{dept.directory / 'tax.db'}"
    pid = wage_rows()[0]["pid"]
    rows = [
        {"pid": pid, "month": f"2025-{m:02d}", "amount": a, "district": "A"}
        for m, a in [(1, "0.10"), (2, "0.20"), (3, "1000.20"), (4, "0.10"), (5, "0.40"), (6, "2000.50")]
    ]
    engine = sa.create_engine(url)
    pd.DataFrame(rows).to_sql(
        "wages",
        engine,
        if_exists="replace",
        index=False,
        dtype={
            "pid": sa.String(32),
            "month": sa.String(7),
            "district": sa.String(4),
            "amount": sa.Numeric(12, 2),
        },  # type: ignore[dict-item]
    )
    engine.dispose()
    loaded = load_config(dept.config_path)
    source = open_source(loaded.config.source)
    direct, snapped = _extractors(dept, loaded, source)
    for request in _requests(dept)[:4]:
        assert (
            _run(direct, loaded, request).table.to_pylist()
            == _run(snapped, loaded, request).table.to_pylist()
        )
    source.close()


# --- reuse and refresh


def test_a_snapshot_is_reused_while_the_source_is_unchanged(
    dept_memory: tuple[Department, _CountingSource],
) -> None:
    dept, source = dept_memory
    loaded = _patch_config(dept, source={"snapshot_check_seconds": 0})
    _direct, snapped = _extractors(dept, loaded, source)
    first = _run(snapped, loaded, dept.request("q-reuse-0001"))
    built = source.calls
    assert built >= 1
    second = _run(snapped, loaded, dept.request("q-reuse-0002", period_start="2025-02", period_end="2025-04"))
    third = _run(snapped, loaded, dept.request("q-reuse-0003"))
    assert source.calls == built  # checked (checksum unchanged), not read again
    assert first.snapshot == second.snapshot == third.snapshot
    assert first.quality.as_dict() == third.quality.as_dict()  # the build's counts, every time
    assert (first.quality.invalid_ids, first.quality.legacy_ids) == (4, 1)
    # A new extractor over the same state directory reads the file, not the source.
    _d, again = _extractors(dept, loaded, source)
    assert _run(again, loaded, dept.request("q-reuse-0004")).snapshot == first.snapshot
    assert source.calls == built


@pytest.fixture
def dept_memory(tmp_path: Path) -> tuple[Department, _CountingSource]:
    return make_department(tmp_path, "sqlite"), _CountingSource({"wages": pd.DataFrame(wage_rows())})


def test_a_changed_checksum_rebuilds_the_snapshot(dept_memory: tuple[Department, _CountingSource]) -> None:
    dept, source = dept_memory
    loaded = _patch_config(dept, source={"snapshot_check_seconds": 0})
    direct, snapped = _extractors(dept, loaded, source)
    before = _run(snapped, loaded, dept.request("q-chk-00001"))
    frame = pd.DataFrame(wage_rows())
    frame.loc[frame["month"] == "2025-06", "amount"] += 1
    source.replace("wages", frame)
    after = _run(snapped, loaded, dept.request("q-chk-00002"))
    assert after.snapshot != before.snapshot
    assert after.table.to_pylist() == _run(direct, loaded, dept.request("q-chk-00002")).table.to_pylist()


def test_checks_are_spaced_by_the_configured_interval(
    dept_memory: tuple[Department, _CountingSource],
) -> None:
    dept, source = dept_memory
    loaded = _patch_config(dept, source={"snapshot_check_seconds": 3600})
    _direct, snapped = _extractors(dept, loaded, source)
    before = _run(snapped, loaded, dept.request("q-int-00001"))
    frame = pd.DataFrame(wage_rows())
    frame["amount"] += 1
    source.replace("wages", frame)
    # Within the interval the snapshot answers as it is; `connector refresh` takes the change at once.
    assert _run(snapped, loaded, dept.request("q-int-00002")).snapshot == before.snapshot
    store = SnapshotStore(loaded, source)
    dataset = loaded.config.dataset("wages")
    assert dataset is not None
    refreshed = store.refresh(dataset)
    assert refreshed.id != before.snapshot
    assert _run(snapped, loaded, dept.request("q-int-00003")).snapshot == refreshed.id


def _wages_with_batch(url: str, rows: list[dict[str, Any]]) -> None:
    engine = sa.create_engine(url)
    dtype = {
        "pid": sa.String(32),
        "month": sa.String(7),
        "district": sa.String(4),
        "amount": sa.BigInteger(),
        "batch": sa.Integer(),
    }
    pd.DataFrame(rows).to_sql("wages", engine, if_exists="replace", index=False, dtype=dtype)  # type: ignore[arg-type]
    engine.dispose()


@pytest.mark.parametrize(
    "kind",
    [
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_a_new_watermark_rebuilds_and_the_same_one_reuses(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    url = None if kind == "sqlite" else request.getfixturevalue(f"{kind}_url")
    dept = make_department(tmp_path, kind, db_url=url)
    url = url or f"sqlite:///{dept.directory / 'tax.db'}"
    rows = [{**r, "batch": 1} for r in wage_rows()]
    _wages_with_batch(url, rows)
    loaded = _patch_config(dept, source={"snapshot_check_seconds": 0}, watermark="batch")
    source = open_source(loaded.config.source)
    try:
        direct, snapped = _extractors(dept, loaded, source)
        first = _run(snapped, loaded, dept.request("q-wm-000001"))
        assert _run(snapped, loaded, dept.request("q-wm-000002")).snapshot == first.snapshot
        late = {**rows[-1], "pid": PERSON_C, "month": "2025-11", "amount": 1, "batch": 2}
        _wages_with_batch(url, [*rows, late])
        third = _run(snapped, loaded, dept.request("q-wm-000003"))
        assert third.snapshot != first.snapshot
        assert third.table.to_pylist() == _run(direct, loaded, dept.request("q-wm-000003")).table.to_pylist()
        assert sorted(third.table.column("months_paid").to_pylist()) != sorted(
            first.table.column("months_paid").to_pylist()
        )
    finally:
        source.close()


# --- consistency, files, publication


def test_an_extract_during_a_refresh_reads_one_snapshot(
    dept_memory: tuple[Department, _CountingSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    dept, source = dept_memory
    loaded = _patch_config(dept, source={"snapshot_check_seconds": 3600})
    direct, snapped = _extractors(dept, loaded, source)
    request = dept.request(
        "q-cons-00001",
        query=dept.query("q-cons-00001"),
        period_start="2025-07",
        period_end="2025-12",
        baseline_start="2025-01",
        baseline_end="2025-06",
    )
    expected = _run(direct, loaded, request).table
    dataset = loaded.config.dataset("wages")
    assert dataset is not None
    opened = _run(snapped, loaded, dept.request("q-cons-00000")).snapshot
    # Between the query period's roll-up and the baseline's, another process rebuilds from changed data.
    changed = pd.DataFrame(wage_rows())
    changed["amount"] *= 2
    real = Snapshot.rollup
    calls: list[str] = []

    def rollup_then_refresh(self: Snapshot, spec, ds):  # type: ignore[no-untyped-def]
        out = real(self, spec, ds)
        calls.append(self.id)
        if len(calls) == 1:
            source.replace("wages", changed)
            SnapshotStore(loaded, source).refresh(ds)
        return out

    monkeypatch.setattr(Snapshot, "rollup", rollup_then_refresh)
    during = _run(snapped, loaded, request)
    assert calls == [opened, opened] and during.snapshot == opened
    assert during.table.to_pylist() == expected.to_pylist()  # both periods from the snapshot it opened
    monkeypatch.setattr(Snapshot, "rollup", real)
    after = _run(snapped, loaded, request.model_copy(update={"query_id": "q-cons-00002"}))
    assert after.snapshot != opened  # the next extract reads the new one, whole
    assert after.table.column("wage_income").to_pylist() != []


def test_snapshot_files_are_readable_by_their_owner_only(
    dept_memory: tuple[Department, _CountingSource],
) -> None:
    dept, source = dept_memory
    loaded = load_config(dept.config_path)
    _direct, snapped = _extractors(dept, loaded, source)
    _run(snapped, loaded, dept.request("q-mode-0001"))
    root = Path(loaded.config.state_dir) / SNAPSHOT_DIR
    paths = [root, *root.rglob("*")]
    assert any(p.suffix == ".parquet" for p in paths) and any(p.name == "current.json" for p in paths)
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert not [p for p in paths if p.name.endswith(".tmp")]


def test_a_refresh_keeps_the_previous_file_for_readers_and_drops_older(
    dept_memory: tuple[Department, _CountingSource],
) -> None:
    dept, source = dept_memory
    loaded = load_config(dept.config_path)
    dataset = loaded.config.dataset("wages")
    assert dataset is not None
    store = SnapshotStore(loaded, source)
    ids = [store.refresh(dataset).id for _ in range(3)]
    files = sorted(p.stem for p in (Path(loaded.config.state_dir) / SNAPSHOT_DIR / "wages").glob("*.parquet"))
    assert files == sorted(ids[1:])
    info = store.info(dataset)
    assert info is not None and info.id == ids[-1]


def test_a_snapshot_table_has_one_row_per_person_and_month(
    dept_memory: tuple[Department, _CountingSource],
) -> None:
    dept, source = dept_memory
    loaded = load_config(dept.config_path)
    dataset = loaded.config.dataset("wages")
    assert dataset is not None
    snap = SnapshotStore(loaded, source).refresh(dataset)
    table = pq.read_table(Path(loaded.config.state_dir) / SNAPSHOT_DIR / "wages" / f"{snap.id}.parquet")
    frame = table.to_pandas()
    assert not frame.duplicated(subset=["_nid", "_month"]).any()
    # Person A's legacy and sloppy forms became one ID; invalid IDs are not kept.
    assert set(frame["_nid"]) == set(EXPECTED)
    assert snap.info.quality["invalid_ids"] == 4 and snap.info.rows == len(frame)


# --- the running connector: log, schema, quality report, commands


def test_the_connector_names_its_snapshot_in_the_log_and_publishes_only_the_day(tmp_path: Path) -> None:
    import json

    import httpx
    from connector_fixture import signed_call

    from connectors.process import start_connector
    from connectors.protocol import ConnectorSchema
    from connectors.state import ConnectorState

    dept = make_department(tmp_path, "sqlite")
    conn = start_connector(dept.config_path)
    try:
        before = signed_call(conn.url, "/v1/schema", key=dept.gateway_key, connector=dept.name)
        assert ConnectorSchema.model_validate_json(before.content).datasets[0].data_as_of is None
        req = dept.request("q-svc-000001")
        r = signed_call(
            conn.url,
            "/v1/extract",
            key=dept.gateway_key,
            connector=dept.name,
            body=req.body(),
            query_id=req.query_id,
        )
        assert r.status_code == 200
        after = signed_call(conn.url, "/v1/schema", key=dept.gateway_key, connector=dept.name)
        published = ConnectorSchema.model_validate_json(after.content).datasets[0]
        info = SnapshotStore(load_config(dept.config_path), MemorySource({})).info(
            load_config(dept.config_path).config.datasets[0]
        )
        assert info is not None and published.data_as_of == info.data_as_of
        # The public schema carries the day only: no snapshot id, row count or fingerprint.
        assert info.id.encode() not in after.content and b'"rows"' not in after.content
        report = httpx.get(
            conn.url + "/v1/quality", headers={"authorization": f"Bearer {dept.admin_key}"}
        ).json()
        assert report["snapshots"]["wages"]["snapshot"] == info.id
        assert report["snapshots"]["wages"]["skipped_at_build"]["invalid_ids"] == 4
        assert report["datasets"]["wages"]["duplicate_ids"] == 2  # the same counts as a source read
    finally:
        conn.kill()
    state = ConnectorState(load_config(dept.config_path).config.state_dir, read_only=True)
    try:
        entries = [e["entry"] for e in state.log_entries() if e["entry"].get("path") == "/v1/extract"]
    finally:
        state.close()
    assert entries and entries[-1]["snapshot"] == info.id
    assert json.dumps(entries[-1])


def test_refresh_and_check_commands_cover_the_snapshot(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from connectors.cli import connector_app

    dept = make_department(tmp_path, "sqlite")
    runner = CliRunner()
    checked = runner.invoke(connector_app, ["check", "--config", str(dept.config_path), "--json"])
    wages = json.loads(checked.stdout)["datasets"][0]
    assert wages["snapshot"] is None and any("no snapshot yet" in f["message"] for f in wages["findings"])
    refreshed = runner.invoke(connector_app, ["refresh", "--config", str(dept.config_path)])
    assert refreshed.exit_code == 0, refreshed.stdout
    assert "wages:" in refreshed.stdout and "4 invalid IDs" in refreshed.stdout
    checked = runner.invoke(connector_app, ["check", "--config", str(dept.config_path), "--json"])
    wages = json.loads(checked.stdout)["datasets"][0]
    assert wages["snapshot"]["skipped_at_build"] == {"invalid_ids": 4, "bad_values": 0}
    assert wages["snapshot"]["months"] == ["2024-12", "2025-12"]
    unknown = runner.invoke(
        connector_app, ["refresh", "--config", str(dept.config_path), "--dataset", "nope"]
    )
    assert unknown.exit_code == 2 and "no such dataset" in unknown.output
