"""Gradual pruning: the cubic schedule, cumulative amounts reached, a plan that replays."""
from __future__ import annotations

import pytest

from core.errors import StepError
from core.plan import Plan, apply_with_reports
from core.prune import Prune
from core.recover import Finetune, cubic_schedule, gradual_steps


def test_the_cubic_schedule_reaches_the_target_with_shrinking_increments():
    s = cubic_schedule(0.8, 4)
    assert s[-1] == pytest.approx(0.8)
    gaps = [b - a for a, b in zip([0.0] + s, s)]
    assert all(x > y for x, y in zip(gaps, gaps[1:]))


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_gradual_steps_reach_the_target_amount(granularity):
    steps = gradual_steps("l1", granularity, 0.5, 3, Finetune(steps=5))
    assert [type(s) for s in steps] == [Prune, Finetune] * 3
    plan = Plan("digits_cnn")
    for s in steps:
        plan = plan.then(s)
    model, reports = apply_with_reports(plan)
    if granularity == "weight":
        from core.metrics.cost import nonzero_counts
        assert nonzero_counts(model)[2] == pytest.approx(0.5, abs=0.01)
    else:
        base = sum(m.out_channels for m in apply_with_reports(Plan("digits_cnn"))[0].modules()
                   if m.__class__.__name__ == "Conv2d")
        now = sum(m.out_channels for m in model.modules() if m.__class__.__name__ == "Conv2d")
        assert now / base == pytest.approx(0.5, abs=0.05)
    assert Plan.from_json(plan.to_json()) == plan


def test_gradual_steps_refuse_bad_settings():
    with pytest.raises(StepError, match="target must be a fraction"):
        gradual_steps("l1", "weight", 1.0)
    with pytest.raises(StepError, match="increments must be an integer"):
        gradual_steps("l1", "weight", 0.5, 0)
