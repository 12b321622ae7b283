import copy

import pytest
import torch
from torch.nn.utils import prune as torch_prune

from core.errors import ModelError
from core.plan import ApplyContext, Plan, apply_with_reports
from core.prune import LayerOverride, Prune
from core.prune.masks import prunable_layers, select_threshold, weight_prune
from core.prune.thresholds import threshold_for_k
from core.sources.models import build_model
from tests.helpers.models import DEMO_MODELS, small_mlp


def sparsity_at(score, threshold):
    """Fraction of ``score`` strictly below ``threshold``."""
    return float((score < threshold).sum()) / score.numel()


def apply_weight_prune(step, model, ctx=None):
    return weight_prune(step, model, ctx)[0]


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


def test_report_holds_the_thresholds_the_masks_were_cut_at():
    model = small_mlp()
    step = Prune(sparsity=0.6, layers=(LayerOverride("1", threshold=0.05),))
    out, report = weight_prune(step, model)
    assert report.thresholds["1"] == 0.05 and report.threshold_unit == "|w|"
    others = {v for k, v in report.thresholds.items() if k != "1"}
    assert others == {report.global_threshold}
    for name, mod in prunable_layers(out).items():  # every mask is exactly "|w| below the reported threshold"
        src = prunable_layers(model)[name].weight
        assert torch.equal(mod.weight == 0, src.abs() < report.thresholds[name])
        assert report.units[name] == (int((mod.weight == 0).sum()), mod.weight.numel())


def test_report_counts_only_the_weights_this_step_newly_zeroed():
    model = small_mlp()
    first, r1 = weight_prune(Prune(sparsity=0.5), model)
    second, r2 = weight_prune(Prune(sparsity=0.5), first)  # the same amount again removes nothing new
    assert r1.newly_zeroed == r1.pruned > 0
    assert r2.newly_zeroed == 0 and r2.pruned == r1.pruned
    _, r3 = weight_prune(Prune(criterion="random", sparsity=0.5, seed=1), first)
    assert 0 < r3.newly_zeroed < r3.pruned


def test_apply_returns_the_report_of_every_step():
    plan = Plan("digits_mlp", (Prune(sparsity=0.3), Prune(criterion="wanda", sparsity=0.5)))
    model, reports = apply_with_reports(plan, build_model("digits_mlp"), ctx=ApplyContext("digits_mlp"))
    assert [r.op for r in reports] == ["prune", "prune"]
    assert reports[0].threshold_unit == "|w|" and reports[1].threshold_unit == "score"
    zeros = sum(int((m.weight == 0).sum()) for m in prunable_layers(model).values())
    assert reports[1].pruned == zeros


def test_override_of_unknown_layer_names_prunable_layers():
    with pytest.raises(ModelError, match="not prunable layers; prunable: 1, 3, 5"):
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
    # random scores, not magnitude: the pruned set differs from l1's at the same sparsity
    l1 = apply_weight_prune(Prune(sparsity=0.5), model)
    assert any(not torch.equal(a.weight == 0, b.weight == 0)
               for a, b in zip(prunable_layers(out).values(), prunable_layers(l1).values()))


@pytest.mark.parametrize("ties", [False, True])
def test_select_threshold_equals_a_full_sort_on_several_layers(ties):
    g = torch.Generator().manual_seed(7)
    for trial in range(40):
        sizes = torch.randint(1, 4000, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
        scores = {f"l{i}": (torch.randint(0, 30, (n,), generator=g).float() if ties else torch.randn(n, generator=g))
                  for i, n in enumerate(sizes)}
        ordered = torch.sort(torch.cat(list(scores.values()))).values
        for s in (0.0, 0.001, 0.3, 0.5, 0.77, 0.999, 1.0):
            t = select_threshold(scores, list(scores), s)
            assert t == threshold_for_k(ordered, round(s * len(ordered))), (trial, s)


@pytest.mark.parametrize("criterion", ["l1", "random"])
def test_masks_and_counts_equal_a_sort_reference_on_a_pruned_model(criterion):
    model = small_mlp()
    zeroed = apply_weight_prune(Prune(sparsity=0.4), model)  # 40% exact zeros: ties at 0
    for s in (0.2, 0.4, 0.41, 0.9):
        out, report = weight_prune(Prune(criterion=criterion, sparsity=s, seed=2), zeroed)
        for name, mod in prunable_layers(out).items():
            assert report.units[name] == (int((mod.weight == 0).sum()), mod.weight.numel())
        if criterion == "l1":
            w = torch.cat([m.weight.detach().abs().flatten() for m in prunable_layers(zeroed).values()])
            assert report.global_threshold == threshold_for_k(torch.sort(w).values, round(s * w.numel()))
            for name, mod in prunable_layers(out).items():
                src = prunable_layers(zeroed)[name].weight
                assert torch.equal(mod.weight, torch.where(src.abs() >= report.global_threshold, src, 0.0))
