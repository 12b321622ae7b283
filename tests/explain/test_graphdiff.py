"""The graph diff of base against current: each step kind gives its modules the status it
should (a weight prune masks, a channel or head prune narrows producer and consumer, a cut
removes a block and adds its bridge, a paste adds the copy), the JSON's shape, the profile's
fields, and the Model Explorer keys found in the exported ONNX graph."""
from __future__ import annotations

import json

import pytest
import torch

from core.explain.graphdiff import STATUSES, graph_diff
from core.plan import ApplyContext, Plan, StepReport, apply_with_reports
from core.prune import Prune
from core.recover import Quantize
from core.sources.bases import load_base
from core.sources.datasets import get_dataset
from core.sources.models import get_spec
from core.surgery import Cut, Paste
from tests.helpers.models import DEMO_MODELS, structured_prune


def _example(name: str) -> torch.Tensor:
    return get_dataset(get_spec(name).dataset).x_test[:4]


def _diff(name: str, *steps, profile: bool = False, **kw):
    plan = Plan(name, tuple(steps))
    ctx = ApplyContext(name)
    base = load_base(name)
    model, reports = apply_with_reports(plan, base, ctx=ctx)
    before = [p.detach().clone() for p in base.parameters()]
    d = graph_diff(base, model, plan, reports, _example(name), profile=profile,
                   model_before=lambda i: apply_with_reports(plan.prefix(i), base, ctx=ctx)[0], ctx=ctx, **kw)
    assert all(torch.equal(a, b) for a, b in zip(before, base.parameters())), "the base is only read"
    return d


def _status(d) -> dict[str, str]:
    return {n.name: n.status for n in d.nodes}


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_a_weight_prune_masks_every_pruned_layer_and_keeps_the_rest(name):
    d = _diff(name, Prune(sparsity=0.5))
    masked = [n for n in d.nodes if n.status == "masked"]
    assert masked and all(n.after.sparsity > n.before.sparsity and n.steps == (0,) for n in masked)
    assert all(n.before.shape == n.after.shape and not n.widths for n in d.nodes)
    assert not any(n.weights_changed for n in masked), "zeroed weights are the mask's, not changed values"
    assert d.counts()["narrowed"] == d.counts()["removed"] == d.counts()["added"] == 0
    assert sum(d.counts().values()) == len(d.nodes) and set(d.counts()) == set(STATUSES)


def test_a_channel_prune_narrows_the_producer_and_its_consumer_with_the_removed_score():
    d = _diff("digits_cnn", Prune(granularity="channel", sparsity=0.3))
    conv, bn, nxt = d.node("features.0.0"), d.node("features.0.1"), d.node("features.1.0")
    assert conv.status == bn.status == nxt.status == "narrowed"
    kept = conv.after.shape["out_channels"]
    assert conv.widths == {"out_channels": (32, kept)} and bn.widths == {"num_features": (32, kept)}
    assert nxt.widths["in_channels"] == (32, kept), "the consumer loses the same channels as inputs"
    assert d.node("head.2").widths == {"in_features": (64, d.node("features.2.0").after.shape["out_channels"])}
    assert 0 < conv.removed_importance < 1, "removed channels score below the average unit (1)"
    assert conv.after.macs < conv.before.macs and conv.after.params == kept * 9
    assert d.node("features.0.2").status == "kept" and d.edges_from == "fx"
    assert ("features.0.0", "features.0.1") in d.edges


def test_a_head_prune_on_digits_vit_narrows_qkv_and_proj():
    d = _diff("digits_vit", Prune(granularity="head", sparsity=0.3))
    narrowed = {n.name: n for n in d.nodes if n.status == "narrowed"}
    assert narrowed and set(narrowed) <= {f"blocks.{i}.attn.{p}" for i in range(4) for p in ("qkv", "proj")}
    for n in narrowed.values():
        dim = "out_features" if n.name.endswith("qkv") else "in_features"
        before, after = n.widths[dim]
        assert after < before and (before - after) % (16 if dim == "in_features" else 48) == 0  # whole heads
        assert n.removed_importance is not None


def test_a_cut_removes_the_block_and_adds_its_bridge():
    d = _diff("digits_cnn", Cut(("features.1",)))
    s = _status(d)
    assert s["features.1"] == "removed" and d.node("features.1").is_container
    assert all(s[f"features.1.{i}"] == "removed" for i in range(4))
    bridge = d.node("features.bridge")
    assert bridge.status == "added" and bridge.kind == "Bridge" and bridge.steps == (0,) and bridge.before is None
    assert d.node("features.bridge.proj").after.params == 64 * 32 + 64
    assert d.node("features.1.0").after is None and d.node("features.1.0").before.params == 64 * 32 * 9
    assert d.node("features.0.0").order < d.node("features.1.0").order < d.node("features.2.0").order
    assert any("features.1.0" in e for e in d.edges), "the base's edges of a removed module are kept"


def test_a_paste_adds_the_copy_and_its_adapters_after_a_cut_in_a_plan_of_several_steps():
    d = _diff("digits_resnet", Cut(("layers.1",)), Paste("layers.3", source="self", at=2))
    s = _status(d)
    assert s["layers.1"] == "removed" and d.node("layers.1.conv1").steps == (0,)
    assert s["layers.3_copy"] == "added" and d.node("layers.3_copy.conv1").steps == (1,)
    bridges = [n for n in d.nodes if n.kind == "Bridge"]
    assert {n.steps for n in bridges} == {(0,), (1,)}, "the cut's bridge and the paste's adapters"
    assert s["layers.3.conv1"] == "kept" and len(d.steps) == 2


def test_a_paste_from_a_donor_adds_the_donor_modules():
    d = _diff("digits_resnet", Paste("layers.0", source="digits_resnet", at=1))
    added = [n for n in d.nodes if n.status == "added" and n.name.startswith("layers.digits_resnet_0")]
    assert added and all(n.steps == (0,) for n in added)
    assert d.totals["after"]["params"] > d.totals["before"]["params"]


def test_quantised_modules_keep_their_float_status_and_say_int8():
    d = _diff("digits_cnn", Prune(sparsity=0.5), Quantize(mode="static"))
    conv = d.node("features.0.0")
    assert conv.status == "masked" and conv.quantized and conv.steps == (0, 1)
    assert not d.node("features.0.1").quantized and not d.profiled


def test_the_json_has_every_node_with_its_figures():
    d = _diff("digits_mlp", Prune(granularity="neuron", sparsity=0.25))
    j = json.loads(json.dumps(d.to_dict()))
    assert j["model"] == "digits_mlp" and j["plan"] == d.plan_key and j["counts"] == d.counts()
    row = next(n for n in j["nodes"] if n["name"] == "layers.1")
    assert row["status"] == "narrowed" and row["widths"]["out_features"][0] == 256
    assert set(row["before"]) == {"params", "macs", "sparsity", "shape", "latency_ms", "latency_share"}
    assert j["totals"]["after"]["macs"] < j["totals"]["before"]["macs"]
    assert all(len(e) == 2 for e in j["edges"]) and j["edges_from"] in ("fx", "order")


def test_the_profile_fills_latency_and_the_shares_sum_to_one():
    d = _diff("digits_cnn", Prune(granularity="channel", sparsity=0.3), profile=True, batch=4, runs=2)
    assert d.profiled and "batch 4" in d.profile_note and "thread" in d.profile_note
    for side in ("before", "after"):
        figs = [getattr(n, side) for n in d.nodes if getattr(n, side) is not None and not n.is_container]
        assert all(f.latency_ms is not None and f.latency_ms >= 0 for f in figs)
        assert sum(f.latency_share for f in figs) == pytest.approx(1.0, abs=1e-6)
        assert d.totals[side]["latency_ms"] == pytest.approx(sum(f.latency_ms for f in figs))


def test_the_model_explorer_keys_are_output_tensors_of_the_exported_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    from core.explain.model_explorer import STATUS_VALUES, to_model_explorer
    from core.io import export_model

    name = "digits_cnn"
    plan = Plan(name, (Prune(granularity="channel", sparsity=0.3),))
    model, reports = apply_with_reports(plan, ctx=ApplyContext(name))
    d = graph_diff(load_base(name), model, plan, reports, _example(name))
    res = export_model(model, plan, "onnx", tmp_path / "m.onnx", _example(name)[:2])
    assert res.error is None
    data = to_model_explorer(d, tmp_path / "m.onnx")
    outputs = {o for n in onnx.load(str(tmp_path / "m.onnx")).graph.node for o in n.output}
    assert data["results"] and set(data["results"]) <= outputs
    assert len(data["results"]) == 4, "three convolutions and the linear head hold weights"
    assert {r["value"] for r in data["results"].values()} == {STATUS_VALUES["narrowed"]}
    assert [t["value"] for t in data["thresholds"]] == sorted(STATUS_VALUES.values())
    saved = to_model_explorer(d, tmp_path / "m.onnx", "macs_saved", graph_id="main")["main"]
    assert all(r["value"] > 0 for r in saved["results"].values()) and "gradient" in saved


def test_the_workspace_keeps_the_diff_per_plan():
    from core.workspace import Workspace

    ws = Workspace("digits_mlp", "cpu")
    ws.set_plan(Plan("digits_mlp", (Prune(sparsity=0.5),)))
    d = ws.graph_diff()
    assert ws.graph_diff() is d and d.counts()["masked"] == 3
    ws.set_plan(Plan("digits_mlp", (Prune(granularity="neuron", sparsity=0.5),)))
    assert ws.graph_diff().counts()["narrowed"] > 0


def test_a_torchvision_resnet18_channel_prune_narrows_coupled_convolutions():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    base = tv.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    new, sel = structured_prune(base, x, granularity="channel", sparsity=0.2)
    plan = Plan("resnet18", (Prune(granularity="channel", sparsity=0.2),))
    reports = [StepReport("prune", removed={g: tuple(p) for g, p in sel.pruned.items()}, unit_name="channel")]
    d = graph_diff(base, new, plan, reports, x)
    s = _status(d)
    assert s["conv1"] == "narrowed" and d.node("layer1.0.conv1").widths["in_channels"][1] < 64
    assert d.edges_from == "fx" and ("layer1.0.conv1", "layer1.0.bn1") in d.edges
    assert d.totals["after"]["macs"] < d.totals["before"]["macs"]


def test_a_transformers_head_prune_narrows_the_attention_projections(tmp_path):
    pytest.importorskip("transformers")
    from core.sources.hf import load_hf
    from tests.helpers.hf import build, save, tokenizer

    model, _ = load_hf(save(tmp_path / "bert", build("bert"), tokenizer("bert")))
    x = torch.randint(1, 64, (2, 16))
    new, sel = structured_prune(model, x[:2], granularity="head", sparsity=0.5)
    plan = Plan("bert", (Prune(granularity="head", sparsity=0.5),))
    reports = [StepReport("prune", removed={g: tuple(p) for g, p in sel.pruned.items()}, unit_name="head")]
    d = graph_diff(model, new, plan, reports, x[:2])
    narrowed = {n.name for n in d.nodes if n.status == "narrowed"}
    assert any(n.endswith("attention.self.query") for n in narrowed)
    assert any(n.endswith("attention.output.dense") for n in narrowed)
    assert all(d.node(n).steps == (0,) for n in narrowed) and d.edges
