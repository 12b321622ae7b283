import pytest
import torch

from core.errors import PlanError
from core.plan import ApplyContext, Plan, PlanCache, apply
from core.prune import LayerOverride, Prune
from core.sources.bases import load_base
from tests.helpers.models import DEMO_MODELS


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_base_is_unchanged_and_replay_is_identical(name):
    base = load_base(name)
    before = _snapshot(base)
    plan = Plan(name, (Prune(sparsity=0.5), Prune(threshold=0.05)))
    a = apply(plan, base)
    b = apply(plan, base)
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k]), f"base changed at {k}"
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), f"replay differs at {k}"
    assert a is not base


def test_prefix_cache_reuses_the_prefix():
    cache = PlanCache()
    plan = Plan("digits_mlp", (Prune(sparsity=0.3), Prune(sparsity=0.5)))
    apply(plan, cache=cache)
    moved = Plan("digits_mlp", (Prune(sparsity=0.3), Prune(sparsity=0.6)))
    apply(moved, cache=cache)
    assert cache.hits == 1


def test_cached_and_uncached_results_agree():
    cache = PlanCache()
    p1 = Plan("digits_mlp", (Prune(sparsity=0.3), Prune(sparsity=0.5)))
    apply(p1, cache=cache)
    p2 = Plan("digits_mlp", (Prune(sparsity=0.3), Prune(sparsity=0.6)))
    x, y = apply(p2, cache=cache), apply(p2)
    for a, b in zip(x.parameters(), y.parameters()):
        assert torch.equal(a, b)


def test_a_step_that_does_not_fit_names_the_step():
    plan = Plan("digits_mlp", (Prune(sparsity=0.2), Prune(layers=(LayerOverride("features.9", sparsity=0.5),))))
    with pytest.raises(PlanError, match=r"step 2 \(prune weight by l1: overrides only, 1 layer override\(s\)\)"):
        apply(plan)


def test_calibration_batch_is_seeded_and_fixed():
    ctx = ApplyContext("digits_mlp")
    x1, y1 = ctx.calibration(0)
    x2, _ = ApplyContext("digits_mlp").calibration(0)
    x3, _ = ctx.calibration(1)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert len(torch.unique(y1)) == 10


def test_empty_plan_is_the_base():
    assert apply(Plan("digits_mlp")) is load_base("digits_mlp")
