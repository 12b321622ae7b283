"""A person's own metric (issue 24): a function from their environment, called on every
evaluation's outputs against the labels (or the base's outputs), its figures shown beside the
built-in ones; a bad one is refused at registration with what was wrong, its traceback kept."""
import numpy as np
import pytest
import torch

from core.errors import PrunescopeError
from core.plan import Plan
from core.prune import Prune
from core.sources.entries import register
from core.workspace import Workspace

FN = "tests.helpers.own_metrics"


def _labelled(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8, generator=g), torch.arange(64) % 10
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    return {"kind": "tensors", "path": str(tmp_path / "d.npz")}


def test_an_own_metric_is_measured_on_every_evaluation(own_home, tmp_path):
    spec = register("own_metric_cnn", factory="demo_models.nets:DigitsCNN", data=_labelled(tmp_path),
                    metric=f"{FN}:top2")
    own_home.append(spec.name)
    assert spec.extra["metric"] == f"{FN}:top2"
    ws = Workspace(spec.name, "cpu", latency_time=0.02)
    base = ws.base_metrics(latency=False)
    x, y = ws.evalset.quick()
    with torch.no_grad():
        out = ws.base(x)
    want = float((out.topk(2, 1).indices == y[:, None]).any(1).float().mean())
    assert base.extra["own"]["top2"] == pytest.approx(want)
    assert set(base.extra["own"]) == {"top2", "mean top score"}
    ws.set_plan(Plan(spec.name, (Prune(sparsity=0.9),)))
    assert ws.metrics(latency=False).extra["own"]["mean top score"] != base.extra["own"]["mean top score"]
    assert "own" in ws.metrics("glimpse", latency=False).extra  # a provisional readout: of its slice


def test_an_own_metric_of_a_nest_reads_the_base_outputs_as_targets(own_home):
    spec = register("own_metric_two", factory="tests.helpers.nest_models:two_heads", input_shape=(3, 16, 16),
                    data={"kind": "synthetic", "n": 64}, metric=f"{FN}:leaf_norms", save=False)
    own_home.append(spec.name)
    base = Workspace(spec.name, "cpu").base_metrics(latency=False)
    assert base.extra["own"] == {"norm out": pytest.approx(1.0), "norm aux": pytest.approx(1.0)}


@pytest.mark.parametrize("fn, says", [
    ("not_named", r"must return a dict of 1 to 16 names to numbers, e.g. .*; got \[0.5\]"),
    ("raises", r"your metric tests.helpers.own_metrics:raises raised KeyError: 'labels'"),
    ("not_finite", r"names \(strings\) to finite numbers; got 'x': nan"),
    ("missing", r"module 'tests.helpers.own_metrics' has no attribute 'missing'"),
])
def test_a_bad_own_metric_is_refused_at_registration(own_home, tmp_path, fn, says):
    with pytest.raises(PrunescopeError, match=says) as got:
        register("own_metric_bad", factory="demo_models.nets:DigitsCNN", data=_labelled(tmp_path),
                 metric=f"{FN}:{fn}")
    if fn == "raises":
        assert isinstance(got.value.__cause__, KeyError)  # the person's traceback is kept
    from core.sources.models import MODELS

    assert "own_metric_bad" not in MODELS.names()


def test_an_own_metric_is_a_path_never_code(own_home, tmp_path):
    with pytest.raises(PrunescopeError, match="entry.metric must be an importable 'package.module:function'"):
        register("own_metric_bad", factory="demo_models.nets:DigitsCNN", data=_labelled(tmp_path),
                 metric="__import__('os').system('x')")
