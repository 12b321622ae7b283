"""The graph diff figure, its table and the latency overlay, on diffs made by hand from real models."""
import pytest
import torch
import torchvision

from core.sources.bases import load_base
from core.viz.graphdiff import (
    STATUS_ORDER,
    diff_rows,
    graph_diff_figure,
    hover_text,
    latency_overlay_figure,
    node_positions,
    status_counts,
)
from tests.helpers.diffs import hand_diff


@pytest.fixture(scope="module")
def resnet_diff():
    model = torchvision.models.resnet18(num_classes=10)
    return hand_diff(model, torch.zeros(1, 3, 32, 32), "resnet18", narrow="layer2", remove="layer3.1",
                     mask="layer4", profiled=True)


def _markers(fig):
    return {t.name.split(" (")[0]: t for t in fig.data if t.mode and "markers" in t.mode}


def test_every_node_is_drawn_once_with_its_status_colour_and_a_counted_legend(resnet_diff):
    fig = graph_diff_figure(resnet_diff)
    marks = _markers(fig)
    assert set(marks) == set(STATUS_ORDER)
    drawn = [name for t in marks.values() for name in t.customdata]
    assert sorted(drawn) == sorted(n.name for n in resnet_diff.nodes)
    counts = status_counts(resnet_diff)
    assert counts == resnet_diff.counts()  # the figure's counts are the diff's
    for status, t in marks.items():
        assert t.name == f"{status} ({counts[status]})"
        assert len(t.customdata) == counts[status]
    assert counts["removed"] == 5 and counts["added"] == 1 and counts["narrowed"] == 5  # the 5 convs of layer2
    assert marks["removed"].marker.symbol.endswith("-open")  # outlined, not filled


def test_layout_follows_execution_order_and_groups_containers(resnet_diff):
    pos, bands = node_positions(resnet_diff.nodes, columns=10)
    assert len(pos) == len(resnet_diff.nodes)
    assert len(set(pos.values())) == len(pos)  # no two nodes on one spot
    by_order = sorted(resnet_diff.nodes, key=lambda n: (n.order, n.name))
    # within a column, down the column in execution order
    assert pos["layer1.0.conv1"][0] == pos["layer1.0.bn2"][0]
    assert pos["layer1.0.conv1"][1] < pos["layer1.0.bn2"][1]
    # columns run in order: the block after comes to the right or in a lower row
    a, b = pos["layer1.0.conv1"], pos["layer1.1.conv1"]
    assert b[0] > a[0] or b[1] > a[1]
    assert pos[by_order[0].name] == (-0.3, 1)
    containers = [b["container"] for b in bands]
    assert containers[0] == "" and "layer2.0.downsample" in containers
    # ~60 leaf modules fit in a couple of rows of at most 10 columns
    assert len({round(y) for _, y in pos.values()}) < 20 and max(x for x, _ in pos.values()) < 9


def test_hover_says_before_and_after(resnet_diff):
    n = next(n for n in resnet_diff.nodes if n.name == "layer2.0.conv1")
    text = hover_text(n)
    assert "layer2.0.conv1" in text and "narrowed" in text and "step 1" in text
    assert "out_channels: 128 -> 64" in text and "parameters:" in text and "ms" in text
    assert "importance of what was removed" in text
    removed = next(n for n in resnet_diff.nodes if n.status == "removed")
    assert "-> –" in hover_text(removed)


def test_edges_join_drawn_nodes_and_selection_rings_a_node(resnet_diff):
    fig = graph_diff_figure(resnet_diff, selected="layer1.0.conv1")
    lines = fig.data[0]
    assert lines.mode == "lines" and len(lines.x) == 3 * len(resnet_diff.edges)
    kept = _markers(fig)["kept"]
    i = list(kept.customdata).index("layer1.0.conv1")
    assert kept.marker.line.width[i] == 3 and sorted(kept.marker.line.width)[0] < 3


def test_a_vit_long_chain_wraps_into_rows():
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=12, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=10)
    diff = hand_diff(vit, torch.zeros(1, 3, 32, 32), "vit", mask="encoder.layers.encoder_layer_3")
    pos, bands = node_positions(diff.nodes, columns=10)
    assert len(bands) > 20  # a column per layer and per MLP
    rows = {b["y0"] for b in bands}
    assert len(rows) == -(-len(bands) // 10)
    fig = graph_diff_figure(diff)
    assert fig.layout.height < 1400


def test_demo_model_diff_draws():
    model = load_base("digits_cnn", "cpu")
    diff = hand_diff(model, torch.zeros(1, 1, 8, 8), "digits_cnn", narrow="features")
    fig = graph_diff_figure(diff)
    assert sum(len(t.customdata) for t in _markers(fig).values()) == len(diff.nodes)


def test_table_rows_put_changed_nodes_first_and_filter(resnet_diff):
    rows = diff_rows(resnet_diff)
    assert len(rows) == len(resnet_diff.nodes)
    ranks = [STATUS_ORDER.index(r["status"]) for r in rows]
    assert ranks == sorted(ranks) and rows[0]["status"] == "removed" and rows[-1]["status"] == "kept"
    only = diff_rows(resnet_diff, ["narrowed"])
    assert only and {r["status"] for r in only} == {"narrowed"}
    r = next(r for r in only if r["module"] == "layer2.0.conv1")
    assert r["params after"] < r["params before"] and "out_channels 128->64" in r["widths"]


def test_latency_overlay_pairs_base_and_current_for_the_slowest(resnet_diff):
    fig = latency_overlay_figure(resnet_diff, top=8)
    cur, base = fig.data
    assert base.name == "base" and cur.name == "current" and len(base.y) == 8
    assert list(base.y) == list(cur.y)
    slow = max(resnet_diff.nodes, key=lambda n: max(n.before.latency_ms if n.before else 0,
                                                    n.after.latency_ms if n.after and n.after.latency_ms else 0))
    assert base.y[-1].startswith(slow.name + " ")  # slowest on top
    assert "batch 8" in fig.layout.title.text and "2 threads" in fig.layout.title.text


def test_latency_overlay_needs_a_profiled_diff():
    model = load_base("digits_mlp", "cpu")
    diff = hand_diff(model, torch.zeros(1, 64), "digits_mlp")
    with pytest.raises(ValueError, match="profile=True"):
        latency_overlay_figure(diff)


def test_a_cut_block_outlines_its_column_and_its_bridge_is_added():
    from core import Plan, Workspace
    from core.surgery import Cut

    ws = Workspace("digits_resnet", "cpu", latency_time=0.01)
    ws.set_plan(Plan("digits_resnet", (Cut(("layers.3",)),)))
    diff = ws.graph_diff()
    fig = graph_diff_figure(diff)
    marks = _markers(fig)
    assert sorted(marks["removed"].customdata) == sorted(n.name for n in diff.nodes
                                                         if n.status == "removed" and not n.is_container)
    assert "layers.3" not in marks["removed"].customdata  # the block itself is its column's outline
    assert any(name.startswith("layers.bridge") for name in marks["added"].customdata)
    outlined = [s for s in fig.layout.shapes if s.line.width]
    assert outlined and {s.line.color for s in outlined} == {"#e4572e", "#2ca25f"}  # removed, added
    assert status_counts(diff)["removed"] == diff.counts()["removed"] - 1
