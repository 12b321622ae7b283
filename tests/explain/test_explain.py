"""What an edit changed: changed predictions against a direct computation, confusion
difference, CKA divergence, and the CLI's JSON."""
from __future__ import annotations

import json

import pytest
import torch

from core.prune import Prune
from core.workspace import Workspace
from tests.helpers.cli import run


@pytest.fixture(scope="module")
def pruned():
    ws = Workspace("digits_cnn")
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    return ws


def test_changed_predictions_are_exactly_where_the_argmax_differs(pruned):
    ch = pruned.changes("full")
    x, _ = pruned.evalset.subset("full")
    with torch.inference_mode():
        differs = (pruned.model(x).argmax(1) != pruned.base(x).argmax(1)).nonzero().flatten().tolist()
    rows = ch.changed()
    assert sorted(r["index"] for r in rows) == differs and differs
    drops = [r["drop"] for r in rows]
    assert drops == sorted(drops, reverse=True)
    assert all(r["label"] == 3 or 3 in (r["base_pred"], r["pred"]) for r in ch.changed(cls=3))


def test_the_confusion_difference_moves_what_changed(pruned):
    ch = pruned.changes("quick")
    delta = ch.confusion_delta()
    assert sum(map(sum, delta)) == 0  # every example is counted once in each matrix
    assert sum(abs(v) for row in delta for v in row) <= 2 * len(ch.changed())
    assert sum(delta[i][i] for i in range(len(delta))) == \
        sum(p == t for p, t in zip(ch.pred, ch.labels)) - sum(p == t for p, t in zip(ch.base_pred, ch.labels))


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet", "digits_vit"])
def test_cka_of_the_base_against_itself_is_one_at_every_layer(name):
    rows = Workspace(name).divergence()
    assert rows and all(r["cka"] == pytest.approx(1.0, abs=1e-4) for r in rows)


def test_a_pruned_model_departs_from_the_base_with_depth(pruned):
    ckas = [r["cka"] for r in pruned.divergence()]
    assert ckas[0] > ckas[-1] and all(c is not None and 0 <= c <= 1.0001 for c in ckas)


def test_cli_explain_prints_changed_confusion_delta_and_divergence(capsys, tmp_path):
    plan = tmp_path / "p.json"
    code, _, err = run(capsys, "prune", "digits_cnn", "--granularity", "channel", "--ratio", "0.5",
                       "--no-latency", "--save-plan", str(plan), "--json")
    assert code == 0, err
    code, out, err = run(capsys, "explain", "digits_cnn", "--plan", str(plan), "--limit", "5", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert len(got["changed"]) == 5 and got["n_changed"] >= 5
    assert set(got["changed"][0]) == {"index", "label", "base_pred", "base_conf", "pred", "conf"}
    assert len(got["confusion_delta"]) == 10 and got["divergence"][0]["layer"] == "features.0.0"


def test_the_coupled_group_of_a_residual_channel_holds_every_conv_and_batchnorm_on_the_stream():
    from core.explain import coupled_group

    ws = Workspace("digits_resnet")
    g = coupled_group(ws.base, "channel", "stem.0", 3, ws.ctx)
    got = {(r["layer"], r["role"]) for r in g["layers"]}
    stream = {("stem.0", "out"), ("stem.1", "out"), ("layers.0.conv2", "out"), ("layers.0.bn2", "out"),
              ("layers.1.conv2", "out"), ("layers.1.bn2", "out"), ("layers.0.conv1", "in"), ("layers.1.conv1", "in")}
    assert stream <= got, stream - got
    assert all(r["indices"] == [3] for r in g["layers"])


def test_the_output_layer_has_no_unit_to_remove():
    from core.errors import PrunescopeError
    from core.explain import coupled_group

    ws = Workspace("digits_cnn")
    with pytest.raises(PrunescopeError, match="no prunable channel units"):
        coupled_group(ws.base, "channel", "head.2", 0, ws.ctx)


def test_top_activating_examples_are_the_argmax_of_the_unit_activation():
    from core.explain import unit_activations

    ws = Workspace("digits_cnn")
    r = ws.unit_report("features.1.0", 5, "channel", top=3)
    x, _ = ws.evalset.subset("quick")
    acts = unit_activations(ws.base, "features.1.0", 5, x, "channel")
    best = int(acts.argmax())
    assert r["top"][0]["index"] == ws.evalset.quick_index.tolist()[best]
    assert r["top"][0]["activation"] == pytest.approx(float(acts.max()))
    assert set(r["scores"]) >= {"l1", "taylor", "wanda"} and r["removed"] is None


def test_cli_unit_reports_top_examples_scores_and_the_group(capsys, tmp_path):
    plan = tmp_path / "p.json"
    run(capsys, "prune", "digits_resnet", "--granularity", "channel", "--ratio", "0.5", "--no-latency",
        "--save-plan", str(plan), "--json")
    code, out, err = run(capsys, "unit", "digits_resnet", "--plan", str(plan), "--layer", "stem.0", "--unit", "3",
                         "--json")
    assert code == 0, err
    got = json.loads(out)
    assert len(got["top"]) == 12 and isinstance(got["removed"], bool)
    assert any(r["layer"] == "stem.1" for r in got["coupled"]["layers"])
    code, _, err = run(capsys, "unit", "digits_resnet", "--layer", "stem.0", "--unit", "999")
    assert code == 2 and "has 32 channels" in err


def test_input_gradient_maps_have_the_image_shape_and_leave_the_model_untouched(pruned):
    before = {k: v.clone() for k, v in pruned.model.state_dict().items()}
    r = pruned.attribution_pair(5)
    assert r["base_map"].shape == (8, 8) and r["map"].shape == (8, 8)
    assert float(r["base_map"].sum()) > 0 and float(r["map"].sum()) > 0
    assert all(p.grad is None for p in pruned.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in pruned.model.state_dict().items())


def test_the_receptive_box_of_a_first_conv_is_its_kernel_around_the_peak():
    from core.explain import receptive_box

    ws = Workspace("digits_resnet", "cpu")
    x = ws.evalset.quick()[0][7]
    b = receptive_box(ws.base, "stem.0", 4, x)
    with torch.inference_mode():
        fmap = ws.base.stem[0](x[None])[0, 4]
    r, c = divmod(int(torch.argmax(fmap)), fmap.shape[1])
    assert (b["row"], b["col"]) == (r, c)
    h, w = x.shape[1:]
    # a 3x3 convolution with padding 1: the rows and columns next to the peak (where the input is not zero)
    assert max(0, r - 1) <= b["top"] <= r <= b["bottom"] <= min(h - 1, r + 1)
    assert max(0, c - 1) <= b["left"] <= c <= b["right"] <= min(w - 1, c + 1)
    deeper = receptive_box(ws.base, "layers.3.conv2", 0, x)
    assert deeper["bottom"] - deeper["top"] > b["bottom"] - b["top"]  # deeper layers see more of the input
    assert receptive_box(ws.base, "head.2", 0, x) is None  # not a feature map


def test_layer_order_is_the_order_a_forward_runs_the_layers():
    from core.explain import layer_order

    ws = Workspace("digits_resnet", "cpu")
    order = [r["layer"] for r in layer_order(ws.base, ws.evalset.quick()[0])]
    assert order[:2] == ["stem.0", "stem.1"] and order[-1] == "head.2"
    # the shortcut of block 2 runs after its second convolution (out + shortcut(x))
    assert order.index("layers.2.shortcut.0") > order.index("layers.2.conv2")


def test_grad_cam_weights_the_last_feature_map_by_its_mean_gradients(pruned):
    from core.explain import grad_cam, last_feature_map

    ws = pruned
    x = ws.evalset.x[3]
    assert last_feature_map(ws.base, x) == "features.2.2"  # the last module with an (N, C, H, W) output
    cam = grad_cam(ws.base, x, 4)
    assert cam.shape == x.shape[1:] and (cam >= 0).all()
    # by hand: the same feature map and gradient, weighted and summed
    acts = {}
    h = ws.base.features[2][2].register_forward_hook(lambda m, a, o: acts.setdefault("a", o))
    with torch.enable_grad():
        out = ws.base(x[None].clone().requires_grad_(True))
        (g,) = torch.autograd.grad(out[0, 4], acts["a"])
    h.remove()
    want = torch.relu((g[0].mean((1, 2))[:, None, None] * acts["a"][0].detach()).sum(0))
    want = torch.nn.functional.interpolate(want[None, None], size=x.shape[1:], mode="bilinear",
                                           align_corners=False)[0, 0]
    assert torch.allclose(cam, want, atol=1e-6)
    r = ws.attribution_pair(3, "gradcam")
    assert r["method"] == "gradcam" and r["map"].shape == r["base_map"].shape == x.shape[1:]
    assert not any(p.grad is not None for p in ws.base.parameters())  # the shared base is only read


def test_grad_cam_refuses_a_model_without_feature_maps():
    from core.errors import PrunescopeError
    from core.explain import grad_cam

    ws = Workspace("digits_mlp", "cpu")
    with pytest.raises(PrunescopeError, match="Grad-CAM needs a convolutional feature map"):
        grad_cam(ws.base, ws.evalset.x[0], 1)
