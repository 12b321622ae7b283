"""Issue 22: a slider value outside its range, sent by a client, leaves the plan as it was
(Streamlit falls back to the widget's default; the default 0 once removed the prune step)."""
from __future__ import annotations

import pytest

from tests.helpers.app import new_app, ok, workspace


@pytest.mark.parametrize("bad", [1.5, -0.2])
def test_an_out_of_range_global_sparsity_leaves_the_plan_as_it_was(bad):
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    ok(at)
    ws = workspace(at)
    plan, history = ws.plan, len(ws.history)
    assert len(plan.steps) == 1 and plan.steps[0].sparsity == pytest.approx(0.5)
    at.slider(key="global_sparsity").set_value(bad).run()
    ok(at)
    assert ws.plan == plan and len(ws.history) == history
    assert at.slider(key="global_sparsity").value == pytest.approx(0.5)
