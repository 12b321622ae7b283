import copy
import math

import pytest
import torch
from torch.nn.utils import prune as torch_prune

from core.masks import apply_weight_prune, prunable_layers, select_threshold, sparsity_at, step_thresholds
from core.models import build_model
from core.plan import LayerOverride, Prune
from tests.conftest import DEMO_MODELS, small_mlp


def _oracle_masks(model, amount):
    m = copy.deepcopy(model)
    params = [(mod, "weight") for mod in prunable_layers(m).values()]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
    return {n: mod.weight_mask.bool() for n, mod in prunable_layers(m).items()}


@pytest.mark.parametrize("name", DEMO_MODELS)
@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_global_magnitude_masks_equal_torch_global_unstructured(name, sparsity):
    model = build_model(name)
    ours = apply_weight_prune(Prune(sparsity=sparsity), model)
    oracle = _oracle_masks(model, sparsity)
    differ = total = 0
    for n, mod in prunable_layers(ours).items():
        kept = mod.weight != 0
        differ += int((kept != oracle[n]).sum())
        total += kept.numel()
    assert differ <= 2, f"{differ} of {total} weights differ (ties aside at most a couple)"


def test_select_threshold_prunes_exactly_k_on_random_scores():
    g = torch.Generator().manual_seed(1)
    scores = {f"l{i}": torch.rand(1000 + 37 * i, generator=g) * (i + 1) for i in range(5)}
    total = sum(v.numel() for v in scores.values())
    for s in (0.0, 0.01, 0.25, 0.5, 0.9, 0.999, 1.0):
        t = select_threshold(scores, list(scores), s)
        below = sum(int((v < t).sum()) for v in scores.values())
        assert below == round(s * total), (s, below)


def test_threshold_and_sparsity_convert_both_ways():
    w = torch.randn(10_000, generator=torch.Generator().manual_seed(0)).abs()
    t = select_threshold({"a": w}, ["a"], 0.4)
    assert sparsity_at(w, t) == pytest.approx(0.4, abs=1e-4)


def test_per_layer_override_changes_only_that_layer():
    model = small_mlp()
    g = apply_weight_prune(Prune(sparsity=0.5), model)
    o = apply_weight_prune(Prune(sparsity=0.5, layers=(LayerOverride("3", sparsity=0.9),)), model)
    gl, ol = prunable_layers(g), prunable_layers(o)
    assert float((ol["3"].weight == 0).float().mean()) == pytest.approx(0.9, abs=0.01)
    # the remaining layers share a new global threshold over fewer weights: still half of them
    rest = [n for n in gl if n != "3"]
    zeros = sum(int((ol[n].weight == 0).sum()) for n in rest)
    total = sum(ol[n].weight.numel() for n in rest)
    assert zeros / total == pytest.approx(0.5, abs=0.01)


def test_threshold_step_prunes_weights_below_it():
    model = small_mlp()
    out = apply_weight_prune(Prune(threshold=0.1), model)
    for n, mod in prunable_layers(out).items():
        src = prunable_layers(model)[n].weight
        assert torch.equal(mod.weight == 0, src.abs() < 0.1)


def test_step_thresholds_report_what_apply_used():
    model = small_mlp()
    step = Prune(sparsity=0.6, layers=(LayerOverride("1", threshold=0.05),))
    th = step_thresholds(step, model)
    assert th["1"] == 0.05
    assert len({v for k, v in th.items() if k != "1"}) == 1


def test_override_of_unknown_layer_names_prunable_layers():
    with pytest.raises(ValueError, match="not prunable layers; prunable: 1, 3, 5"):
        apply_weight_prune(Prune(layers=(LayerOverride("nope", sparsity=0.5),)), small_mlp())


def test_sparsity_zero_and_one():
    model = small_mlp()
    assert all(torch.equal(a.weight, b.weight) for a, b in
               zip(prunable_layers(apply_weight_prune(Prune(sparsity=0.0), model)).values(),
                   prunable_layers(model).values()))
    out = apply_weight_prune(Prune(sparsity=1.0), model)
    assert all(int(torch.count_nonzero(m.weight)) == 0 for m in prunable_layers(out).values())


def test_non_magnitude_criterion_uses_generic_scores():
    model = small_mlp()
    out = apply_weight_prune(Prune(criterion="random", sparsity=0.5, seed=3), model)
    z = sum(int((m.weight == 0).sum()) for m in prunable_layers(out).values())
    n = sum(m.weight.numel() for m in prunable_layers(out).values())
    assert z / n == pytest.approx(0.5, abs=0.01)
    assert math.isfinite(z)
