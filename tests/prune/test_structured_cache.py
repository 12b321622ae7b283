"""The structured step's per-model cache (issue 27): the graph is traced once per source
model and copied for each prune, and the check forward (with its bisection) runs once per
widths pruned. A warm context must give what a cold one gives: the same weights, the same
report, the same groups left out with the same reasons."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import core.prune.structured.graph as SG
import core.prune.structured.prune as SP
from core.plan import ApplyContext
from core.prune import Prune
from core.prune.step import LayerOverride
from core.prune.structured import structured_prune_step
from core.prune.structured.analysis import analysis
from core.prune.structured.tp_compat import copy_graph
from core.sources.bases import load_base
from core.sources.models import MODELS, ModelSpec, register_model


def _same_model(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]), k


def _same_report(a, b) -> None:
    for f in ("thresholds", "global_threshold", "units", "removed", "warnings", "summary"):
        assert getattr(a, f) == getattr(b, f), f


class _Counter:
    """Wraps a function of a module, counting its calls."""

    def __init__(self, monkeypatch, module, name: str):
        self.n, fn = 0, getattr(module, name)

        def counted(*a, **k):
            self.n += 1
            return fn(*a, **k)

        monkeypatch.setattr(module, name, counted)


@pytest.mark.parametrize("name,granularity", [("digits_resnet", "channel"), ("digits_cnn", "channel"),
                                              ("digits_mlp", "neuron"), ("digits_vit", "head"),
                                              ("digits_vit", "neuron")])
def test_a_warm_context_gives_the_cold_result_without_tracing_or_checking_again(monkeypatch, name, granularity):
    base = load_base(name, "cpu")
    step = Prune(criterion="l1", granularity=granularity, sparsity=0.5)
    ctx = ApplyContext(name, torch.device("cpu"))
    runs, traces = _Counter(monkeypatch, SP, "_runs"), _Counter(monkeypatch, SG, "trace_graph")
    cold, cold_report = structured_prune_step(step, base, ctx)
    assert runs.n == 1 and traces.n == 1  # one trace (the analysis), one check forward
    warm, warm_report = structured_prune_step(step, base, ctx)
    assert runs.n == 1 and traces.n == 1  # neither again: same source, same widths
    _same_model(cold, warm)
    _same_report(cold_report, warm_report)
    assert warm is not cold and warm_report.pruned > 0
    fresh, fresh_report = structured_prune_step(step, base, ApplyContext(name, torch.device("cpu")))
    _same_model(fresh, warm)
    _same_report(fresh_report, warm_report)
    x = ctx.calibration(0)[0][:3]
    with torch.no_grad():
        assert torch.equal(warm(x), cold(x))


def test_other_widths_are_checked_again_and_the_same_widths_of_other_units_are_not(monkeypatch):
    base = load_base("digits_mlp", "cpu")
    ctx = ApplyContext("digits_mlp", torch.device("cpu"))
    runs = _Counter(monkeypatch, SP, "_runs")
    structured_prune_step(Prune(criterion="l1", granularity="neuron", sparsity=0.5), base, ctx)
    structured_prune_step(Prune(criterion="l1", granularity="neuron", sparsity=0.25), base, ctx)
    assert runs.n == 2
    # every layer at a fixed amount: l1 and l2 remove as many units per layer, not the same ones
    names = [g.name for g in analysis(base, ctx).groups("neuron")]
    half = tuple(LayerOverride(n, sparsity=0.5) for n in names)
    a, ra = structured_prune_step(Prune(criterion="l1", granularity="neuron", layers=half), base, ctx)
    b, rb = structured_prune_step(Prune(criterion="random", granularity="neuron", layers=half), base, ctx)
    assert runs.n == 3  # the second, of the same widths, skips the check
    assert {g: len(v) for g, v in ra.removed.items()} == {g: len(v) for g, v in rb.removed.items()}
    assert ra.removed != rb.removed
    cold, rc = structured_prune_step(Prune(criterion="random", granularity="neuron", layers=half), base,
                                     ApplyContext("digits_mlp", torch.device("cpu")))
    _same_model(cold, b)
    _same_report(rc, rb)


class StoredWidth(nn.Module):
    """Reshapes with a width kept in an attribute of its own name: pruning ``c`` breaks it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)
        self.magic = 16

    def forward(self, x):
        x = self.c(torch.relu(self.b(torch.relu(self.a(x))))).mean((2, 3))
        return self.fc(x.reshape(len(x), self.magic))


@pytest.fixture
def stored():
    torch.manual_seed(0)
    register_model(ModelSpec(name="stored_width_cache_test", factory=StoredWidth, input_shape=(1, 8, 8),
                             dataset="digits", task="fidelity"), overwrite=True)
    yield "stored_width_cache_test"
    MODELS.unregister("stored_width_cache_test")


def test_a_breaking_group_is_bisected_once_and_reported_every_time(stored, monkeypatch):
    base = StoredWidth().eval()
    step = Prune(criterion="l1", granularity="channel", sparsity=0.5)
    ctx = ApplyContext(stored, torch.device("cpu"))
    bisect, runs = _Counter(monkeypatch, SP, "_bisect"), _Counter(monkeypatch, SP, "_runs")
    cold, cold_report = structured_prune_step(step, base, ctx)
    assert bisect.n == 1 and runs.n > 2  # the whole failed, then halves, then the mended whole
    assert cold_report.units["c"] == (0, 16) and cold_report.units["a"][0] > 0
    assert any(w.startswith("c: left out (pruning it breaks the forward pass") for w in cold_report.warnings)
    checked = runs.n
    warm, warm_report = structured_prune_step(step, base, ctx)
    assert bisect.n == 1 and runs.n == checked  # known: c left out without a forward pass
    _same_model(cold, warm)
    _same_report(cold_report, warm_report)
    fresh, fresh_report = structured_prune_step(step, base, ApplyContext(stored, torch.device("cpu")))
    _same_model(fresh, warm)
    _same_report(fresh_report, warm_report)
    assert warm.c.out_channels == 16 and warm(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_the_copied_graph_prunes_a_copy_and_leaves_the_analysis_as_it_was():
    base = load_base("digits_resnet", "cpu")
    ctx = ApplyContext("digits_resnet", torch.device("cpu"))
    an = analysis(base, ctx)
    assert an.outputs == {tuple(ctx.calibration(0)[0][:1].shape): {"output": (1, 10)}}  # read from the trace
    before = {k: v.clone() for k, v in an.copy.state_dict().items()}
    groups = [(g.name, g.n_units) for g in an.groups("channel")]
    new, dg = copy_graph(an.dg)
    assert dg.model is new and new is not an.copy
    mods = set(new.modules())
    assert all(n.module in mods for n in dg.module2node.values() if isinstance(n.module, nn.Module)
               and not type(n.module).__module__.startswith("torch_pruning"))
    structured_prune_step(Prune(criterion="l1", granularity="channel", sparsity=0.5), base, ctx)
    _same_model(an.copy, base)
    assert all(torch.equal(before[k], v) for k, v in an.copy.state_dict().items())
    assert [(g.name, g.n_units) for g in an.groups("channel")] == groups
    an2 = analysis(base, ApplyContext("digits_resnet", torch.device("cpu")))
    assert [(g.name, g.n_units) for g in an2.groups("channel")] == groups
