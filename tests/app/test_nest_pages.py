"""Pages on a model of several outputs (issue 24): the Prune page's cards and leaf table say what
they measure; the Explain page says what it cannot show and shows what it can."""
import pytest

from core.plan import Plan
from core.prune import Prune
from tests.helpers.app import new_app, ok, workspace
from tests.helpers.nest_models import register_nest, segmenter, two_heads, unregister_nest


def _segmenter_with_masks(own_home, tmp_path, name: str):
    """The small segmenter registered as ``name`` with label masks that are its own class map (its
    mean IoU is 100%), on 48 random images."""
    import numpy as np
    import torch

    from core.sources.entries import register

    x = torch.randn(48, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = segmenter()(x)["out"].argmax(1)
    np.savez(tmp_path / "seg.npz", x=x.numpy(), y=y.numpy().astype(np.uint8))
    spec = register(name, factory="tests.helpers.nest_models:segmenter",
                    data={"kind": "tensors", "path": str(tmp_path / "seg.npz")})
    own_home.append(spec.name)
    return spec


@pytest.fixture
def nest_models():
    register_nest("app_two", two_heads, output="nest")
    register_nest("app_seg", segmenter, output="dense")
    yield
    unregister_nest("app_two")
    unregister_nest("app_seg")


def test_prune_page_cards_and_leaf_table_of_a_nest(nest_models):
    at = new_app("app_two")
    workspace(at).set_plan(Plan("app_two", (Prune(sparsity=0.5),)))
    at.run()
    ok(at)
    labels = [m.label for m in at.metric]
    assert "Output cosine (2 leaves)" in labels and "Output error" in labels and "Fidelity" not in labels
    assert any(lab.startswith("Worst leaf: ") for lab in labels)
    table = next(df.value for df in at.dataframe if "leaf" in df.value.columns)
    assert list(table["leaf"]) == ["out", "aux"] and (table["cosine with the base"] < 1).all()


def test_prune_page_of_a_segmenter_reads_pixel_agreement(nest_models):
    at = new_app("app_seg")
    ok(at)
    labels = [m.label for m in at.metric]
    assert "Pixel agreement" in labels and "Accuracy" not in labels
    assert next(m.value for m in at.metric if m.label == "Pixel agreement") == "100.0%"  # the base against itself


def test_explain_page_of_a_nest_shows_divergence_and_units(nest_models):
    at = new_app("app_two")
    workspace(at).set_plan(Plan("app_two", (Prune(sparsity=0.5),)))
    at.switch_page("views/explain.py").run()
    ok(at)
    assert any("judged leaf by leaf" in i.value for i in at.info)
    assert any(c.value.startswith("Lowest CKA: ") for c in at.caption)  # the divergence chart's reading
    assert not any("Changed predictions" in m.value for m in at.markdown)


def test_prune_page_of_a_segmenter_with_masks_reads_mean_iou(own_home, tmp_path):
    spec = _segmenter_with_masks(own_home, tmp_path, "app_seg_masks")
    at = new_app(spec.name)
    workspace(at).set_plan(Plan(spec.name, (Prune(granularity="channel", sparsity=0.3),)))
    at.run()
    ok(at)
    cards = {m.label: m for m in at.metric}
    assert "Mean IoU" in cards and "Pixel accuracy" in cards and "Pixel agreement" not in cards
    assert cards["Mean IoU"].value != "100.0%" and cards["Mean IoU"].delta.startswith("-")
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any('"Per-class IoU"' in s for s in charts)


def test_explain_page_of_a_segmenter_with_masks_shows_its_changed_class_maps(own_home, tmp_path):
    spec = _segmenter_with_masks(own_home, tmp_path, "app_seg_explain")
    at = new_app(spec.name)
    workspace(at).set_plan(Plan(spec.name, (Prune(granularity="channel", sparsity=0.3),)))
    at.switch_page("views/explain.py").run()
    ok(at)
    assert any(m.value == "#### Examples whose class map changed most" for m in at.markdown)
    shown = [c.value for c in at.caption if c.value.startswith("example #")]
    assert len(shown) == 6 and all("Pixel accuracy on the mask: base 100.0%" in c for c in shown)
    agreements = [float(c.split(": ")[1].split("%")[0]) for c in shown]
    assert agreements == sorted(agreements) and agreements[0] < 100
    assert len(at.get("image")) == 6 * 4 + 12  # input, mask, base and current per example; the unit's top 12


def test_recover_panel_after_a_fine_tune_on_masks_reads_mean_iou_and_iou_per_class(own_home, tmp_path):
    from core.recover import Finetune

    spec = _segmenter_with_masks(own_home, tmp_path, "app_seg_heal")
    at = new_app(spec.name)
    workspace(at).set_plan(Plan(spec.name, (Prune(granularity="channel", sparsity=0.3),
                                            Finetune(loss="labels", steps=5))))
    at.run()
    ok(at)
    assert any(m.value.startswith("**Last fine-tune**") and "quick-subset mean IoU" in m.value
               and "relative output error" in m.value for m in at.markdown)
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any('"Per-class IoU before and after"' in s for s in charts)


def test_recover_panel_offers_the_masks_to_learn_from(own_home, tmp_path):
    spec = _segmenter_with_masks(own_home, tmp_path, "app_seg_losses")
    at = new_app(spec.name)
    ok(at)
    assert len(at.selectbox(key="prune_ft_loss").options) == 3  # labels (the masks), distillation, both


def test_model_page_of_a_segmenter_with_masks_counts_main_classes_and_pixels(own_home, tmp_path):
    """The eval set's table: examples by each mask's main class, and the labelled pixels per class."""
    spec = _segmenter_with_masks(own_home, tmp_path, "app_seg_model")
    at = new_app(spec.name)
    at.switch_page("views/model.py").run()
    ok(at)
    assert next(m.value for m in at.metric if m.label == "Mean IoU (base, quick)") == "100.0%"  # masks = its map
    table = next(df.value for df in at.dataframe if "labelled pixels" in df.value.index)
    ev = workspace(at).evalset
    assert table.loc["labelled pixels"].sum() == ev.y.numel()  # no pixel is ignored in these masks
    assert table.loc["examples (by main class)"].sum() == len(ev.y)
