"""A sweep for an accuracy budget stops each layer past a bound of changed predictions, its
points equal the full sweep's, a step that removes what the amount before removed reuses
that point's figures, and an automatic plan runs such a sweep only where it may."""
from __future__ import annotations

import pytest

from core.errors import PrunescopeError
from core.prune import LayerOverride, Prune
from core.sensitivity import sweep_bound, sweep_budget
from core.viz.sensitivity import class_heatmap, sensitivity_curves, sensitivity_heatmap
from core.workspace import Workspace

FIGS = ("accuracy", "loss", "agreement", "output_cosine", "changed", "source_cosine", "macs", "params", "pruned")
AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@pytest.mark.parametrize("model,granularity", [("digits_cnn", "channel"), ("digits_mlp", "weight")])
def test_a_bounded_sweep_stops_each_layer_past_the_bound_and_keeps_the_full_sweeps_points(model, granularity):
    ws = Workspace(model, "cpu")
    full = ws.sensitivity("l1", granularity, AMOUNTS)
    bounded = ws.sensitivity("l1", granularity, AMOUNTS, stop_harm=5.0)
    assert bounded is not full and bounded.stop_harm == 5.0 and full.stop_harm is None
    cut = 0
    for layer, pts in full.layers.items():
        harms = [100 * p["changed"] for p in pts]
        past = next((i for i, h in enumerate(harms) if h > 5.0), len(pts) - 1)  # the first point past the bound
        kept = bounded.layers[layer]
        assert len(kept) == past + 1, (layer, harms)
        cut += len(pts) - len(kept)
        for p, q in zip(kept, pts):
            assert {k: p[k] for k in FIGS} == pytest.approx({k: q[k] for k in FIGS}, abs=1e-9), (layer, p["amount"])
    assert cut > 0  # on these models some layer changes more than 5% of predictions before 90%


def test_amounts_that_remove_the_same_heads_share_one_point_equal_to_the_plan():
    ws = Workspace("digits_vit", "cpu")  # 4 heads a block: 20% and 30% both remove one
    s = ws.sensitivity("l1", "head", (0.2, 0.3))
    layer = next(iter(s.layers))
    a, b = s.layers[layer]
    assert a["pruned"] == b["pruned"] == 1 and (a["amount"], b["amount"]) == (0.2, 0.3)
    m = ws.evaluate_plan(ws.plan.then(Prune(criterion="l1", granularity="head",
                                            layers=(LayerOverride(layer, sparsity=0.3),))), latency=False)
    for k in ("accuracy", "loss", "agreement", "output_cosine"):
        assert b[k] == pytest.approx(getattr(m, k), abs=1e-6)
    assert (b["macs"], b["params"]) == (m.macs, m.nonzero_params)


def test_an_automatic_plan_for_a_drop_runs_a_bounded_sweep_unless_a_full_one_is_kept():
    ws = Workspace("digits_mlp", "cpu")
    r = ws.autoplan(criterion="l1", granularity="neuron", max_drop=2, amounts=AMOUNTS)
    sens, = ws.sweeps.values()
    assert sens.stop_harm == sweep_bound(2) and r.tries
    assert ws.finished_sweep("l1", "neuron", AMOUNTS) is None  # the page shows only full sweeps
    ws = Workspace("digits_mlp", "cpu")
    full = ws.sensitivity("l1", "neuron", AMOUNTS)
    ws.autoplan(criterion="l1", granularity="neuron", max_drop=2, amounts=AMOUNTS)
    assert list(ws.sweeps.values()) == [full]  # the kept full sweep is used; nothing else is run


def test_a_bounded_sweep_is_refused_for_a_cost_target_or_a_larger_drop():
    assert sweep_budget(sweep_bound(1.5)) == 1.5  # the drop a bounded sweep can plan for
    ws = Workspace("digits_mlp", "cpu")
    s = ws.sensitivity("l1", "neuron", AMOUNTS, stop_harm=sweep_bound(1))
    ws.autoplan(criterion="l1", granularity="neuron", max_drop=1, sens=s)
    with pytest.raises(PrunescopeError, match="every amount of every layer"):
        ws.autoplan(criterion="l1", granularity="neuron", max_macs=0.5, sens=s)
    with pytest.raises(PrunescopeError, match=f"go on to {sweep_bound(3):g} points"):
        ws.autoplan(criterion="l1", granularity="neuron", max_drop=3, sens=s)
    with pytest.raises(PrunescopeError, match="one shard"):
        ws.sensitivity("l1", "neuron", AMOUNTS, stop_harm=4, shards=2)
    with pytest.raises(PrunescopeError, match="stop_harm"):
        ws.sensitivity("l1", "neuron", AMOUNTS, stop_harm=-1)


def test_the_figures_show_a_layer_that_stopped_early_as_gaps():
    ws = Workspace("digits_cnn", "cpu")
    s = ws.sensitivity("l1", "channel", AMOUNTS, stop_harm=5.0)
    short = next(n for n, pts in s.layers.items() if len(pts) < len(AMOUNTS))
    heat = sensitivity_heatmap(s).data[0]
    row = list(heat.z[list(s.layers).index(short)])
    assert len(row) == len(AMOUNTS) and row[len(s.layers[short]):] == [None] * (len(AMOUNTS) - len(s.layers[short]))
    line = next(t for t in sensitivity_curves(s).data if t.name == short)
    assert list(line.x) == [100 * p["amount"] for p in s.layers[short]]
    assert all(len(r) == len(AMOUNTS) for r in class_heatmap(s, short, ws.evalset.classes).data[0].z)

