"""Models of any output (issue 24): a person's model that returns a dict, a tuple or a dense class
map is registered with the kind its output calls for, judged leaf by leaf against the base, and
runs through weight and structured pruning, sensitivity and automatic plans."""
from collections import OrderedDict

import pytest
import torch

from core.errors import ModelError
from core.ground.outputs import output_kind
from core.metrics.evaluator import quality_sums
from core.metrics.nest import headline_each, leaf_each
from core.plan import Plan
from core.prune import Prune
from core.sources.entries import register
from core.workspace import Workspace

KINDS = {"segmenter": "dense", "two_heads": "nest", "pyramid": "nest"}


def _register(name: str, factory: str, **kw):
    return register(name, factory=f"tests.helpers.nest_models:{factory}", input_shape=(3, 16, 16),
                    data={"kind": "synthetic", "n": 96}, save=False, **kw)


def test_output_kind_of_each_shape():
    x = torch.zeros(2, 5, 16, 16)
    assert output_kind(torch.zeros(2, 7), (3, 16, 16)) == "logits"
    assert output_kind(x, (3, 16, 16)) == "dense"  # one class map over the input's size
    assert output_kind(torch.zeros(2, 5, 8, 8), (3, 16, 16)) == "nest"  # a feature map
    assert output_kind(OrderedDict(out=x, aux=x), (3, 16, 16)) == "dense"  # torchvision's segmenters
    assert output_kind((x, torch.zeros(2, 4)), (3, 16, 16)) == "nest"  # a pyramid unless `out` says otherwise
    assert output_kind({"labels": torch.zeros(2, dtype=torch.long)}, (3, 16, 16)) is None


def test_figures_of_leaves_are_what_they_say():
    base = {"out": torch.zeros(2, 3, 2, 2), "aux": torch.ones(2, 4)}
    base["out"][:, 0] = 1.0  # class 0 everywhere
    cur = {"out": base["out"].clone(), "aux": -torch.ones(2, 4)}
    cur["out"][0, 1, 0, 0] = 5.0  # one of 4 pixels of example 0 changes class
    assert headline_each(cur, base, "dense").tolist() == [0.75, 1.0]
    figs = leaf_each(cur, base, "dense")
    assert figs["aux"]["cosine"].tolist() == [-1.0, -1.0] and figs["aux"]["relative_error"].tolist() == [2.0, 2.0]
    assert "pixel_agreement" in figs["out"] and "pixel_agreement" not in figs["aux"]
    y = torch.zeros(2, dtype=torch.long)
    whole = quality_sums(cur, base, y, "fidelity", 1, "dense").figures()
    halves = (quality_sums({k: v[:1] for k, v in cur.items()}, {k: v[:1] for k, v in base.items()}, y[:1],
                           "fidelity", 1, "dense")
              + quality_sums({k: v[1:] for k, v in cur.items()}, {k: v[1:] for k, v in base.items()}, y[1:],
                             "fidelity", 1, "dense")).figures()
    assert whole["accuracy"] == pytest.approx(0.875)
    for k in ("accuracy", "agreement", "output_cosine", "loss", "output_error"):
        assert whole[k] == pytest.approx(halves[k]), k
    assert whole["leaf_figures"] == halves["leaf_figures"]
    assert whole["leaf_figures"]["out"]["pixel_agreement"] == pytest.approx(0.875)
    assert whole["leaf_figures"]["aux"]["cosine"] == pytest.approx(-1.0)


@pytest.mark.parametrize("factory", list(KINDS))
def test_a_model_of_any_output_is_judged_leaf_by_leaf_and_pruned(own_home, factory):
    spec = _register(f"own_{factory}", factory)
    own_home.append(spec.name)
    assert (spec.output, spec.task) == (KINDS[factory], "fidelity")
    ws = Workspace(spec.name, "cpu", quick_size=32, latency_time=0.02)
    base = ws.base_metrics(latency=False)
    assert base.accuracy == pytest.approx(1.0) and base.output_cosine == pytest.approx(1.0)
    assert base.leaf_figures and all(f["relative_error"] == pytest.approx(0.0) for f in base.leaf_figures.values())
    name = base.quality_name(spec.task)
    assert name == ("pixel agreement with the base" if KINDS[factory] == "dense" else name)
    assert "pixel agreement" in name or name.startswith("output cosine with the base (mean over")
    ws.set_plan(Plan(spec.name, (Prune(sparsity=0.6),)))
    m = ws.metrics(latency=False)
    assert m.accuracy < 1.0 and m.sparsity == pytest.approx(0.6, abs=0.02)
    assert set(m.leaf_figures) == set(base.leaf_figures)
    ws.set_plan(Plan(spec.name, (Prune(granularity="channel", sparsity=0.3),)))
    m = ws.metrics(latency=False)
    assert m.params < 0.9 * base.params and m.macs < base.macs
    ws.reset()
    s = ws.sensitivity("l1", "channel", (0.25, 0.5))
    assert all(0 <= p["changed"] <= 1 for pts in s.layers.values() for p in pts)
    r = ws.autoplan(criterion="l1", granularity="channel", max_drop=10.0, sens=s)
    assert r.tries and (r.met or "closest" in r.reason)


def test_a_nest_refuses_an_output_kind_it_cannot_have(own_home):
    with pytest.raises(ModelError, match=r"returns out \(2, 5, 16, 16\), aux .* give output='dense' / 'nest'"):
        _register("own_seg_logits", "segmenter", output="logits")
    from core.sources.models import MODELS

    assert "own_seg_logits" not in MODELS.names()  # nothing half-registered


def test_every_criterion_prunes_a_model_of_several_outputs(own_home):
    from core.errors import PrunescopeError
    from core.prune.criteria import CRITERIA

    spec = _register("own_two_crit", "two_heads")
    own_home.append(spec.name)
    ws = Workspace(spec.name, "cpu", quick_size=32, latency_time=0.02)
    refused = []
    for crit in CRITERIA.names():
        for gran in ("weight", "channel"):
            try:
                ws.set_plan(Plan(spec.name, (Prune(criterion=crit, granularity=gran, sparsity=0.3),)))
            except PrunescopeError as exc:  # a criterion may refuse a granularity: with a message naming it
                refused.append((crit, gran, str(exc)))
                continue
            m = ws.metrics(latency=False)
            assert 0 <= m.output_cosine <= 1.0 + 1e-6 and m.leaf_figures, (crit, gran)
    assert len(refused) < len(CRITERIA.names()), refused  # most criteria work at both granularities


def test_the_leaves_judged_are_the_persons_choice_and_stored(own_home):
    from core.errors import PrunescopeError
    from core.sources.entries import list_user_models

    spec = register("own_two_aux", factory="tests.helpers.nest_models:two_heads", input_shape=(3, 16, 16),
                    data={"kind": "synthetic", "n": 64}, judged=["aux"])
    own_home.append(spec.name)
    ws = Workspace(spec.name, "cpu", quick_size=32)
    ws.set_plan(Plan(spec.name, (Prune(sparsity=0.6),)))
    m = ws.metrics(latency=False)
    assert list(m.leaf_figures) == ["aux"] and m.quality_name(spec.task).endswith("(mean over 1 leaves: aux)")
    assert next(e for e in list_user_models() if e.name == spec.name).judged == ("aux",)  # read back as stored
    with pytest.raises(PrunescopeError, match=r"judged leaves \['boxes'\] are not among this model's output leaves "
                                              r"\['out', 'aux'\]"):
        register("own_two_bad", factory="tests.helpers.nest_models:two_heads", input_shape=(3, 16, 16),
                 data={"kind": "synthetic", "n": 64}, judged=["out", "boxes"])
    with pytest.raises(PrunescopeError, match="there are no output leaves to choose"):
        register("own_cnn_bad", factory="demo_models.nets:DigitsCNN", input_shape=(1, 8, 8),
                 data={"kind": "synthetic", "n": 64}, judged=["out"])
