"""Attention heads and MLP neurons of transformers models, pruned through the dependency graph:
a removed head equals its output-projection columns set to zero, and the counts on the
modules follow."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch

from core.prune.structured.analysis import group_info, prunable_units
from core.prune.structured.heads import find_heads
from core.sources.hf import load_hf, read_text
from tests.helpers.models import structured_prune

ATTENTION = {"bert": "hf.encoder.layer.{}.attention", "bert-cls": "hf.bert.encoder.layer.{}.attention",
             "llama": "hf.model.layers.{}.self_attn", "gpt2": "hf.transformer.h.{}.attn"}
LAYOUT = {"bert": "bert", "bert-cls": "bert", "llama": "llama", "gpt2": "gpt2"}


def _data(hf_folders, text_files, arch):
    model, info = load_hf(hf_folders[arch])
    f = {"fidelity": "plain", "classification": "labelled", "language-model": "lm"}[info.task]
    return model, read_text(text_files[f], hf_folders[arch], seq_len=16, task=info.task).x


@pytest.mark.parametrize("arch", list(ATTENTION))
def test_removed_heads_equal_their_output_columns_set_to_zero(hf_folders, text_files, arch):
    model, x = _data(hf_folders, text_files, arch)
    names = [ATTENTION[arch].format(i) for i in (0, 1)]
    assert prunable_units(model, "head", example=x[:2]) == dict.fromkeys(names, 4)
    groups = {g.name: g for g in group_info(model, "head", example=x[:2])}
    for n in names:  # every head's q, k and v rows and its output columns are in its group
        h = find_heads(dict(model.named_modules())[n])
        assert h.layout == LAYOUT[arch] and (h.num_heads, h.head_dim) == (4, 8)
        rows = sum(len(m.idxs) for m in groups[n].members if m.role == "out")
        assert rows == 3 * 32 and [m.role for m in groups[n].members].count("in") == 1
    new, sel = structured_prune(model, x[:2], granularity="head", criterion="l1", sparsity=0.5)
    mods, ref = dict(new.named_modules()), load_hf(hf_folders[arch])[0]
    ref_mods = dict(ref.named_modules())
    for n in names:
        gone = sel.pruned[n]
        h = find_heads(mods[n])
        assert h.num_heads == 4 - len(gone) and h.out.in_features == 8 * h.num_heads
        if arch.startswith("bert"):
            assert mods[n].self.num_attention_heads == h.num_heads and mods[n].self.all_head_size == 8 * h.num_heads
        if arch == "gpt2":
            assert mods[n].split_size == 8 * h.num_heads and h.producers[0].out_features == 24 * h.num_heads
        with torch.no_grad():  # the reference: the same heads' columns of the output projection zeroed
            for u in gone:
                find_heads(ref_mods[n]).out.weight[:, u * 8:(u + 1) * 8] = 0
    assert sum(len(v) for v in sel.pruned.values()) == 4
    with torch.no_grad():
        torch.testing.assert_close(new(x[:8]), ref(x[:8]), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in new.parameters()) < sum(p.numel() for p in model.parameters())


def test_grouped_query_attention_has_key_value_groups_and_query_positions(hf_folders, text_files):
    """Pruned by hand (tests/hf/test_gqa.py): a key/value group holds q, k, v and o_proj; a
    query position only q and o_proj, since every key/value head keeps its rows."""
    model, x = _data(hf_folders, text_files, "llama-gqa")
    groups = {g.name: g for g in group_info(model, "head", example=x[:2])}
    n = "hf.model.layers.0.self_attn"
    assert (groups[n].n_units, groups[n].by_hand, groups[n + ".q_proj"].n_units) == (2, "kv_groups", 2)
    assert {(m.name.rsplit(".", 1)[1], m.role) for m in groups[n].members} == {
        ("q_proj", "out"), ("k_proj", "out"), ("v_proj", "out"), ("o_proj", "in")}
    assert {(m.name.rsplit(".", 1)[1], m.role) for m in groups[n + ".q_proj"].members} == {
        ("q_proj", "out"), ("o_proj", "in")}
    assert groups[n].root_channels([1]) == list(range(16, 32))  # group 1 = query heads 2, 3 = o_proj columns 16..31


@pytest.mark.parametrize("arch,mlp", [("bert", "hf.encoder.layer.{}.intermediate.dense"),
                                      ("llama", "hf.model.layers.{}.mlp.gate_proj"),
                                      ("gpt2", "hf.transformer.h.{}.mlp.c_fc")])
def test_mlp_neurons_are_prunable_and_the_counts_match_the_layers(hf_folders, text_files, arch, mlp):
    model, x = _data(hf_folders, text_files, arch)
    units = prunable_units(model, "neuron", example=x[:2])
    width = {"bert": 64, "llama": 64, "gpt2": 128}[arch]
    for i in (0, 1):
        assert units[mlp.format(i)] == width
    # q, k, v are never neuron groups: their rows go only as whole heads
    assert not any(k.endswith(("query", "key", "value", "q_proj", "k_proj", "v_proj", "c_attn")) for k in units)
    layers = [mlp.format(i) for i in (0, 1)]
    from core.prune.step import LayerOverride

    new, sel = structured_prune(model, x[:2], granularity="neuron", criterion="l1",
                                layers=[LayerOverride(layer=n, sparsity=0.5) for n in layers])
    mods = dict(new.named_modules())
    for n in layers:
        assert len(sel.pruned[n]) == width // 2
        assert mods[n].out_features == width - len(sel.pruned[n])
        if arch == "llama":  # gate and up lose the same neurons, down their input columns
            base = n.rsplit(".", 1)[0]
            assert mods[base + ".up_proj"].out_features == mods[base + ".down_proj"].in_features == width // 2
    with torch.no_grad():
        assert new(x[:4]).shape == model(x[:4]).shape
