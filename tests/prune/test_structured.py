"""Structured pruning: units physically removed with everything coupled to them."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.metrics import count_macs
from core.plan import ApplyContext, Plan, apply
from core.prune import LayerOverride, Prune
from core.prune.structured import compare_criteria, prunable_units, select_units, unit_scores
from core.sources.bases import load_base
from tests.helpers.models import structured_prune

CALIB = 32

# (model, granularity) pairs that cover every demo model and every unit kind
CASES = [("digits_mlp", "neuron"), ("digits_cnn", "channel"), ("digits_resnet", "channel"),
         ("digits_vit", "head"), ("digits_vit", "neuron")]


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _sd_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("model_name, granularity", CASES)
def test_half_of_the_units_removed_forward_works_and_model_shrinks(model_name, granularity):
    ctx = ApplyContext(model_name, calib_size=CALIB)
    base = load_base(model_name)
    before = copy.deepcopy(base.state_dict())
    plan = Plan(model_name, (Prune(criterion="l1", granularity=granularity, sparsity=0.5),))
    pruned = apply(plan, base, ctx=ctx)
    x = ctx.calibration(0)[0]
    with torch.no_grad():
        assert pruned(x).shape == base(x).shape
    assert _params(pruned) < _params(base)
    assert count_macs(pruned, x) < count_macs(base, x)
    # the base is untouched; replaying the plan on a fresh context gives identical weights
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    again = apply(Plan.from_json(plan.to_json()), base, ctx=ApplyContext(model_name, calib_size=CALIB))
    assert _sd_equal(pruned, again)


@pytest.mark.parametrize("criterion", ["taylor", "apoz", "entropy", "variance"])
def test_data_and_outgoing_criteria_prune_resnet_channels_reproducibly(criterion):
    ctx = ApplyContext("digits_resnet", calib_size=CALIB)
    base = load_base("digits_resnet")
    plan = Plan("digits_resnet", (Prune(criterion=criterion, granularity="channel", sparsity=0.4, seed=3),))
    a = apply(plan, base, ctx=ctx)
    b = apply(plan, base, ctx=ApplyContext("digits_resnet", calib_size=CALIB))
    assert _sd_equal(a, b) and _params(a) < _params(base)


def test_heads_are_removed_exactly_like_zeroing_their_proj_columns():
    ctx = ApplyContext("digits_vit", calib_size=CALIB)
    base = load_base("digits_vit")
    step = Prune(criterion="l1", granularity="head", layers=(LayerOverride("blocks.1.attn", sparsity=0.5),))
    pruned = apply(Plan("digits_vit", (step,)), base, ctx=ctx)
    gone = select_units(step, base, ctx).pruned["blocks.1.attn"]
    assert len(gone) == 2 and pruned.blocks[1].attn.num_heads == 2
    assert pruned.blocks[0].attn.num_heads == 4  # other layers untouched
    ref = copy.deepcopy(base)
    hd = ref.blocks[1].attn.head_dim
    with torch.no_grad():
        for h in gone:
            ref.blocks[1].attn.proj.weight[:, h * hd:(h + 1) * hd] = 0
        x = ctx.calibration(0)[0]
        torch.testing.assert_close(pruned(x), ref(x), atol=1e-5, rtol=1e-5)


def test_output_layer_is_never_a_prunable_unit_group():
    assert list(prunable_units(load_base("digits_cnn"), "channel", ApplyContext("digits_cnn"))) == \
        ["features.0.0", "features.1.0", "features.2.0"]
    assert list(prunable_units(load_base("digits_mlp"), "neuron", ApplyContext("digits_mlp"))) == \
        ["layers.1", "layers.3"]  # not the output layer layers.5


def test_threshold_that_asks_for_everything_keeps_one_unit_and_warns():
    ctx = ApplyContext("digits_mlp", calib_size=CALIB)
    base = load_base("digits_mlp")
    step = Prune(criterion="l1", granularity="neuron", threshold=1e9)
    sel = select_units(step, base, ctx)
    assert all(len(sel.pruned[n]) == len(sel.scores[n]) - 1 for n in sel.scores)
    assert len(sel.warnings) == len(sel.scores) and "kept 1" in sel.warnings[0]
    m = apply(Plan("digits_mlp", (step,)), base, ctx=ctx)
    assert m.layers[1].out_features == 1 and m(ctx.calibration(0)[0]).shape[1] == 10


def test_global_sparsity_prunes_exactly_that_fraction_of_units():
    ctx = ApplyContext("digits_resnet", calib_size=CALIB)
    base = load_base("digits_resnet")
    sel = select_units(Prune(criterion="l2", granularity="channel", sparsity=0.3), base, ctx)
    assert sel.n_pruned == round(0.3 * sel.n_units)
    # scores are normalised per layer: every layer's mean |score| is 1
    for s in sel.scores.values():
        assert float(s.abs().mean()) == pytest.approx(1.0, rel=1e-5)


def test_override_by_a_coupled_layer_name_prunes_only_that_residual_group():
    ctx = ApplyContext("digits_resnet", calib_size=CALIB)
    base = load_base("digits_resnet")
    units = prunable_units(base, "channel", ctx)
    # layers.3.conv2 adds into the same residual stream as layers.2.conv2 and the shortcut
    step = Prune(criterion="l1", granularity="channel", layers=(LayerOverride("layers.3.conv2", sparsity=0.5),))
    sel = select_units(step, base, ctx)
    (name,) = [n for n, p in sel.pruned.items() if p]
    assert name in units and len(sel.pruned[name]) == units[name] // 2
    m = apply(Plan("digits_resnet", (step,)), base, ctx=ctx)
    assert m.layers[2].conv2.out_channels == m.layers[3].conv2.out_channels == 32
    assert m.layers[2].shortcut[0].out_channels == 32 and m.layers[0].conv1.out_channels == 32


def test_unknown_layer_override_lists_prunable_layers():
    ctx = ApplyContext("digits_cnn", calib_size=CALIB)
    step = Prune(criterion="l1", granularity="channel", layers=(LayerOverride("nope", sparsity=0.5),))
    with pytest.raises(ValueError, match="prunable layers: features.0.0"):
        select_units(step, load_base("digits_cnn"), ctx)


def test_granularity_the_model_lacks_is_a_value_error():
    ctx = ApplyContext("digits_mlp", calib_size=CALIB)
    with pytest.raises(Exception, match="no prunable convolutions"):
        apply(Plan("digits_mlp", (Prune(granularity="channel", sparsity=0.5),)), load_base("digits_mlp"), ctx=ctx)


def test_compare_criteria_gives_jaccard_matrix_and_unit_grid():
    ctx = ApplyContext("digits_cnn", calib_size=CALIB)
    base = load_base("digits_cnn")
    jac, grid = compare_criteria(base, "features.1.0", ["l1", "l2", "random", "taylor"], 0.5, "channel", ctx)
    assert list(jac.index) == ["l1", "l2", "random", "taylor"]
    assert all(jac.loc[c, c] == 1.0 for c in jac.index)
    assert grid.shape == (64, 4) and (grid.sum(axis=0) == 32).all()
    s = unit_scores(base, "features.1.0", "l1", "channel", ctx)
    assert grid["l1"].to_numpy().tolist() == (s < torch.sort(s).values[32]).tolist()


# ---------------------------------------------------------------- extra architectures

class DepthwiseSeparable(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x):
        return self.head(self.pw(self.dw(self.stem(x))))


class DenseStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        a = F.relu(self.c0(x))
        b = torch.cat([a, F.relu(self.c1(a))], 1)
        c = torch.cat([b, F.relu(self.c2(b))], 1)
        return self.head(c.mean((2, 3)))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 16, 3, padding=1)
        self.g = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.c2 = nn.Conv2d(32, 16, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.g(F.relu(self.c0(x))))
        return self.head(F.relu(self.c2(x)).mean((2, 3)))


class Attn(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj(y)


class Encoder(nn.Module):
    def __init__(self, dim=32, heads=8, depth=2):
        super().__init__()
        self.embed = nn.Linear(12, dim)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(nn.ModuleDict(dict(n1=nn.LayerNorm(dim), attn=Attn(dim, heads), n2=nn.LayerNorm(dim),
                                                  fc1=nn.Linear(dim, 2 * dim), fc2=nn.Linear(2 * dim, dim))))
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.embed(x)
        for b in self.blocks:
            x = x + b["attn"](b["n1"](x))
            x = x + b["fc2"](F.gelu(b["fc1"](b["n2"](x))))
        return self.head(x.mean(1))


@pytest.mark.parametrize("factory, shape, granularity", [
    (DepthwiseSeparable, (2, 3, 8, 8), "channel"),
    (DenseStyle, (2, 3, 8, 8), "channel"),
    (Grouped, (2, 3, 8, 8), "channel"),
    (Encoder, (2, 6, 12), "head"),
    (Encoder, (2, 6, 12), "neuron"),
])
def test_extra_architectures_forward_after_pruning(factory, shape, granularity):
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(*shape)
    calib = (x, torch.zeros(shape[0], dtype=torch.long))
    for criterion in ("l1", "taylor"):
        new, sel = structured_prune(model, x[:1], granularity=granularity, criterion=criterion,
                                    sparsity=0.5, calib=calib)
        assert sel.n_pruned > 0
        with torch.no_grad():
            assert new(x).shape == model(x).shape
        assert _params(new) < _params(model)
    if granularity == "head":
        assert sum(b["attn"].num_heads for b in new.blocks) == 8  # half of 2 x 8 heads


# ---------------------------------------------------------------- oracle: Torch-Pruning

class PlainCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                               nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.f(x))


@pytest.mark.parametrize("global_pruning", [False, True])
def test_l1_channels_match_torch_pruning_metapruner(global_pruning):
    """L1 (Li et al.: the filter's own L1 norm) = TP's MagnitudeImportance(p=1) scoring
    the group's first layer; normaliser "mean" = our per-layer normalisation."""
    import torch_pruning as tp

    torch.manual_seed(0)
    model = PlainCNN().eval()
    x = torch.randn(1, 3, 8, 8)
    ratio = 0.5
    oracle = copy.deepcopy(model)
    imp = tp.importance.MagnitudeImportance(p=1, group_reduction="first", normalizer="mean")
    pruner = tp.pruner.MetaPruner(oracle, x, importance=imp, pruning_ratio=ratio, global_pruning=global_pruning,
                                  ignored_layers=[oracle.head[2]])
    pruner.step()
    if global_pruning:
        kw = dict(sparsity=ratio)
    else:
        kw = dict(layers=tuple(LayerOverride(n, sparsity=ratio) for n in ("f.0", "f.3", "f.6")))
    ours, _ = structured_prune(model, x, granularity="channel", criterion="l1", **kw)
    assert [m.out_channels for m in ours.f if isinstance(m, nn.Conv2d)] == \
        [m.out_channels for m in oracle.f if isinstance(m, nn.Conv2d)]
    assert _sd_equal(ours, oracle)


@pytest.mark.parametrize("model_name, layer, bns", [
    ("digits_cnn", "features.1.0", ["features.1.1"]),
    ("digits_resnet", "stem.0", ["stem.1", "layers.0.bn2", "layers.1.bn2"]),  # a residual group
])
def test_removed_channels_equal_zeroing_their_batchnorm_outputs(model_name, layer, bns):
    ctx = ApplyContext(model_name, calib_size=CALIB)
    base = load_base(model_name)
    step = Prune(criterion="l1", granularity="channel", layers=(LayerOverride(layer, sparsity=0.25),))
    pruned = apply(Plan(model_name, (step,)), base, ctx=ctx)
    gone = select_units(step, base, ctx).pruned[layer]
    ref = copy.deepcopy(base)
    mods = dict(ref.named_modules())
    with torch.no_grad():
        for bn in bns:
            mods[bn].weight[gone] = 0
            mods[bn].bias[gone] = 0
        x = ctx.calibration(0)[0]
        torch.testing.assert_close(pruned(x), ref(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- CLI

def test_cli_prune_channels_by_l1_ratio_returns_metrics_and_saves_a_replayable_plan(capsys, tmp_path):
    import json

    from core.cli import main

    plan_path = tmp_path / "p.json"
    code = main(["prune", "digits_cnn", "--granularity", "channel", "--criterion", "l1", "--ratio", "0.5",
                 "--save-plan", str(plan_path), "--json", "--no-latency", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    d = json.loads(out)
    base = load_base("digits_cnn")
    assert d["params"] < _params(base) and d["shapes_changed"] is True
    assert d["structured"]["pruned_units"] == d["structured"]["units"] // 2
    assert d["plan"]["steps"][0]["granularity"] == "channel"
    assert main(["evaluate", "digits_cnn", "--plan", str(plan_path), "--json", "--no-latency",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == d["params"]


def test_cli_prune_rejects_an_unknown_granularity(capsys):
    from core.cli import main

    assert main(["prune", "digits_cnn", "--granularity", "filters", "--ratio", "0.5"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("model, granularity", [("digits_cnn", "channel"), ("digits_resnet", "channel"),
                                                ("digits_vit", "neuron"), ("digits_mlp", "neuron")])
def test_round_to_keeps_widths_that_are_multiples_of_it(model, granularity):
    from core.prune.masks import prunable_layers

    plan = Plan(model).then(Prune(criterion="l1", granularity=granularity, sparsity=0.3, round_to=8))
    pruned, base = apply(plan), apply(Plan(model))
    changed = 0
    for name, layer in prunable_layers(pruned).items():
        out = layer.weight.shape[0]
        if out != prunable_layers(base)[name].weight.shape[0]:
            changed += 1
            assert out % 8 == 0, (name, out)
    assert changed > 0


def test_round_to_is_for_units_not_weights():
    from core.errors import StepError

    with pytest.raises(StepError, match="round_to applies to neurons, channels and heads"):
        Prune(criterion="l1", granularity="weight", sparsity=0.5, round_to=8)
