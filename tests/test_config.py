"""Connector configuration: a wrong file fails at start, naming the file, the key and what is expected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from connector_fixture import make_department

from connectors.config import load_config
from connectors.errors import ConfigError
from connectors.service import build_service


def _broken(tmp_path: Path, edit: Any) -> Path:
    dept = make_department(tmp_path, "sqlite")
    doc = yaml.safe_load(dept.config_path.read_text())
    edit(doc)
    dept.config_path.write_text(yaml.safe_dump(doc))
    return dept.config_path


@pytest.mark.parametrize(
    ("edit", "key", "expected"),
    [
        (lambda d: d.pop("policy"), "policy", "Field required"),
        (lambda d: d["datasets"][0].update(table="wages; DROP TABLE x"), "datasets.0.table", "pattern"),
        (
            lambda d: d["datasets"][0]["entity"].update(column="pid OR 1=1"),
            "datasets.0.entity.column",
            "pattern",
        ),
        (
            lambda d: d["datasets"][0]["measures"][0].update(bounds=[10, 1]),
            "datasets.0.measures.0",
            "lower bound",
        ),
        (lambda d: d["datasets"][0]["measures"][0].update(rollup="avg"), "rollup", "'sum', 'count' or 'max'"),
        (lambda d: d["datasets"][0]["dimensions"][0].pop("codelist"), "datasets.0.dimensions.0", "codelist"),
        (lambda d: d["policy"].update(approval_public_key="rsa:abc"), "approval_public_key", "ed25519:"),
        (lambda d: d["policy"].update(max_epsilon_per_query="50"), "policy", "must not exceed"),
        (lambda d: d.update(colour="blue"), "colour", "Extra inputs"),
        (
            lambda d: d["datasets"][0]["period"].update(format="year_month"),
            "datasets.0.period",
            "needs month_column",
        ),
        (
            lambda d: d["datasets"][0]["period"].update(format="date", month_column="m"),
            "datasets.0.period",
            "does not apply",
        ),
        (lambda d: d["datasets"][0]["period"].update(format="yyyy/mm"), "period.format", "'date'"),
        (lambda d: d["datasets"][0]["period"].update(timezone="Mars/Olympus"), "datasets.0.period", "IANA"),
        (lambda d: d["datasets"][0]["measures"][0].update(scale=9), "measures.0.scale", "less than or equal"),
    ],
)
def test_wrong_configuration_names_file_key_and_expectation(
    tmp_path: Path, edit: Any, key: str, expected: str
) -> None:
    path = _broken(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and key in text and expected in text


def test_missing_codelist_file_and_missing_column_fail_at_start(tmp_path: Path) -> None:
    path = _broken(tmp_path / "a", lambda d: d["datasets"][0]["dimensions"][0].update(codelist="nowhere.csv"))
    with pytest.raises(ConfigError, match=r"nowhere\.csv"):
        load_config(path)
    path = _broken(tmp_path / "b", lambda d: d["datasets"][0]["measures"][0].update(column="salary"))
    with pytest.raises(ConfigError, match=r"datasets\.wages.*no column salary"):
        build_service(load_config(path))


def test_codelist_must_have_a_code_header(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    (dept.directory / "districts.csv").write_text("A,North\nB,South\n")
    with pytest.raises(ConfigError, match="headed 'code'"):
        load_config(dept.config_path)


def test_serve_with_a_wrong_configuration_exits_with_the_reason(tmp_path: Path) -> None:
    path = _broken(tmp_path, lambda d: d["policy"].update(max_epsilon_per_query="-1"))
    proc = subprocess.run(
        [sys.executable, "-m", "connectors", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "max_epsilon_per_query" in proc.stderr and str(path.name) in proc.stderr


def test_toml_is_accepted(tmp_path: Path) -> None:
    dept = make_department(tmp_path, "sqlite")
    doc = yaml.safe_load(dept.config_path.read_text())
    toml_path = dept.directory / "tax.toml"
    # JSON objects become TOML inline tables once ':' is '='; quoted keys and JSON strings are valid TOML.
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in doc.items() if not isinstance(v, (dict, list)))
    tables = "\n".join(
        f"{k} = {json.dumps(v).replace(': ', ' = ').replace('{', '{ ').replace('}', ' }')}"
        for k, v in doc.items()
        if isinstance(v, (dict, list))
    )
    toml_path.write_text(body + "\n" + tables + "\n")
    loaded = load_config(toml_path)
    assert loaded.config.name == "tax"
