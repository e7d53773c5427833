"""`fedgate connector check` as a dry run, and `fedgate connector quality`: printed locally, exit codes."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from connector_fixture import Department, make_department
from cryptography.hazmat.primitives import serialization
from dbservers import postgres_url  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from connectors.cli import connector_app
from connectors.config import load_config
from connectors.protocol import fingerprint, load_private_key
from connectors.state import AlreadyServed, ConnectorState

runner = CliRunner()


def _edit(dept: Department, edit: Any) -> None:
    doc = yaml.safe_load(dept.config_path.read_text())
    edit(doc)
    dept.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _check(dept: Department, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(connector_app, ["check", "--config", str(dept.config_path), "--json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, json.loads(result.stdout)


def _errors(report: dict[str, Any]) -> list[str]:
    found = report["findings"] + [f for d in report["datasets"] for f in d["findings"]]
    return [f["message"] for f in found if f["level"] == "error"]


def test_a_sound_configuration_passes_with_the_trial_figures_and_key(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    code, report = _check(dept, "--end", "2025-06", "--months", "6")
    assert code == 0 and report["ok"] and _errors(report) == []
    key = load_private_key(load_config(dept.config_path).config.signing_key_file.read_bytes()).public_key()
    assert report["fingerprint"] == fingerprint(key)
    wages = report["datasets"][0]
    assert wages["period_read_as"] == "period column month (text, read as text_yyyy_mm)"
    assert report["months"] == ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06"]
    # A: Jan-Mar clean, Apr legacy, May sloppy; B every month; C in June; four invalid rows in February.
    assert wages["rows_per_month"] == {
        "2025-01": 2,
        "2025-02": 6,
        "2025-03": 2,
        "2025-04": 2,
        "2025-05": 2,
        "2025-06": 2,
    }
    assert wages["rows"] == 16 and wages["entities"] == 3
    assert wages["invalid_ids"] == 4 and wages["legacy_ids"] == 1
    assert wages["outside_codelist"] == {"district": 1}
    income = next(m for m in wages["measures"] if m["name"] == "wage_income")
    assert (income["maximum"], income["above"]) == (300_000, 1)  # B: six months of 50,000


def test_schema_is_printed_without_touching_the_state(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    result = runner.invoke(
        connector_app, ["check", "--config", str(dept.config_path), "--end", "2025-12", "--json", "--schema"]
    )
    assert result.exit_code == 0
    decoder = json.JSONDecoder()
    report, end = decoder.raw_decode(result.stdout)
    schema = json.loads(result.stdout[end:])
    assert schema["signing_key"] == report["public_key"] and schema["datasets"][0]["name"] == "wages"
    assert not (load_config(dept.config_path).config.state_dir).exists()


def test_an_id_column_with_no_valid_ids_fails(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    _edit(dept, lambda d: d["datasets"][0]["entity"].update(column="district"))
    code, report = _check(dept, "--end", "2025-12")
    assert code == 1 and not report["ok"]
    assert any("only 0% of the values in ID column 'district'" in e for e in _errors(report))


def test_a_period_matching_none_of_the_months_fails(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "csv")
    code, report = _check(dept, "--end", "2023-06")
    assert code == 1
    assert report["datasets"][0]["rows_per_month"] == {"2023-04": 0, "2023-05": 0, "2023-06": 0}
    assert any("matches none of the months 2023-04..2023-06" in e for e in _errors(report))


def test_a_declared_format_the_data_contradicts_fails(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "parquet")
    _edit(dept, lambda d: d["datasets"][0]["period"].update(format="text_yyyymm"))
    code, report = _check(dept, "--end", "2025-12")
    assert code == 1
    assert any(
        "period column 'month' (text)" in e and "set period.format: text_yyyy_mm" in e
        for e in _errors(report)
    )


def test_a_public_key_as_signing_key_file_is_one_clear_line(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    key_file = load_config(dept.config_path).config.signing_key_file
    public = load_private_key(key_file.read_bytes()).public_key()
    key_file.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    result = runner.invoke(connector_app, ["check", "--config", str(dept.config_path), "--end", "2025-12"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "holds a public key; it must hold the connector's Ed25519 private key" in result.output


def test_a_refused_port_names_the_cause_and_never_the_password(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    _edit(dept, lambda d: d["source"].update(url="postgresql+psycopg://tax:Sup3rSecret@127.0.0.1:1/tax"))
    code, report = _check(dept)
    assert code == 1
    text = json.dumps(report)
    assert "Sup3rSecret" not in text
    assert any("connection_refused" in e and "port 1" in e for e in _errors(report))


def test_quality_shows_the_counters_and_recent_failures(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    state = ConnectorState(load_config(dept.config_path).config.state_dir)
    state.record_quality("wages", {"raw_ids": 9, "invalid_ids": 4})
    state.record_failure(
        dataset="wages",
        query_id="q-1",
        code="source_unavailable",
        details={
            "cause": "permission_denied",
            "error_class": "psycopg.InsufficientPrivilege",
            "detail": "x",
            "fix": "y",
        },
    )
    state.reserve(
        query_id="q-in-flight",
        dataset="wages",
        fingerprint="f",
        window="2025",
        epsilon=Decimal("0.1"),
        cap=Decimal(1),
    )
    result = runner.invoke(connector_app, ["quality", "--config", str(dept.config_path), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["datasets"]["wages"]["invalid_ids"] == 4
    assert report["recent_failures"][0]["cause"] == "permission_denied"
    table = runner.invoke(connector_app, ["quality", "--config", str(dept.config_path)])
    assert table.exit_code == 0 and "permission_denied" in table.stdout
    # Reading the report beside a running connector leaves its in-flight reservation alone.
    with pytest.raises(AlreadyServed):
        state.reserve(
            query_id="q-in-flight",
            dataset="wages",
            fingerprint="f",
            window="2025",
            epsilon=Decimal("0.1"),
            cap=Decimal(1),
        )
    state.close()


def test_quality_before_any_state_says_so(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    result = runner.invoke(connector_app, ["quality", "--config", str(dept.config_path)])
    assert result.exit_code == 1 and "no state yet" in result.output


def test_trial_months_default_to_the_last_complete_months() -> None:
    import datetime

    from connectors.dry_run import trial_months

    assert trial_months(None, 3, today=datetime.date(2026, 2, 10)) == ["2025-11", "2025-12", "2026-01"]
    assert trial_months("2025-01", 2) == ["2024-12", "2025-01"]


@pytest.mark.postgres
def test_a_table_the_user_may_not_read_is_named_as_such(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    import secrets

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    dept = make_department(tmp_path, "postgres", db_url=postgres_url)
    role = f"fedgate_r_{secrets.token_hex(4)}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    try:
        url = make_url(postgres_url).set(username=role, password="Sup3rSecret")
        _edit(dept, lambda d: d["source"].update(url=url.render_as_string(hide_password=False)))
        code, report = _check(dept, "--end", "2025-12")
        assert code == 1 and "Sup3rSecret" not in json.dumps(report)
        assert any("permission_denied" in e and "grant it SELECT" in e for e in _errors(report)), _errors(
            report
        )
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()


def test_rows_without_a_period_are_reported(tmp_path: Path) -> None:
    import sqlalchemy as sa

    dept = make_department(tmp_path, "sqlite")
    engine = sa.create_engine(load_config(dept.config_path).config.source.url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE wages SET month = NULL WHERE amount = 7000"))
    engine.dispose()
    code, report = _check(dept, "--end", "2025-06")
    wages = report["datasets"][0]
    assert code == 0 and wages["null_periods"] == 1
    assert wages["rows_per_month"]["2025-06"] == 1  # B only: C's June row has lost its month
    assert any("1 rows have no period" in f["message"] for f in wages["findings"])


def test_check_prints_the_witness_key_auditors_pin(tmp_path: Path) -> None:
    from audit.witnessed import load_witness_key

    dept = make_department(tmp_path, "sqlite")
    result = runner.invoke(
        connector_app,
        ["check", "--config", str(dept.config_path), "--end", "2025-06"],
        env={"COLUMNS": "400"},
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("witness key"))
    given = line.split(": ", 1)[1].strip()
    key = load_private_key(load_config(dept.config_path).config.signing_key_file.read_bytes()).public_key()
    witness = load_witness_key(given)
    assert witness.name == dept.name and witness.public_key.public_bytes_raw() == key.public_bytes_raw()
