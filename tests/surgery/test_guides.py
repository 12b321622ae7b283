"""Surgery guides: influence, linear CKA, drop-one accuracy, suggested cut."""
from __future__ import annotations

import pytest
import torch

from core.sources.models import list_models
from core.surgery import guides as G
from core.workspace import Workspace


def test_linear_cka_of_a_representation_with_itself_is_one():
    x = torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert G.linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)


def test_linear_cka_is_invariant_to_orthogonal_transforms_and_scaling():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 20, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(20, 12, generator=g, dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    assert G.linear_cka(x @ q * 3.0, y) == pytest.approx(G.linear_cka(x, y), abs=1e-9)
    assert G.linear_cka(x, torch.randn(80, 7, generator=g)) < 0.5


def test_linear_cka_needs_the_same_examples():
    with pytest.raises(ValueError, match="same n"):
        G.linear_cka(torch.zeros(4, 2), torch.zeros(5, 2))


def test_influence_is_zero_for_an_unchanged_input_and_none_for_a_shape_change():
    x = torch.randn(8, 4, 3)
    assert G.influence(x, x) == pytest.approx(0.0, abs=1e-6)
    assert G.influence(x, -x) == pytest.approx(2.0, abs=1e-6)
    assert G.influence(x, torch.randn(8, 5)) is None


@pytest.fixture(scope="module", params=list_models())
def guided(request):
    ws = Workspace(request.param, "cpu")
    return ws, G.compute_guides(ws.model, ws.evaluator, ws.ctx, name=ws.name)


def test_drop_one_guides_exist_for_every_demo_model(guided):
    ws, g = guided
    n = len(g.blocks)
    assert n >= 2 and len(g.drop_one) == len(g.influence) == len(g.cka) == n
    assert all(len(row) == n for row in g.cka)
    for i, b in enumerate(g.blocks):
        assert (g.influence[i] is None) == (b.in_shape != b.out_shape)
        assert g.drop_one[i] is not None and 0.0 <= g.drop_one[i] <= 1.0, g.drop_one_error[i]
        assert g.drop_one_bridge[i] in ("identity", "lstsq")
        assert g.cka[i][i] == pytest.approx(1.0)
    rows = g.rows()
    assert {"name", "in_shape", "out_shape", "params", "macs", "influence", "drop_one_accuracy"} <= set(rows[0])


def test_guides_are_cached_per_plan(guided):
    ws, g = guided
    assert G.compute_guides(ws.model, ws.evaluator, ws.ctx, name=ws.name) is g
    assert ws.guides() is g and ws.cached_guides() is g  # the workspace hands over its own


@pytest.mark.slow
def test_suggested_cut_takes_the_cheapest_blocks_with_the_measured_accuracy(guided):
    ws, g = guided
    s = ws.suggest_cut(1)
    best = max(range(len(g.blocks)), key=lambda i: (g.drop_one[i], -i))
    assert s["blocks"] == [g.blocks[best].name]
    assert s["expected_accuracy"] == pytest.approx(g.drop_one[best], abs=0.02)
    with pytest.raises(ValueError, match="k must be"):
        G.suggest_cut(ws.model, ws.evaluator, ws.ctx, 99, name=ws.name)


def test_surgery_figures_build_from_guides_and_mark_cut_and_new_blocks(guided):
    from core.viz import surgery as FS

    ws, g = guided
    names = [b.name for b in g.blocks]
    before = [b.to_dict() for b in g.blocks]
    after = [dict(before[0], name=names[0] + "_copy")] + before[2:] + [
        {"name": "x.bridge", "out_shape": [1], "params": 0, "adapter": True}]
    fig = FS.block_sequence_figure(before, after)
    hovers = " ".join(t.hovertext[0] for t in fig.data if t.hovertext)
    assert f"{names[1]} (cut)" in hovers and "_copy (new)" in hovers and "(adapter)" in hovers
    for f in (FS.cka_heatmap(names, g.cka), FS.influence_figure(names, g.influence),
              FS.drop_one_figure(names, g.drop_one, g.accuracy, names[:1]),
              FS.heal_figure([1.0, 0.5], {"loss": 1.0, "accuracy": 0.5}, {"loss": 0.4, "accuracy": 0.8})):
        assert f.to_dict()["data"]
