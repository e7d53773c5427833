"""The console's SVG charts escape every label (a village name is text, never markup) and mark their
intervals; its tables and downloads are the shared frames and workbooks of `tests/test_outputs.py`."""

from __future__ import annotations

from gateway.console import charts


def test_charts_escape_their_labels_and_mark_intervals() -> None:
    svg = str(charts.bars([charts.Bar("<script>x</script>", 0.4, 0.3, 0.5)], title="a & b"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a &amp; b" in svg
    assert 'class="err"' in svg and "40.0%" in svg
    curve = str(charts.lorenz([charts.Point(0.5, 0.3, 0.25, 0.35)], title="L", x_label="x", y_label="y"))
    assert 'class="band"' in curve and 'class="diag"' in curve
    line = str(
        charts.line(
            [charts.Point(0, 1.6, 1.5, 1.7, "2025-11"), charts.Point(1, 1.55, 1.4, 1.7, "2025-12")],
            title="ratio",
            target=1.5,
            target_label="1.5",
        )
    )
    assert 'class="target"' in line and "2025-12" in line
    assert "style=" not in svg + curve + line  # the CSP allows no inline style
