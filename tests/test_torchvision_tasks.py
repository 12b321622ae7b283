"""torchvision models of every task by name (issue 24): segmenters, video classifiers and optical-flow
models open with no weights fetched; quantized models are refused with the reason."""
import pytest
import torchvision as tv

from core.errors import PrunescopeError
from core.sources.describe import resolve_source
from core.sources.entries import register
from core.workspace import Workspace


@pytest.mark.parametrize("name", tv.models.list_models(module=tv.models.segmentation))
def test_every_segmenter_resolves_without_weights(name):
    factory, kwargs, shape = resolve_source(None, None, name, None)
    assert kwargs["weights"] is None and kwargs["weights_backbone"] is None and shape == (3, 224, 224)


@pytest.mark.parametrize("name", tv.models.list_models(module=tv.models.video))
def test_every_video_model_resolves_to_clips(name):
    _, kwargs, shape = resolve_source(None, None, name, None)
    assert kwargs["weights"] is None and shape[:2] == (3, 16) and len(shape) == 4


@pytest.mark.parametrize("module,why", [("quantization", "int8 already")])
def test_tasks_not_opened_yet_say_why(module, why):
    name = tv.models.list_models(module=getattr(tv.models, module))[0]
    with pytest.raises(PrunescopeError, match=why):
        resolve_source(None, None, name, None)


def test_a_segmenter_and_a_video_model_open_and_are_judged(own_home):
    spec = register("tv_seg", torchvision="lraspp_mobilenet_v3_large", input_shape=(3, 32, 32),
                    data={"kind": "synthetic", "n": 24}, save=False)
    own_home.append(spec.name)
    assert (spec.output, spec.task) == ("dense", "fidelity")
    m = Workspace("tv_seg", "cpu", quick_size=8, latency_time=0.01).base_metrics(latency=False)
    assert m.quality_name(spec.task) == "pixel agreement with the base" and list(m.leaf_figures) == ["out"]
    spec = register("tv_clip", torchvision="r3d_18", input_shape=(3, 4, 32, 32), data={"kind": "synthetic", "n": 8},
                    save=False)
    own_home.append(spec.name)
    assert spec.output == "logits" and spec.input_shape == (3, 4, 32, 32)


def test_an_optical_flow_model_takes_stacked_pairs_and_prunes(own_home):
    """RAFT takes two images: an example is the pair stacked (2 x 3 x H x W) and the output its final
    flow, a nest of one leaf judged against the base's flow. A channel prune removes what Torch-Pruning
    follows (its correlation pyramid, a forward's cache on the module, is not copied) and runs."""
    import torch

    from core.plan import Plan
    from core.prune import Prune

    for name in tv.models.list_models(module=tv.models.optical_flow):
        factory, kwargs, shape = resolve_source(None, None, name, None)
        assert factory == "core.sources.flow:torchvision_flow" and shape == (2, 3, 224, 224)
    spec = register("tv_flow", torchvision="raft_small", kwargs={"num_flow_updates": 2}, input_shape=(2, 3, 128, 128),
                    data={"kind": "synthetic", "n": 12}, save=False)
    own_home.append(spec.name)
    assert (spec.output, spec.task) == ("nest", "fidelity")
    ws = Workspace(spec.name, "cpu", quick_size=4, latency_time=0.01)
    base = ws.base_metrics(latency=False)
    assert list(base.leaf_figures) == ["flow"] and base.accuracy == pytest.approx(1.0)
    ws.set_plan(Plan(spec.name, (Prune(granularity="channel", sparsity=0.3),)))
    m = ws.metrics(latency=False)
    assert m.params < 0.95 * base.params and m.accuracy < 1.0
    with torch.no_grad():
        assert ws.model(torch.zeros(1, 2, 3, 128, 128))["flow"].shape == (1, 2, 128, 128)


def test_an_optical_flow_models_data_is_a_folder_of_frames_read_as_consecutive_pairs(own_home, tmp_path):
    """A zip of video frames, a folder per video: each two consecutive frames of a folder are one example
    (2 x 3 x H x W at the model's input size, pixels to [-1, 1] as torchvision's flow preset); a folder with
    fewer than two frames is refused with the layout accepted."""
    import torch

    from core.errors import FileError
    from core.sources.datasets import get_dataset
    from core.sources.frames import read_frame_pairs
    from tests.helpers.data import frame_folder, zip_of

    z = zip_of(frame_folder(tmp_path / "clips"), tmp_path / "clips.zip")
    spec = register("tv_flow_frames", torchvision="raft_small", kwargs={"num_flow_updates": 2},
                    data={"kind": "images", "path": str(z)}, save=False)
    own_home.append(spec.name)
    assert tuple(spec.input_shape) == (2, 3, 224, 224)  # the model's default pairs
    ds = get_dataset(spec.dataset)
    x = torch.cat([ds.x_train, ds.x_test])
    assert x.shape == (5, 2, 3, 224, 224) and x.min() >= -1 and x.max() <= 1  # 3 pairs of video a, 2 of b
    pairs = read_frame_pairs(tmp_path / "clips", (40, 60))
    assert pairs.shape == (5, 2, 3, 40, 60)
    assert torch.equal(pairs[0, 1], pairs[1, 0]) and torch.equal(pairs[0, 1], torch.roll(pairs[0, 0], 1, -1))
    (tmp_path / "one").mkdir()
    frame_folder(tmp_path / "one", videos=(("v", 1),))
    with pytest.raises(FileError, match="no folder with two frames or more"):
        read_frame_pairs(tmp_path / "one", (40, 60))


def test_a_timm_feature_extractor_opens_as_a_pyramid_of_leaves_and_prunes(own_home):
    """timm's ``features_only=True`` backbone returns a list of feature maps: a nest judged leaf by leaf;
    a channel prune keeps every map's width (each feeds an output) and runs."""
    pytest.importorskip("timm")
    from core.plan import Plan
    from core.prune import Prune

    spec = register("timm_feat", timm="resnet10t", kwargs={"features_only": True}, input_shape=(3, 32, 32),
                    data={"kind": "synthetic", "n": 24}, save=False)
    own_home.append(spec.name)
    assert (spec.output, spec.task) == ("nest", "fidelity")
    ws = Workspace(spec.name, "cpu", quick_size=8, latency_time=0.01)
    base = ws.base_metrics(latency=False)
    assert list(base.leaf_figures) == ["0", "1", "2", "3", "4"]
    ws.set_plan(Plan(spec.name, (Prune(granularity="channel", sparsity=0.3),)))
    m = ws.metrics(latency=False)
    assert m.params < 0.9 * base.params and set(m.leaf_figures) == set(base.leaf_figures)
