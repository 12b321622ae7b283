"""Recovery of models whose output is a nest of tensors (issue 24): distillation over the judged
leaves against the base's, label losses on the headline leaf (pixel cross-entropy ignoring 255)."""
import pytest
import torch
import torch.nn.functional as F

from core.errors import ModelError
from core.plan import ApplyContext, Plan, apply
from core.prune import Prune
from core.recover import Finetune
from core.recover.losses import label_loss, nest_distill_loss, nest_figure
from core.recover.training import finetune
from core.sources.bases import load_base
from tests.helpers.nest_models import images, pyramid, register_nest, segmenter, two_heads
from tests.helpers.nest_models import unregister_nest as unregister


@pytest.fixture
def heads():
    name = register_nest("nest_heads_recover_test", two_heads, task="classification")
    yield name
    unregister(name)


@pytest.fixture
def seg():
    name = register_nest("nest_seg_recover_test", segmenter, output="dense")
    yield name
    unregister(name)


def test_the_pixel_cross_entropy_leaves_out_label_255():
    out = {"out": torch.randn(2, 5, 4, 4, generator=torch.Generator().manual_seed(0)), "aux": torch.zeros(2, 5, 4, 4)}
    y = torch.randint(0, 5, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    y[:, 0] = 255
    keep = y != 255
    want = F.cross_entropy(out["out"].permute(0, 2, 3, 1)[keep], y[keep])
    assert torch.allclose(label_loss(out, y), want)


def test_dense_distillation_is_a_per_pixel_kl_over_every_judged_class_map():
    g = torch.Generator().manual_seed(0)
    s = {"out": torch.randn(2, 5, 4, 4, generator=g), "aux": torch.randn(2, 5, 4, 4, generator=g)}
    t = {"out": torch.randn(2, 5, 4, 4, generator=g), "aux": torch.randn(2, 5, 4, 4, generator=g)}

    def kl(a, b):  # KL(b || a) per pixel, averaged over examples and pixels
        return F.kl_div(F.log_softmax(a, 1), F.log_softmax(b, 1), log_target=True, reduction="none").sum(1).mean()

    both = (kl(s["out"], t["out"]) + kl(s["aux"], t["aux"])) / 2
    assert torch.allclose(nest_distill_loss(s, t, 1.0, dense=True), both)
    assert torch.allclose(nest_distill_loss(s, t, 1.0, judged=["out"], dense=True), kl(s["out"], t["out"]))
    assert float(nest_distill_loss(t, t, 2.0, dense=True)) == pytest.approx(0.0, abs=1e-6)


def test_feature_distillation_is_zero_only_at_the_base_and_names_its_leaves():
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(3, 8, 4, 4, generator=g), torch.randn(3, 16, 2, 2, generator=g))
    assert float(nest_distill_loss(t, t, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(nest_distill_loss((t[0] * 0.5, t[1]), t, 1.0)) > 0.1
    what, value = nest_figure(t, t)
    assert what == "output cosine with the base (mean over 2 leaves: 0, 1)" and value == pytest.approx(1.0)
    assert nest_figure({"out": torch.ones(1, 3, 2, 2)}, {"out": torch.ones(1, 3, 2, 2)}, dense=True)[0] == \
        "pixel agreement with the base"


def test_distillation_of_a_pruned_segmenter_brings_it_back_towards_the_base(seg):
    ctx = ApplyContext(seg, calib_size=16)
    pruned = apply(Plan(seg, (Prune(sparsity=0.8),)), load_base(seg), ctx=ctx)
    m, info = finetune(pruned, ctx, Finetune(loss="distill", steps=30, lr=3e-3, batch_size=16, mode="eval"))
    assert info["measure"] == "pixel agreement with the base"
    assert info["after"]["loss"] < 0.5 * info["before"]["loss"]
    assert info["after"]["accuracy"] > info["before"]["accuracy"] + 0.03  # pixel agreement with the base
    assert set(m(images(2))) == {"out", "aux"}
    pruned_zero = [mod.weight == 0 for mod in pruned.modules() if isinstance(mod, torch.nn.Conv2d)]
    trained = [mod.weight for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert all(bool((w[z] == 0).all()) for w, z in zip(trained, pruned_zero))  # masks kept


@pytest.mark.parametrize("loss", ["labels", "both", "distill"])
def test_a_two_headed_classifier_trains_on_labels_and_distillation(heads, loss):
    ctx = ApplyContext(heads, calib_size=16)
    pruned = apply(Plan(heads, (Prune(sparsity=0.5),)), load_base(heads), ctx=ctx)
    m, info = finetune(pruned, ctx, Finetune(loss=loss, steps=20, lr=3e-3, batch_size=16))
    assert info["losses"][-1] < info["losses"][0]
    if loss == "labels":
        assert info["measure"] == "accuracy"
    else:
        assert info["measure"] == "output cosine with the base (mean over 2 leaves: out, aux)"


def test_predictions_on_a_nest_of_features_are_refused_with_what_works():
    name = register_nest("nest_pyramid_recover_test", pyramid)
    try:
        with pytest.raises(ModelError, match="outputs a nest of outputs judged by cosine.*use loss='distill'"):
            finetune(load_base(name), ApplyContext(name, calib_size=16), Finetune(loss="predictions", steps=1))
    finally:
        unregister(name)


def test_predictions_of_a_segmenter_are_its_per_pixel_classes(seg):
    ctx = ApplyContext(seg, calib_size=16)
    m, info = finetune(segmenter(seed=3), ctx, Finetune(loss="predictions", steps=5, lr=1e-3, batch_size=8))
    assert info["steps_run"] == 5 and all(torch.isfinite(torch.tensor(info["losses"])))
