"""Importance criteria: conformance of every registered criterion on every demo model,
and each criterion's formula on small examples."""
import pytest
import torch
from torch import nn

from core.plan import ApplyContext
from core.prune.criteria import CRITERIA, get_criterion
from core.prune.criteria.magnitude import LAMP
from core.prune.masks import prunable_layers
from core.prune.structured import UNIT_GRANULARITIES, all_unit_scores, prunable_units
from core.sources.bases import clone_model, load_base
from tests.helpers.models import DEMO_MODELS

CALIB = 32  # small calibration batches keep the suite fast


@pytest.fixture(scope="module")
def ctxs():
    return {n: ApplyContext(n, calib_size=CALIB) for n in DEMO_MODELS}


def _unit_granularities(model, ctx):
    out = []
    for g in UNIT_GRANULARITIES:
        if prunable_units(model, g, ctx):
            out.append(g)
    return out


@pytest.mark.parametrize("model_name", DEMO_MODELS)
@pytest.mark.parametrize("criterion", CRITERIA.names())
def test_every_criterion_gives_one_finite_deterministic_score_per_unit(criterion, model_name, ctxs):
    ctx = ctxs[model_name]
    base = load_base(model_name)
    crit_cls = CRITERIA.get(criterion)
    calib = ctx.calibration(0)
    checked = 0
    if "weight" in crit_cls.granularities:
        layers = prunable_layers(base)
        a = get_criterion(criterion, seed=0)(base, layers, "weight", calib)
        b = get_criterion(criterion, seed=0)(base, layers, "weight", calib)
        for n, m in layers.items():
            sa, sb = a[n], b[n]
            assert sa.shape == m.weight.shape, n
            assert torch.isfinite(sa).all(), n
            assert torch.equal(sa, sb), f"{criterion} on {n} is not deterministic"
        checked += 1
    # two private copies: the per-model score cache cannot hide a non-deterministic criterion
    m1, m2 = clone_model(base), clone_model(base)
    for g in _unit_granularities(base, ctx):
        if g not in crit_cls.granularities:
            continue
        units = prunable_units(m1, g, ctx)
        s1 = all_unit_scores(m1, criterion, g, ctx, seed=0)
        s2 = all_unit_scores(m2, criterion, g, ctx, seed=0)
        assert set(s1) == set(units)
        for layer, n in units.items():
            assert s1[layer].shape == (n,), (g, layer)
            assert torch.isfinite(s1[layer]).all(), (g, layer)
            assert torch.equal(s1[layer], s2[layer]), f"{criterion}/{g} on {layer} is not deterministic"
        checked += 1
    assert checked, f"{criterion} was checked at no granularity on {model_name}"


def test_registry_entries_have_description_granularities_and_source():
    for name, cls in CRITERIA.items():
        assert cls.name == name
        assert cls.description and "\n" not in cls.description
        assert cls.__doc__ and len(cls.__doc__) > 40, f"{name} must name its source in the docstring"
        assert set(cls.granularities) <= {"weight", "neuron", "channel", "head"} and cls.granularities
        assert cls.source in ("out", "in")
    assert {"l1", "l2", "random", "largest", "l1_out", "variance", "taylor", "mean_activation", "apoz",
            "wanda", "entropy"} <= set(CRITERIA.names())


def test_l1_keeps_the_flag_masks_relies_on():
    assert CRITERIA.get("l1").scores_are_abs_weight is True


def test_unsupported_granularity_is_a_value_error_naming_it():
    m = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="granularit"):
        get_criterion("variance")(m, prunable_layers(m), "weight")


def test_data_criterion_without_calibration_is_a_value_error():
    m = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="calibration"):
        get_criterion("taylor")(m, prunable_layers(m), "weight")


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()


def test_taylor_is_abs_weight_times_cross_entropy_gradient():
    m = _tiny()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    ref = clone_model(m)
    loss = nn.functional.cross_entropy(ref(x), y)
    loss.backward()
    layers = prunable_layers(m)
    s = get_criterion("taylor")(m, layers, "weight", (x, y))
    for n, mod in dict(ref.named_modules()).items():
        if n in layers:
            torch.testing.assert_close(s[n], (mod.weight * mod.weight.grad).abs().detach())


def test_data_criteria_leave_no_hooks_grads_or_flags_on_the_model():
    m = _tiny()
    for p in m.parameters():
        p.requires_grad_(False)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for c in ("taylor", "wanda", "entropy", "apoz", "mean_activation"):
        all_unit_scores(m, c, "neuron", example=x[:1], calib=(x, y))
    for mod in m.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks and not mod._backward_hooks
    for p in m.parameters():
        assert p.grad is None and not p.requires_grad
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_wanda_weight_scores_are_abs_w_times_input_norm():
    m = _tiny()
    x = torch.randn(20, 6)
    s = get_criterion("wanda")(m, prunable_layers(m), "weight", (x, torch.zeros(20, dtype=torch.long)))
    expected = m[0].weight.abs() * x.norm(dim=0)[None, :]
    torch.testing.assert_close(s["0"], expected.detach())


def test_apoz_and_mean_activation_rank_a_dead_neuron_last():
    m = _tiny()
    with torch.no_grad():
        m[0].bias[2] = -100.0  # neuron 2 never fires
    x = torch.randn(64, 6)
    calib = (x, torch.zeros(64, dtype=torch.long))
    for c in ("apoz", "mean_activation", "entropy"):
        s = all_unit_scores(m, c, "neuron", example=x[:1], calib=calib)["0"]
        assert int(torch.argmin(s)) == 2, c


def test_lamp_matches_its_definition():
    s = torch.tensor([4.0, 1.0, 9.0, 1.0])
    out = LAMP._lamp(s)
    # sorted 1, 1, 4, 9: suffix sums 15, 14, 13, 9 (ties in sort order)
    assert torch.allclose(out[torch.tensor([2])], torch.tensor([1.0]))
    assert torch.allclose(out[0], torch.tensor(4.0 / 13.0))
    assert sorted(out[[1, 3]].tolist()) == pytest.approx([1 / 15, 1 / 14])


def test_largest_inverts_l1_ranking():
    m = _tiny()
    layers = prunable_layers(m)
    l1 = get_criterion("l1")(m, layers, "neuron")["0"]
    big = get_criterion("largest")(m, layers, "neuron")["0"]
    assert torch.equal(torch.argsort(l1), torch.argsort(-big))


def test_outgoing_criteria_read_the_next_layers_columns():
    m = _tiny()
    s = all_unit_scores(m, "l1_out", "neuron", example=torch.zeros(1, 6))["0"]
    expected = m[2].weight.abs().sum(0)
    torch.testing.assert_close(s, expected / expected.mean())


def test_cli_criteria_json_lists_the_registry(capsys):
    import json

    from core.cli import main

    assert main(["criteria", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == CRITERIA.names()
    for r in rows:
        assert set(r) >= {"name", "granularities", "needs_data", "description"}
        assert isinstance(r["needs_data"], bool) and r["granularities"]


def test_importance_figures_split_kept_and_pruned_and_draw_the_threshold():
    import numpy as np
    import pandas as pd

    from core.viz.importance import criteria_grid_figure, importance_histogram_figure, jaccard_heatmap_figure

    s = np.arange(10, dtype=float)
    fig = importance_histogram_figure(s, 3.5, bins=10)
    kept, pruned = fig.data
    assert sum(pruned.y) == 4 and sum(kept.y) == 6
    assert fig.layout.shapes and any(sh.x0 == 3.5 or sh.x1 == 3.5 for sh in fig.layout.shapes)
    jac = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["a", "b"], columns=["a", "b"])
    assert jaccard_heatmap_figure(jac).data[0].z.shape == (2, 2)
    grid = pd.DataFrame({"a": [True, False, True], "b": [False, False, True]})
    assert criteria_grid_figure(grid).data[0].z.shape == (2, 3)


@pytest.mark.parametrize("criterion", ["taylor", "wanda", "lamp", "largest"])
def test_weight_level_prune_step_works_with_non_magnitude_criteria(criterion):
    from core.plan import Plan, apply
    from core.prune import Prune

    ctx = ApplyContext("digits_cnn", calib_size=CALIB)
    m = apply(Plan("digits_cnn", (Prune(criterion=criterion, sparsity=0.5),)), load_base("digits_cnn"), ctx=ctx)
    zeros = sum(int((mod.weight == 0).sum()) for mod in prunable_layers(m).values())
    total = sum(mod.weight.numel() for mod in prunable_layers(m).values())
    assert abs(zeros / total - 0.5) < 0.01


def test_a_criterions_granularities_follow_the_kinds_it_derives_from():
    from core.prune.criteria import UnitCriterion, WeightCriterion

    for name, cls in CRITERIA.items():
        assert ("weight" in cls.granularities) == issubclass(cls, WeightCriterion), name
        assert (set(UNIT_GRANULARITIES) <= set(cls.granularities)) == issubclass(cls, UnitCriterion), name
    assert [n for n, c in CRITERIA.items() if "weight" in c.granularities and c.scores_are_abs_weight] == ["l1"]


def test_a_registered_criterion_of_one_method_prunes_weights_and_units():
    from core.plan import Plan, apply_with_reports
    from core.prune import Prune
    from core.prune.criteria import SummedUnits, register_criterion

    @register_criterion
    class Cubed(SummedUnits):
        """|w|³ per weight, summed per unit (a test criterion)."""

        name = "cubed_test"
        description = "|w|³: magnitude, sharpened."

        def weight_scores(self, name, module, state):
            return module.weight.detach().abs().pow(3)

    try:
        assert Cubed.granularities == ("weight", "neuron", "channel", "head")
        for g in ("weight", "neuron"):
            _, reports = apply_with_reports(Plan("digits_mlp", (Prune(criterion="cubed_test", granularity=g,
                                                                      sparsity=0.5),)))
            assert reports[-1].pruned > 0, g
    finally:
        CRITERIA.unregister("cubed_test")


def test_switching_criterion_keeps_the_amount_a_threshold_pruned():
    from core.plan import Plan, apply_with_reports
    from core.prune import LayerOverride, Prune

    step = Prune(criterion="l1", threshold=0.05, layers=(LayerOverride("layers.3", threshold=0.02),))
    _, reports = apply_with_reports(Plan("digits_mlp", (step,)))
    rep = reports[-1]
    new = step.with_criterion("taylor", rep)
    glob = [pt for n, pt in rep.units.items() if n != "layers.3"]
    assert new.criterion == "taylor" and new.threshold is None
    assert new.sparsity == pytest.approx(sum(p for p, _ in glob) / sum(t for _, t in glob))
    p, t = rep.units["layers.3"]
    assert new.layers == (LayerOverride("layers.3", sparsity=p / t),)
    assert step.with_criterion("l2", rep).sparsity == new.sparsity
    kept = Prune(criterion="l1", sparsity=0.3, seed=2)
    assert kept.with_criterion("random", rep) == Prune(criterion="random", sparsity=0.3, seed=2)
