"""Segmentation against label masks (issue 24): mean IoU and pixel accuracy of a segmenter's class
map, read from a tensors file or a folder / zip of images and masks, as the headline every stage
reads."""
import io
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import FileError, ModelError, PrunescopeError
from core.metrics.segmentation import IGNORE, confusion, figures
from core.plan import Plan
from core.prune import Prune
from core.sources.datasets import strata, stratified_subset
from core.sources.entries import load_user_models, register
from core.sources.masks import read_mask_folder
from core.sources.readers import read_tensors
from core.workspace import Workspace
from tests.helpers.nest_models import segmenter

FACTORY = "tests.helpers.nest_models:segmenter"


def _scores_and_masks(seed=0, n=6, classes=4, labelled=3):
    g = torch.Generator().manual_seed(seed)
    s, y = torch.randn(n, classes, 8, 8, generator=g), torch.randint(0, labelled, (n, 8, 8), generator=g)
    y[0, :2] = IGNORE
    return s, y


def test_figures_are_torchmetrics_jaccard_and_add_up_over_shards():
    from torchmetrics.classification import MulticlassJaccardIndex

    s, y = _scores_and_masks()
    whole = figures(confusion(s, y, 4))
    shards = figures(confusion(s[:2], y[:2], 4) + confusion(s[2:], y[2:], 4))
    assert whole == shards
    ref = MulticlassJaccardIndex(4, average=None, ignore_index=IGNORE)(s.argmax(1), y)
    present = [c for c in range(4) if whole["class_iou"][c] is not None]
    assert torch.allclose(torch.tensor([whole["class_iou"][c] for c in present]), ref[present].double().float())
    assert whole["mean_iou"] == pytest.approx(float(ref[present].mean()))
    kept = y != IGNORE
    assert whole["pixel_accuracy"] == pytest.approx(float((s.argmax(1) == y)[kept].float().mean()))
    assert whole["labelled"] == int(kept.sum())


def test_a_model_with_more_classes_than_the_masks_is_wrong_where_it_predicts_them():
    s, y = _scores_and_masks(classes=6)
    f = figures(confusion(s, y, 3))  # the data's 3 classes; predictions of 3..5 are wrong, in no class's column
    pred = s.argmax(1)
    kept = y != IGNORE
    assert f["pixel_accuracy"] == pytest.approx(float((pred == y)[kept].float().mean()))
    assert len(f["class_iou"]) == 3


def test_masks_are_stratified_by_their_most_frequent_class():
    y = torch.zeros(40, 4, 4, dtype=torch.long)
    y[20:] = 2
    y[20:, 0] = 1  # class 2 still the most frequent there
    assert strata(y).tolist() == [0] * 20 + [2] * 20
    idx = stratified_subset(y, 10)
    assert (idx < 20).sum() == 5


def _npz(tmp_path, y):
    x = torch.randn(len(y), 3, 16, 16, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "seg.npz"
    np.savez(path, x=x.numpy(), y=y)
    return path


def test_tensors_with_masks_read_and_bad_masks_are_refused(tmp_path):
    y = np.random.default_rng(0).integers(0, 3, (12, 16, 16)).astype(np.uint8)
    x, masks = read_tensors(_npz(tmp_path, y))
    assert masks.shape == (12, 16, 16) and masks.dtype == torch.long
    with pytest.raises(FileError, match=r"label masks y must be one class per pixel .* got y \(12, 8, 8\)"):
        read_tensors(_npz(tmp_path, y[:, :8, :8]))
    with pytest.raises(FileError, match="classes 0..254, or 255"):
        read_tensors(_npz(tmp_path, y.astype(np.int64) + 300))


def _base_labelled(n=48, seed=3):
    """Images and the base segmenter's own argmax as their masks (top rows not judged)."""
    x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = segmenter()(x)["out"].argmax(1)
    y[:, :2] = IGNORE
    return x, y


def test_a_segmenter_on_its_masks_is_judged_by_mean_iou_through_every_stage(own_home, tmp_path):
    x, y = _base_labelled()
    path = tmp_path / "seg.npz"
    np.savez(path, x=x.numpy(), y=y.numpy().astype(np.uint8))
    spec = register("own_seg_masks", factory=FACTORY, data={"kind": "tensors", "path": str(path)})
    own_home.append(spec.name)
    assert (spec.task, spec.output) == ("segmentation", "dense")
    ws = Workspace(spec.name, "cpu", latency_time=0.02)
    base = ws.base_metrics(latency=False)
    assert base.quality_name(spec.task) == "mean IoU"
    assert base.accuracy == pytest.approx(1.0) and base.pixel_accuracy == pytest.approx(1.0)  # its own labels
    ws.set_plan(Plan(spec.name, (Prune(granularity="channel", sparsity=0.3),)))
    m = ws.metrics(latency=False)
    assert m.accuracy < 1.0 and m.pixel_accuracy < 1.0 and m.params < base.params
    assert m.accuracy == pytest.approx(sum(v for v in m.class_iou if v is not None)
                                       / sum(v is not None for v in m.class_iou))
    glimpse = ws.metrics("glimpse", latency=False)
    assert glimpse.provisional and glimpse.interval is None  # mean IoU: no per-example interval
    ws.reset()
    s = ws.sensitivity("l1", "channel", (0.25, 0.5))
    r = ws.autoplan(criterion="l1", granularity="channel", max_drop=10.0, sens=s)
    assert r.tries and r.metrics is not None and r.metrics.class_iou is not None  # tries measured by mean IoU
    from core.sources.models import MODELS

    MODELS.unregister(spec.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an entry that does not load again only warns: make that fail here
        assert spec.name in load_user_models()  # read back from the store as it was registered
    assert MODELS.get(spec.name).task == "segmentation"


def _zip(tmp_path, n=12, mask_mode="L", drop=None):
    rng = np.random.default_rng(0)
    path = tmp_path / "seg.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            img = (rng.random((20, 20, 3)) * 255).astype(np.uint8)
            mask = rng.integers(0, 3, (20, 20)).astype(np.uint8)
            mask[0] = IGNORE
            for folder, im in (("images", Image.fromarray(img)), ("masks", Image.fromarray(mask).convert(mask_mode))):
                if (folder, i) == drop:
                    continue
                b = io.BytesIO()
                im.save(b, "PNG")
                zf.writestr(f"seg/{folder}/{i:03d}.png", b.getvalue())
    return path


def test_a_zip_of_images_and_masks_registers_for_segmentation(own_home, tmp_path):
    spec = register("own_seg_zip", factory=FACTORY, data={"kind": "images", "path": str(_zip(tmp_path)),
                                                          "size": [16, 16]})
    own_home.append(spec.name)
    assert (spec.task, spec.output, spec.input_shape) == ("segmentation", "dense", (3, 16, 16))
    m = Workspace(spec.name, "cpu").base_metrics(latency=False)
    assert m.class_iou is not None and len(m.class_iou) == 3 and 0 <= m.accuracy <= 1


def test_mask_folders_that_do_not_match_are_refused(tmp_path):
    from core.sources.readers import safe_unzip

    folder = safe_unzip(_zip(tmp_path, drop=("masks", 4)), tmp_path / "a")
    with pytest.raises(FileError, match="every image needs a mask of the same stem .* unmatched: 004"):
        read_mask_folder(folder, (16, 16), 3, (0.5,), (0.5,))
    folder = safe_unzip(_zip(tmp_path, mask_mode="RGB"), tmp_path / "b")
    with pytest.raises(FileError, match="is a RGB image; accepted is one class index per pixel"):
        read_mask_folder(folder, (16, 16), 3, (0.5,), (0.5,))


def test_tasks_that_do_not_fit_the_data_or_the_model_are_refused(own_home, tmp_path):
    x, y = _base_labelled()
    path = tmp_path / "seg.npz"
    np.savez(path, x=x.numpy(), y=y.numpy().astype(np.uint8))
    with pytest.raises(PrunescopeError, match="holds label masks .* task 'classification' cannot read them"):
        register("own_bad1", factory=FACTORY, data={"kind": "tensors", "path": str(path)}, task="classification")
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=x.numpy(), y=(np.arange(len(x)) % 3))
    with pytest.raises(PrunescopeError, match="task 'segmentation' needs label masks"):
        register("own_bad2", factory=FACTORY, data={"kind": "tensors", "path": str(flat)}, task="segmentation")
    with pytest.raises(PrunescopeError, match="scores 2 classes per pixel but the masks hold"):
        register("own_bad3", factory=FACTORY, kwargs={"classes": 2}, data={"kind": "tensors", "path": str(path)})
    with pytest.raises(ModelError, match="task segmentation needs a class map"):
        register("own_bad4", factory="tests.helpers.nest_models:two_heads",
                 data={"kind": "tensors", "path": str(path)})
    from core.sources.models import MODELS

    assert not {"own_bad1", "own_bad2", "own_bad3", "own_bad4"} & set(MODELS.names())


def test_fine_tuning_on_the_masks_recovers_mean_iou(own_home, tmp_path):
    from core.recover import Finetune

    x, y = _base_labelled()
    np.savez(tmp_path / "seg.npz", x=x.numpy(), y=y.numpy().astype(np.uint8))
    spec = register("own_seg_ft", factory=FACTORY, data={"kind": "tensors", "path": str(tmp_path / "seg.npz")})
    own_home.append(spec.name)
    ws = Workspace(spec.name, "cpu", latency_time=0.02)
    ws.add_step(Prune(granularity="channel", sparsity=0.3))
    pruned = ws.metrics(latency=False)
    ws.add_step(Finetune(loss="labels", steps=30))  # pixel cross-entropy against the masks, 255 left out
    healed = ws.metrics(latency=False)
    assert healed.accuracy > pruned.accuracy + 0.02 and healed.params == pruned.params
