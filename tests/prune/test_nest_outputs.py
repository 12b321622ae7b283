"""Pruning models whose output is a nest of tensors (issue 24): two heads in a dict, a segmenter's
``OrderedDict(out=, aux=)``, a feature pyramid (tuple or list), torchvision's LR-ASPP."""
import pytest
import torch

from core.ground.outputs import leaves
from core.metrics import count_macs
from core.metrics.cost import layer_macs, measure_latency
from core.plan import ApplyContext, Plan, apply
from core.prune import Prune
from core.prune.structured.analysis import Analysis
from core.sources.bases import load_base
from tests.helpers.models import structured_prune
from tests.helpers.nest_models import NEST_MODELS, images, lraspp, pyramid, register_nest, unregister_nest


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _shapes(m, x):
    with torch.no_grad():
        return {k: tuple(t.shape) for k, t in leaves(m(x)).items()}


@pytest.fixture(params=sorted(NEST_MODELS))
def registered(request):
    name = register_nest(f"nest_{request.param}_test", NEST_MODELS[request.param])
    yield name
    unregister_nest(name)


def test_weight_pruning_masks_a_nest_model_and_keeps_every_leaf(registered):
    base = load_base(registered)
    pruned = apply(Plan(registered, (Prune(sparsity=0.5),)), base)
    x = images(3)
    assert _shapes(pruned, x) == _shapes(base, x)
    zeros = sum(int((m.weight == 0).sum()) for m in pruned.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                      torch.nn.Linear)))
    assert zeros >= 0.45 * sum(m.weight.numel() for m in pruned.modules()
                               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_a_channel_plan_removes_parameters_and_keeps_every_leaf_shape(registered):
    ctx = ApplyContext(registered, calib_size=16)
    base = load_base(registered)
    pruned = apply(Plan(registered, (Prune(granularity="channel", sparsity=0.3),)), base, ctx=ctx)
    x = images(3)
    assert _shapes(pruned, x) == _shapes(base, x)
    assert _params(pruned) < 0.9 * _params(base)
    assert count_macs(pruned, x) < count_macs(base, x)


@pytest.mark.parametrize("make", sorted(NEST_MODELS))
def test_the_layers_feeding_a_leaf_are_output_layers(make):
    an = Analysis(NEST_MODELS[make](), images(1))
    want = {"two_heads": {"head.2", "aux"}, "segmenter": {"classifier.1", "aux_classifier.1"},
            "pyramid": {"stage1.1.0", "stage2.0", "res.2", "stage3.1.0"}}[make]
    assert an.output_layers == want
    assert an.outputs == {(1, 3, 16, 16): _shapes(NEST_MODELS[make](), images(1))}


def test_a_pyramid_returned_as_a_list_prunes_the_same_as_a_tuple():
    a, _ = structured_prune(pyramid(), images(1), granularity="channel", sparsity=0.3)
    b, _ = structured_prune(pyramid(as_list=True), images(1), granularity="channel", sparsity=0.3)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert isinstance(b(images(2)), list) and _params(a) < _params(pyramid())


def test_neurons_of_a_two_headed_model_are_pruned_but_not_its_heads():
    m = NEST_MODELS["two_heads"]()
    new, sel = structured_prune(m, images(1), granularity="neuron", sparsity=0.5)
    assert set(sel.pruned) == {"head.0"} and len(sel.pruned["head.0"]) == 16
    assert new.head[0].out_features == 16 and new.aux.out_features == 4
    assert _shapes(new, images(2)) == {"out": (2, 10), "aux": (2, 4)}


def test_a_leaf_changing_shape_is_found_by_the_check(monkeypatch):
    """A head the trace cannot see as one (its output feeds the leaf through an op outside autograd's
    walk) is caught by the post-check forward, which compares every leaf with the base's."""
    from core.prune.structured import graph

    monkeypatch.setattr(graph, "_leaf_layers", lambda out, made_by: set())
    m = NEST_MODELS["segmenter"]()
    new, sel = structured_prune(m, images(1), granularity="channel", sparsity=0.3)
    assert _shapes(new, images(2)) == _shapes(m, images(2))
    assert any("'out' has shape" in w or "'aux' has shape" in w for w in sel.warnings)


def test_torchvision_lraspp_loses_a_third_of_its_channels_and_keeps_its_class_map():
    m = lraspp(classes=3)
    x = images(2, size=(3, 64, 64))
    new, sel = structured_prune(m, x[:1], granularity="channel", sparsity=0.3)
    assert _shapes(new, x) == {"out": (2, 3, 64, 64)}
    assert _params(new) < 0.8 * _params(m)


@pytest.mark.parametrize("make", sorted(NEST_MODELS))
def test_macs_and_latency_count_a_nest_model(make):
    m, x = NEST_MODELS[make](), images(2)
    macs = count_macs(m, x)
    convs = sum(v for k, v in layer_macs(m, x).items() if isinstance(dict(m.named_modules()).get(k),
                                                                      (torch.nn.Conv2d, torch.nn.Linear)))
    assert macs >= convs > 0
    lat = measure_latency(m, x, batch_size=2)
    assert lat.median_ms > 0 and lat.batch_size == 2
