"""The Prune page's two-stage readout: a slow model shows a provisional first readout (its
examples and 95% interval), refined in place to the quick figures; the digits demos behave as
before (no provisional stage)."""
from __future__ import annotations

from core.ground import formatting as fmt
from tests.helpers.app import metric, new_app, ok, workspace


def _provisional(at) -> list[str]:
    return [c.value for c in at.caption if "Provisional" in c.value]


def test_a_digits_demo_shows_the_quick_figures_with_no_provisional_stage():
    at = new_app("digits_cnn")
    at.slider(key="global_sparsity").set_value(0.5).run()
    ok(at)
    ws = workspace(at)
    assert not _provisional(at)
    assert ws._metrics_key(ws.plan, "glimpse") not in ws._metrics  # no first readout was made
    assert metric(at, "Accuracy") == fmt.pct(ws.metrics("quick", latency=False).accuracy)


def test_a_slow_model_is_refined_in_place_to_the_quick_figures(monkeypatch):
    import core.workspace.live as live

    monkeypatch.setattr(live, "SLOW_QUICK_SECONDS", -1.0)  # every quick forward counts as slow
    at = new_app("digits_cnn")
    at.slider(key="global_sparsity").set_value(0.6).run()
    ok(at)
    ws = workspace(at)
    first = ws._metrics[ws._metrics_key(ws.plan, "glimpse")]  # the first readout was made and shown first
    assert first.provisional and first.n == len(ws.evalset.quick_index) // 10
    assert not _provisional(at)  # then replaced by the quick figures
    assert metric(at, "Accuracy") == fmt.pct(ws.metrics("quick", latency=False).accuracy)


def test_the_provisional_readout_says_its_examples_and_interval(monkeypatch):
    import app.panels
    import core.workspace.live as live

    monkeypatch.setattr(live, "SLOW_QUICK_SECONDS", -1.0)
    monkeypatch.setattr(app.panels, "refine_ui", lambda ws, m, base, pending: (m, base))  # stop at stage one
    monkeypatch.setattr(app.panels, "latency_ui", lambda ws, pending: None)  # (it computes the quick figures)
    at = new_app("digits_cnn")
    at.slider(key="global_sparsity").set_value(0.7).run()
    ok(at)
    ws = workspace(at)
    m = ws.first_readout()
    (note,) = _provisional(at)
    lo, hi = m.interval
    assert f"Provisional: {m.n} examples" in note and f"95% interval of accuracy {fmt.pct(lo)}-{fmt.pct(hi)}" in note
    assert metric(at, "Accuracy") == fmt.pct(m.accuracy)
    assert any(f"figures on the glimpse subset ({m.n} examples)" in c.value for c in at.caption)
