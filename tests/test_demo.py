"""`make demo` end to end on a small county: the monthly pack through the live federation, every DP
figure printed beside the county's as-linked truth, and the audit log exported and verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.dev import demo


@pytest.mark.slow
def test_the_demo_prints_the_monthly_pack_with_intervals_and_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.json"
    demo.run_demo(tmp_path / "work", persons=2_000, fresh=True, once=True, json_out=out)
    printed = capsys.readouterr().out
    for title in ("Households by disposable income band", "Urban–rural ratio", "Gini", "coverage", "Early"):
        assert title in printed
    assert "verified" in printed and "95% interval" in printed
    doc = json.loads(out.read_text())
    assert doc["pack"] == "monthly" and doc["epsilon"] == "1"
    figures = [f for i in doc["indicators"] for f in i["figures"]]
    assert len(figures) > 100
    # The demo adds the synthetic county's truth beside each figure (the gateway itself never does).
    assert sum(f["exact"] is not None for f in figures) > 0.95 * len(figures)
    truth = json.loads((tmp_path / "work" / "county" / "truth.json").read_text())
    pack = truth["as_linked"]["monthly_pack"]["indicators"]
    keys = {(n, t["figure"], t["label"], t["group"]) for n, rows in pack.items() for t in rows}
    assert {
        (i["indicator"], f["figure"], f["label"], f["group"]) for i in doc["indicators"] for f in i["figures"]
    } <= keys
