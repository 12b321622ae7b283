"""One threshold, followed from the slider through the plan, the step's report, the
histogram line and the metrics: every view reads the report, none recomputes it."""
from __future__ import annotations

import pytest

from core.ground import formatting as fmt
from core.prune import Prune
from tests.helpers.app import handle_args, metric, new_app, workspace


def test_slider_threshold_equals_report_histogram_line_and_metrics():
    at = new_app("digits_mlp")
    at.selectbox(key="layer").set_value("layers.3").run()
    at.slider(key="global_sparsity").set_value(0.6).run()
    assert not at.exception and not at.error
    ws = workspace(at)
    (step,) = ws.plan.steps
    assert isinstance(step, Prune) and step.sparsity == 0.6
    (report,) = ws.reports
    t = report.thresholds["layers.3"]
    assert t == report.global_threshold and report.threshold_unit == "|w|"
    # the histogram's handle draws the report's threshold (at -t and +t: symmetric) and the
    # layer's pruned fraction its slider shows
    args = handle_args(at, "digits_mlp:weight:layers.3")
    assert args["at"] == pytest.approx(t, rel=1e-12) and args["symmetric"]
    assert args["value"] == at.slider(key="ov_digits_mlp_layers.3").value
    assert handle_args(at, "digits_mlp:sparsity")["at"] == pytest.approx(t, rel=1e-12)
    # the caption names the same threshold in its unit, and the sparsity the metrics show
    m = ws.metrics()
    assert m.sparsity == pytest.approx(report.pruned / report.total, abs=1e-9)
    assert metric(at, "Sparsity") == fmt.pct(m.sparsity)
    assert any(f"|w| < {t:.4g}" in c.value and fmt.pct(m.sparsity) in c.value for c in at.caption)


def test_structured_table_and_histogram_read_the_report():
    at = new_app("digits_cnn")
    at.selectbox(key="prune_granularity").set_value("channel").run()
    at.slider(key="global_sparsity").set_value(0.4).run()
    at.selectbox(key="layer").set_value("features.1.0").run()
    assert not at.exception and not at.error
    ws = workspace(at)
    report = ws.reports[-1]
    (table,) = [d.value for d in at.dataframe if list(d.value.columns) == ["unit", "score", "status"]]
    pruned = sorted(table.loc[table["status"] == "pruned", "unit"].tolist())
    assert pruned == sorted(report.removed["features.1.0"])
    assert len(pruned) == report.units["features.1.0"][0] > 0
    args = handle_args(at, "digits_cnn:channel:features.1.0")
    assert args["at"] == pytest.approx(report.thresholds["features.1.0"]) and not args["symmetric"]
