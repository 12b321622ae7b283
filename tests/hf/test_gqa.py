"""Grouped-query attention (a Llama with 4 query heads sharing 2 key/value heads, built from a
config, tokenizer trained in the test) pruned by whole key/value groups and by query heads
within groups, uniformly; and the residual width offered by "neuron" under its own name."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

import torch
import transformers as tf

from core.io import export_model
from core.prune import LayerOverride, Prune
from core.prune.structured.analysis import group_info, prunable_units
from core.prune.structured.heads import find_heads
from core.sources.hf import load_hf, read_text
from core.workspace import Workspace
from tests.helpers.hf import register_workspace_model, save, tokenizer, unregister_workspace_model
from tests.helpers.models import structured_prune

ATTN = "hf.model.layers.{}.self_attn"
HD, N_REP = 8, 2  # head_dim; query heads per key/value head in "llama-gqa"


def _data(hf_folders, text_files, arch="llama-gqa"):
    model, info = load_hf(hf_folders[arch])
    return model, read_text(text_files["lm"], hf_folders[arch], seq_len=16, task=info.task).x


def _query_heads(groups=(), positions=()):
    """Query heads of a 2-group, 2-per-group module removed with key/value ``groups`` and ``positions``."""
    return [j * N_REP + r for j in range(2) for r in range(N_REP) if j in groups or r in positions]


def _zeroed(folder, gone: dict[int, list[int]]):
    """The unpruned model with the output-projection columns of the removed query heads set to zero:
    a query head's output reaches the model only through them, and a key/value head only through its
    group's query heads, so this is what removing them must compute."""
    ref = load_hf(folder)[0]
    with torch.no_grad():
        for layer, heads in gone.items():
            o = ref.hf.model.layers[layer].self_attn.o_proj
            for h in heads:
                o.weight[:, h * HD:(h + 1) * HD] = 0
    return ref


def _outputs(model, x):
    """Logits under eager and sdpa attention."""
    out = {}
    for impl in ("eager", "sdpa"):
        model.hf.set_attn_implementation(impl)
        with torch.no_grad():
            out[impl] = model(x)
    return out


def test_a_gqa_module_offers_key_value_groups_and_query_positions_and_plain_llama_heads(hf_folders, text_files):
    model, x = _data(hf_folders, text_files)
    assert prunable_units(model, "head", example=x[:2]) == {
        ATTN.format(0): 2, ATTN.format(0) + ".q_proj": 2, ATTN.format(1): 2, ATTN.format(1) + ".q_proj": 2}
    g = {g.name: g for g in group_info(model, "head", example=x[:2])}
    kv, pos = g[ATTN.format(0)], g[ATTN.format(0) + ".q_proj"]
    assert [kv.unit_name(j) for j in (0, 1)] == ["group 0 (KV head 0, query heads 0-1)",
                                                  "group 1 (KV head 1, query heads 2-3)"]
    assert pos.unit_name(1) == "query head 1 of every group (heads 1, 3)"
    members = {(n.rsplit(".", 1)[1], role): idx for n, role, idx in kv.unit_members(1)}
    assert members[("k_proj", "out")] == members[("v_proj", "out")] == list(range(8, 16))
    assert members[("q_proj", "out")] == members[("o_proj", "in")] == list(range(16, 32))
    plain, xp = _data(hf_folders, text_files, "llama")  # without GQA: one group of 4 heads per module
    assert prunable_units(plain, "head", example=xp[:2]) == {ATTN.format(0): 4, ATTN.format(1): 4}


@pytest.mark.parametrize("kind", ["kv_groups", "query_positions", "both"])
def test_removed_gqa_units_equal_their_query_heads_output_columns_set_to_zero(hf_folders, text_files, kind):
    model, x = _data(hf_folders, text_files)
    over = {"kv_groups": {ATTN.format(0): 0.5, ATTN.format(1): 0.5},
            "query_positions": {ATTN.format(0) + ".q_proj": 0.5, ATTN.format(1) + ".q_proj": 0.5},
            "both": {ATTN.format(0): 0.5, ATTN.format(1) + ".q_proj": 0.5}}[kind]
    new, sel = structured_prune(model, x[:2], granularity="head", layers=[LayerOverride(n, s) for n, s in over.items()])
    gone = {i: _query_heads(sel.pruned[ATTN.format(i)], sel.pruned[ATTN.format(i) + ".q_proj"]) for i in (0, 1)}
    assert all(len(v) == 2 for v in gone.values())
    mods = dict(new.named_modules())
    for i in (0, 1):
        a = mods[ATTN.format(i)]
        kv_left = 2 - len(sel.pruned[ATTN.format(i)])
        rep_left = N_REP - len(sel.pruned[ATTN.format(i) + ".q_proj"])
        assert a.num_key_value_groups == rep_left
        h = find_heads(a)  # what an export reads: k_proj.out_features // head_dim key/value heads
        assert (h.num_heads, h.kv_heads, h.head_dim) == (kv_left * rep_left, kv_left, HD)
        assert a.o_proj.in_features == a.q_proj.out_features == HD * kv_left * rep_left
    ref = _zeroed(hf_folders["llama-gqa"], gone)
    got, want = _outputs(new, x[:8]), _outputs(ref, x[:8])
    for impl in ("eager", "sdpa"):
        torch.testing.assert_close(got[impl], want[impl], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["eager"], got["sdpa"], rtol=1e-4, atol=1e-5)


def test_a_global_amount_ranks_both_kinds_and_keeps_one_of_each(hf_folders, text_files):
    model, x = _data(hf_folders, text_files)
    new, sel = structured_prune(model, x[:2], granularity="head", sparsity=1.0)
    assert all(len(p) == 1 for p in sel.pruned.values())  # the best-scoring group and position stay
    assert sum("kept 1" in w for w in sel.warnings) == 4
    for i in (0, 1):
        a = dict(new.named_modules())[ATTN.format(i)]
        assert (a.k_proj.out_features, a.q_proj.out_features, a.num_key_value_groups) == (HD, HD, 1)
    with torch.no_grad():
        assert new(x[:4]).shape == model(x[:4]).shape


@pytest.mark.parametrize("arch,embedding", [("llama", "hf.model.embed_tokens"), ("gpt2", "hf.transformer.wte"),
                                            ("llama-gqa", "hf.model.embed_tokens")])
def test_the_residual_width_is_a_neuron_group_named_after_the_embedding(hf_folders, text_files, arch, embedding):
    model, x = _data(hf_folders, text_files, arch)
    groups = {g.name: g for g in group_info(model, "neuron", example=x[:2])}
    g = groups[embedding]
    assert g.label == "residual width (hidden size)" and g.n_units == 32
    assert not any(n.endswith(("o_proj", "attn.c_proj")) for n in groups)  # no longer listed under a writer
    new, sel = structured_prune(model, x[:2], granularity="neuron", layers=[LayerOverride(embedding, 0.25)])
    assert len(sel.pruned[embedding]) == 8 and new.get_submodule(embedding).weight.shape[1] == 24
    if arch != "llama":
        with torch.no_grad():
            assert new(x[:4]).shape == model(x[:4]).shape
        return
    # the pruned Llama is a Llama of hidden size 24: transformers' own model at that config, given the
    # pruned weights, computes the same logits
    cfg = tf.LlamaConfig.from_pretrained(str(hf_folders[arch]))
    cfg.hidden_size, cfg.head_dim = 24, HD
    fresh = tf.LlamaForCausalLM(cfg).eval()
    fresh.load_state_dict(new.hf.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x[:4]).logits[:, -1], new(x[:4]), rtol=1e-4, atol=1e-5)


@pytest.fixture
def gqa_workspace(hf_folders, text_files):
    name, ds = register_workspace_model("gqa_llama", hf_folders["llama-gqa"], text_files["lm"])
    yield Workspace(name, "cpu")
    unregister_workspace_model(name, ds)


@pytest.mark.parametrize("kind", ["kv_groups", "query_positions"])
def test_gqa_units_removed_alike_in_every_layer_export_and_verify(gqa_workspace, tmp_path, kind):
    ws = gqa_workspace
    suffix = "" if kind == "kv_groups" else ".q_proj"
    ws.add_step(Prune(criterion="l1", granularity="head",
                      layers=tuple(LayerOverride(ATTN.format(i) + suffix, 0.5) for i in (0, 1))))
    x = ws.evalset.quick()[0][:16]
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", x)
    assert r.error is None and r.verified and r.max_abs_diff <= 1e-4, r
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    want = (2, 1) if kind == "kv_groups" else (2, 2)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (*want, HD)
    # the Explain page's unit view of the base: the unit's name and the layers removed with it
    r = ws.unit_report(ATTN.format(0) + suffix, 1, "head", subset="quick", top=3)
    layers = {x["layer"].rsplit(".", 1)[1]: x["indices"] for x in r["coupled"]["layers"]}
    if kind == "kv_groups":
        assert r["coupled"]["unit_name"] == "group 1 (KV head 1, query heads 2-3)"
        assert layers["k_proj"] == layers["v_proj"] == list(range(8, 16)) and layers["o_proj"] == list(range(16, 32))
    else:
        assert r["coupled"]["unit_name"] == "query head 1 of every group (heads 1, 3)"
        assert set(layers) == {"q_proj", "o_proj"} and layers["q_proj"] == [*range(8, 16), *range(24, 32)]
    assert len(r["activations"]) == len(ws.evalset.quick()[0]) and all(a >= 0 for a in r["activations"])


@pytest.fixture(scope="module")
def gqa8(tmp_path_factory):
    """A tiny Llama with 8 query heads sharing 2 key/value heads (4 per group), saved."""
    torch.manual_seed(1)
    cfg = tf.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, eos_token_id=2, bos_token_id=None, tie_word_embeddings=False)
    return save(tmp_path_factory.mktemp("gqa8") / "llama", tf.LlamaForCausalLM(cfg).eval(), tokenizer("lm"))


def test_query_positions_leave_several_query_heads_per_group_equal_to_weights_sliced_by_hand(text_files, gqa8):
    """4 query heads per key/value head down to 2: repeat_kv runs with the module's new
    num_key_value_groups; the reference is a fresh copy with the kept rows and columns sliced here."""
    model, info = load_hf(gqa8)
    x = read_text(text_files["lm"], gqa8, seq_len=16, task=info.task).x
    n = ATTN.format(1)
    new, sel = structured_prune(model, x[:2], granularity="head", layers=[
        LayerOverride(n + ".q_proj", 0.5), LayerOverride(ATTN.format(0), 0.5)])
    gone, (j,) = sel.pruned[n + ".q_proj"], sel.pruned[ATTN.format(0)]
    assert len(gone) == 2 and not sel.pruned[n] and not sel.pruned[ATTN.format(0) + ".q_proj"]
    ref = load_hf(gqa8)[0]
    keep = {0: ([q for q in range(8) if q // 4 != j], [1 - j]),
            1: ([g * 4 + r for g in (0, 1) for r in range(4) if r not in gone], [0, 1])}
    for i, (q_heads, kv_heads) in keep.items():
        a, b = dict(new.named_modules())[ATTN.format(i)], ref.hf.model.layers[i].self_attn
        assert (a.q_proj.out_features // HD, a.k_proj.out_features // HD, a.num_key_value_groups) == (4, len(kv_heads),
                                                                                                     4 // len(kv_heads))
        with torch.no_grad():
            for lin, heads, dim in ((b.q_proj, q_heads, 0), (b.k_proj, kv_heads, 0), (b.v_proj, kv_heads, 0),
                                    (b.o_proj, q_heads, 1)):
                idx = torch.tensor([h * HD + c for h in heads for c in range(HD)])
                lin.weight = torch.nn.Parameter(lin.weight.index_select(dim, idx).clone())
        b.num_key_value_groups = len(q_heads) // len(kv_heads)
    got, want = _outputs(new, x[:6]), _outputs(ref, x[:6])
    for impl in ("eager", "sdpa"):
        torch.testing.assert_close(got[impl], want[impl], rtol=1e-4, atol=1e-5)
