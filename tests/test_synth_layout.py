"""The synthetic county under another layout: the same data, other connector, dataset, measure, dimension,
table and column names, every one of them in the configurations, the stores and the monitoring file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from connectors.config import load_config
from connectors.service import build_service
from connectors.synth import generate_county
from connectors.synth.layout import RENAMED
from gateway.cli.main import app
from gateway.dev.localfed import connector_names


@pytest.fixture(scope="module")
def counties(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for layout in ("standard", "renamed"):
        out[layout] = tmp_path_factory.mktemp(layout)
        generate_county(out[layout], persons=150, seed=4, layout=layout)
    return out


def _refs(county: Path) -> set[str]:
    refs = set()
    for name in connector_names(county):
        schema = build_service(load_config(county / "connectors" / f"{name}.yaml")).schema
        for ds in schema.datasets:
            refs.add(f"{name}.{ds.name}")
            refs.update(f"{name}.{ds.name}.{f.name}" for f in (*ds.measures, *ds.dimensions))
    return refs


def test_the_renamed_county_has_the_same_data_under_other_names(counties: dict[str, Path]) -> None:
    standard, renamed = counties["standard"], counties["renamed"]
    assert connector_names(standard) == ["register", "civil", "social", "tax", "utility"]
    assert connector_names(renamed) == ["hukou", "civil", "hrss", "tax", "utility"]
    old, new = _refs(standard), _refs(renamed)
    for ref in (
        "tax.payroll.gross_pay",
        "hrss.pension_paid.pension_amount",
        "civil.minimum_living.benefit_yuan",
    ):
        assert ref in new and ref not in old
    assert "tax.wages" in old and not any(r.startswith(("tax.wages", "social.", "register.")) for r in new)
    # Every renamed connector, dataset and field exists, and what is not renamed is the same.
    assert {RENAMED.field_ref(r) if r.count(".") == 2 else RENAMED.dataset(r) for r in old} == new
    # Same seed, same people: the truth does not depend on names (keys and timing aside).
    truths = [json.loads((c / "truth.json").read_text(encoding="utf-8")) for c in (standard, renamed)]
    assert truths[0]["as_linked"] == truths[1]["as_linked"] and truths[0]["raw"] == truths[1]["raw"]
    with sqlite3.connect(renamed / "register.db") as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(hukou_members)")}
    assert {"sfzh", "hu_no", "cun_code"} <= columns and "id_number" not in columns
    assert (renamed / "civil" / "dibao_payments.csv").exists()
    assert (renamed / "keys" / "hrss-approval.key").exists()
    monitoring = yaml.safe_load((renamed / "monitoring.yaml").read_text(encoding="utf-8"))
    assert monitoring["income_terms"][2] == {
        "dataset": "hrss.pension_paid",
        "measure": "pension_amount",
        "sign": 1,
    }
    assert monitoring["village"] == "hukou.residents.community"


def test_the_command_line_refuses_an_unknown_layout(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["synth", "--out", str(tmp_path / "c"), "--persons", "150", "--layout", "odd"]
    )
    assert result.exit_code == 2 and "standard, renamed" in result.output
    assert not (tmp_path / "c").exists()
