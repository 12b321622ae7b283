"""Layer surgery: blocks, cut / paste / compose steps, least-squares bridges, heal."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from core import surgery as S
from core.errors import ModelError, PlanError
from core.plan import ApplyContext, Plan, apply
from core.recover import Heal
from core.recover import training as T
from core.sources.bases import load_base
from core.sources.models import build_model
from core.workspace import Workspace


def _sd_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def resnet_ws():
    return Workspace("digits_resnet", "cpu")


@pytest.fixture(scope="module")
def cnn_ws():
    return Workspace("digits_cnn", "cpu")


def _acc(ws: Workspace, model: nn.Module) -> float:
    x, y = ws.evalset.quick()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


# --------------------------------------------------------------------- blocks
def test_list_blocks_gives_shapes_params_and_macs_of_resnet_blocks(resnet_ws):
    blocks = S.list_blocks(resnet_ws.base, resnet_ws.ctx.calibration(0)[0], model_name="digits_resnet")
    assert [b.name for b in blocks] == ["layers.0", "layers.1", "layers.2", "layers.3"]
    assert blocks[2].in_shape == (32, 32, 32) and blocks[2].out_shape == (64, 16, 16)
    assert blocks[0].params == sum(p.numel() for p in resnet_ws.base.layers[0].parameters())
    assert all(b.macs > 0 for b in blocks)


def test_default_container_finds_longest_repeated_children_without_a_spec():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])

    assert S.default_container(Encoder()) == "encoder.layer"
    assert S.default_container(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))) == ""


def test_a_container_that_is_not_sequential_is_refused(resnet_ws):
    with pytest.raises(ValueError, match="nn.Sequential"):
        S.list_blocks(resnet_ws.base, resnet_ws.ctx.calibration(0)[0], container="layers.0")


# --------------------------------------------------------------------- cut
def test_cutting_a_shape_preserving_residual_block_keeps_accuracy_near_base(resnet_ws):
    base_acc = _acc(resnet_ws, resnet_ws.base)
    m = S.Cut(("layers.3",)).build(resnet_ws.base, resnet_ws.ctx)[0]
    names = [n for n, _ in m.layers.named_children()]
    assert "3" not in names and names[:3] == ["0", "1", "2"]
    assert isinstance(m.layers[-1], S.Bridge) and m.layers[-1].is_identity  # identity where shapes match
    out = m(resnet_ws.evalset.quick()[0][:8])
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    assert _acc(resnet_ws, m) >= base_acc - 0.03


def test_least_squares_bridge_beats_a_random_init_bridge_where_shapes_differ(resnet_ws):
    m = S.Cut(("layers.2",), bridge="lstsq").build(resnet_ws.base, resnet_ws.ctx)[0]
    bridge = m.layers.bridge
    assert bridge.fitted and bridge.in_shape == (32, 32, 32) and bridge.out_shape == (64, 16, 16)
    torch.manual_seed(0)
    rnd = S.make_bridge(bridge.in_shape, bridge.out_shape, "test")
    m_rand = copy.deepcopy(m)
    m_rand.layers.bridge = rnd
    acc_fit, acc_rand = _acc(resnet_ws, m), _acc(resnet_ws, m_rand)
    assert acc_fit > acc_rand + 0.3, (acc_fit, acc_rand)


def test_build_never_changes_its_input(cnn_ws):
    before = {k: v.clone() for k, v in cnn_ws.base.state_dict().items()}
    S.Cut(("features.1",)).build(cnn_ws.base, cnn_ws.ctx)
    S.Paste("features.2", at=0, adapter="lstsq").build(cnn_ws.base, cnn_ws.ctx)
    after = cnn_ws.base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, S.Bridge) for m in cnn_ws.base.modules())


def test_identity_bridge_over_a_shape_change_fails_and_the_workspace_keeps_its_plan(cnn_ws):
    plan, hist = cnn_ws.plan, list(cnn_ws.history)
    with pytest.raises(PlanError, match=r"features\.0 -> features\.2.*\(32, 8, 8\) -> \(64, 4, 4\)"):
        cnn_ws.add_step(S.Cut(("features.1",), bridge="identity"))
    assert cnn_ws.plan == plan and cnn_ws.history == hist


def test_impossible_spatial_mismatch_names_the_seam_and_shapes():
    with pytest.raises(ValueError, match=r"layers\.1 -> x.*12x12.*\(32, 32, 32\) -> \(64, 12, 12\)"):
        S.make_bridge((32, 32, 32), (64, 12, 12), "layers.1 -> x")
    with pytest.raises(ValueError, match="token counts"):
        S.make_bridge((16, 64), (8, 64), "a -> b")


def test_impossible_paste_leaves_the_workspace_plan_unchanged(resnet_ws):
    plan = resnet_ws.plan
    # ViT tokens (16, 64) cannot be fed from (32, 32, 32) feature maps
    with pytest.raises(PlanError, match=r"digits_vit:blocks\.0.*\(32, 32, 32\)"):
        resnet_ws.add_step(S.Paste("blocks.0", source="digits_vit", at=1))
    assert resnet_ws.plan == plan


def test_unknown_block_lists_the_valid_blocks(cnn_ws):
    with pytest.raises(ValueError, match=r"features\.7.*features\.0"):
        S.Cut(("features.7",)).build(cnn_ws.base, cnn_ws.ctx)


@pytest.mark.parametrize("kwargs, match", [
    (dict(blocks=()), "cut.blocks must be a list of 1 to"),
    (dict(blocks=("layers.0", "features.1")), "one container"),
    (dict(blocks=("layers.0",), bridge="magic"), "bridge must be one of"),
    (dict(blocks=("layers.0", "layers.0")), "no repeats"),
])
def test_cut_validates_its_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.Cut(**kwargs)


# --------------------------------------------------------------------- paste / compose
@pytest.mark.slow
def test_paste_from_a_donor_runs_and_leaves_the_donor_untouched(resnet_ws):
    donor_before = {k: v.clone() for k, v in load_base("digits_cnn").state_dict().items()}
    m = S.Paste("features.2", source="digits_cnn", at=3).build(resnet_ws.base, resnet_ws.ctx)[0]
    names = [n for n, _ in m.layers.named_children()]
    assert "digits_cnn_2" in names and names.count("3") == 1
    assert any(isinstance(b, S.Bridge) and b.fitted for b in m.layers)
    x = resnet_ws.evalset.quick()[0][:8]
    assert m(x).shape == (8, 10)
    donor_after = load_base("digits_cnn").state_dict()
    assert all(torch.equal(donor_before[k], donor_after[k]) for k in donor_before)
    assert _acc(resnet_ws, m) > 0.5  # the stitched model still classifies


def test_duplicating_a_block_makes_an_independent_copy(resnet_ws):
    m = S.Paste("layers.3", at=4).build(resnet_ws.base, resnet_ws.ctx)[0]
    names = [n for n, _ in m.layers.named_children()]
    assert names == ["0", "1", "2", "3", "bridge", "3_copy"]
    assert m.layers.bridge.is_identity
    assert m.layers[3].conv1.weight.data_ptr() != m.layers[5].conv1.weight.data_ptr()
    assert _acc(resnet_ws, m) > 0.5


def test_compose_from_two_models_runs_and_exports(resnet_ws):
    step = S.Compose((S.Segment("self", ("layers.0", "layers.1")),
                      S.Segment("digits_cnn", ("features.1", "features.2"))))
    m = step.build(resnet_ws.base, resnet_ws.ctx)[0]
    x = resnet_ws.evalset.quick()[0][:4]
    out = m(x)
    assert out.shape == (4, 10)
    assert torch.allclose(torch.jit.script(m)(x), out, atol=1e-5)
    ep = torch.export.export(m, (x,))
    assert torch.allclose(ep.module()(x), out, atol=1e-5)


@pytest.mark.slow
def test_plans_with_cut_paste_and_compose_replay_to_identical_weights_after_json():
    ctx = ApplyContext("digits_cnn")
    plan = Plan("digits_cnn", (
        S.Cut(("features.1",), bridge="lstsq", seed=3),
        S.Paste("features.2", at=1),
        S.Paste("layers.1", source="digits_resnet", at=0, adapter="lstsq"),
        S.Compose((S.Segment("self", ("features.digits_resnet_1", "features.0")),), adapter="lstsq"),
    ))
    again = Plan.from_json(plan.to_json())
    assert again == plan
    a = apply(plan, ctx=ctx)
    b = apply(again, build_model("digits_cnn"), ctx=ApplyContext("digits_cnn"))
    assert _sd_equal(a, b)


# --------------------------------------------------------------------- least squares
def test_ridge_lstsq_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g)
    w = torch.randn(6, 3, generator=g)
    y = x @ w + torch.tensor([1.0, -2.0, 0.5])
    w_hat, b_hat = S.ridge_lstsq(x, y, ridge=1e-8)
    assert torch.allclose(w_hat, w, atol=1e-4) and torch.allclose(b_hat, torch.tensor([1.0, -2.0, 0.5]), atol=1e-4)


# --------------------------------------------------------------------- heal
@pytest.fixture(scope="module")
def cut_cnn():
    ctx = ApplyContext("digits_cnn")
    return S.Cut(("features.1",), bridge="lstsq").build(load_base("digits_cnn"), ctx)[0], ctx


def test_heal_trains_only_the_adapters_and_reports_before_after(cut_cnn):
    m, ctx = cut_cnn
    healed, info = Heal(steps=20, lr=3e-3, seed=1).run(m, ctx)
    changed = {k for k, v in healed.state_dict().items() if not torch.equal(v, m.state_dict()[k])}
    assert changed and all(k.startswith("features.bridge.") for k in changed)
    assert info["steps_run"] == 20 and len(info["losses"]) == 20 and not info["stopped"]
    assert set(info["before"]) == {"loss", "accuracy"}
    assert info["after"]["loss"] < info["before"]["loss"]


def test_heal_with_neighbours_also_trains_the_blocks_beside_the_adapter(cut_cnn):
    m, ctx = cut_cnn
    params = S.heal_parameters(m, "adapters+neighbours")
    assert any(k.startswith("features.0.") for k in params) and any(k.startswith("features.2.") for k in params)


def test_heal_without_adapters_is_a_clear_error():
    with pytest.raises(ValueError, match="no trainable adapters"):
        Heal(steps=1).run(load_base("digits_cnn"), ApplyContext("digits_cnn"))


def test_stopped_heal_equals_the_heal_step_replayed_for_the_steps_it_ran(cut_cnn):
    m, ctx = cut_cnn
    calls = []
    healed, info = Heal(steps=50, seed=2).run(m, ctx, progress=lambda d, n, loss: calls.append(d),
                                              should_stop=lambda: len(calls) >= 7)
    assert info["stopped"] and info["steps_run"] == 7 and calls == list(range(1, 8))
    T._MEMO.clear()
    replay = Heal(steps=7, seed=2).build(m, ApplyContext("digits_cnn"))[0]
    assert _sd_equal(healed, replay)


def test_heal_step_in_a_plan_round_trips_and_replays():
    plan = Plan("digits_cnn", (S.Cut(("features.1",)), Heal(steps=5, lr=1e-3, train="adapters+neighbours")))
    again = Plan.from_json(plan.to_json())
    assert again == plan
    a = apply(plan, ctx=ApplyContext("digits_cnn"))
    T._MEMO.clear()
    b = apply(again, build_model("digits_cnn"), ctx=ApplyContext("digits_cnn"))
    assert _sd_equal(a, b)


# --------------------------------------------------------------------- CLI
def _cli(capsys, *argv):
    import json

    from core.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 and "--json" in argv else out.out), out.err


def test_cli_blocks_lists_shapes_params_macs_influence_and_drop_one(capsys):
    code, rows, _ = _cli(capsys, "blocks", "digits_cnn", "--json", "--device", "cpu")
    assert code == 0 and [r["name"] for r in rows] == ["features.0", "features.1", "features.2"]
    for r in rows:
        assert {"name", "in_shape", "out_shape", "params", "macs", "influence", "drop_one_accuracy"} <= set(r)
    assert rows[1]["in_shape"] == [32, 8, 8] and rows[1]["out_shape"] == [64, 4, 4]
    assert rows[1]["influence"] is None and 0 <= rows[2]["drop_one_accuracy"] <= 1


def test_cli_cut_then_paste_saves_plans_that_replay(capsys, tmp_path):
    p1, p2 = tmp_path / "cut.json", tmp_path / "paste.json"
    code, d, _ = _cli(capsys, "cut", "digits_cnn", "--block", "features.1", "--bridge", "lstsq",
                      "--save-plan", str(p1), "--json", "--no-latency", "--device", "cpu")
    assert code == 0 and d["shapes_changed"] and d["plan"]["steps"][0]["op"] == "cut"
    code, d2, _ = _cli(capsys, "paste", "digits_cnn", "--plan", str(p1), "--block", "layers.3",
                       "--from", "digits_resnet", "--at", "2", "--save-plan", str(p2), "--json", "--no-latency",
                       "--device", "cpu")
    assert code == 0 and [s["op"] for s in d2["plan"]["steps"]] == ["cut", "paste"]
    code, d3, _ = _cli(capsys, "evaluate", "digits_cnn", "--plan", str(p2), "--json", "--no-latency",
                       "--device", "cpu")
    assert code == 0 and d3["accuracy"] == d2["accuracy"] and d3["params"] == d2["params"]


@pytest.mark.parametrize("argv, msg", [
    (["cut", "digits_cnn", "--block", "features.1", "--bridge", "identity"], "(32, 8, 8) -> (64, 4, 4)"),
    (["cut", "digits_cnn", "--block", "features.9"], "not in the model"),
    (["paste", "digits_cnn", "--block", "features.0", "--at", "9"], "paste.at must be in [0, 3]"),
    (["paste", "digits_cnn", "--block", "blocks.0", "--from", "nope", "--at", "0"], "unknown model 'nope'"),
    (["paste", "digits_resnet", "--block", "blocks.0", "--from", "digits_vit", "--at", "1"], "cannot bridge"),
])
def test_cli_impossible_surgery_exits_2_with_one_line(capsys, argv, msg):
    code, _, err = _cli(capsys, *argv, "--json", "--no-latency", "--device", "cpu")
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_a_channels_last_seam_is_bridged_over_height_and_width():
    """Issue 22: a Swin stage cut read (N, H, W, C) as (N, C, H, W): "spatial size 28x192 ->
    14x384 is not a whole-number down- or up-scaling"."""
    from core.surgery.bridges import make_bridge, seam_bridge

    tv = pytest.importorskip("torchvision")
    m = tv.models.swin_t(weights=None).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = m.features[:4](x)  # after stage 2: (N, 28, 28, 192), channels last
        target = m.features[4](a)  # after the patch merging: (N, 14, 14, 384)
    assert a.shape[1:] == (28, 28, 192) and target.shape[1:] == (14, 14, 384)
    bridge, seam = seam_bridge(a, target, "lstsq", True, "features.4", 0)
    assert bridge.channels_last and bridge(a).shape == target.shape and seam.fit_error < 1.0
    same = make_bridge((28, 28, 192), (28, 28, 384), "x")  # a channels-first reading would upsample W
    assert same.channels_last and same(a).shape == (2, 28, 28, 384)
    assert not make_bridge((16, 8, 8), (32, 4, 4), "x").channels_last  # (C, H, W) as before
    with pytest.raises(ModelError, match=r"read as channels-last \(H, W, C\)"):
        make_bridge((28, 28, 192), (10, 10, 384), "x")
