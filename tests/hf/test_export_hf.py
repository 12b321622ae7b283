"""The ``hf`` export: a pruned transformers model written as a folder that transformers loads
alone (config at the pruned shapes, safetensors, tokenizer, recipe), verified in a fresh
process; shapes a config cannot say are refused with the reason and the nearest loadable plan."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch
import transformers as tf

from core.errors import PrunescopeError
from core.io import export_model
from core.io.hf_export import _CHILD
from core.io.hf_shapes import is_loadable_step, loadable_plan
from core.prune import LayerOverride, Prune
from core.surgery import Cut
from core.workspace import Workspace
from tests.helpers.hf import register_workspace_model, unregister_workspace_model

TEXT = {"bert": "plain", "bert-cls": "labelled", "gpt2": "lm", "llama": "lm", "llama-gqa": "lm"}
MLP = {"bert": "hf.encoder.layer.{}.intermediate.dense", "bert-cls": "hf.bert.encoder.layer.{}.intermediate.dense",
       "gpt2": "hf.transformer.h.{}.mlp.c_fc", "llama": "hf.model.layers.{}.mlp.gate_proj",
       "llama-gqa": "hf.model.layers.{}.mlp.gate_proj"}
CONTAINER = {"bert": "hf.encoder.layer", "bert-cls": "hf.bert.encoder.layer", "gpt2": "hf.transformer.h",
             "llama": "hf.model.layers", "llama-gqa": "hf.model.layers"}
AUTO = {"bert": tf.AutoModel, "bert-cls": tf.AutoModelForSequenceClassification, "gpt2": tf.AutoModelForCausalLM,
        "llama": tf.AutoModelForCausalLM, "llama-gqa": tf.AutoModelForCausalLM}
WIDTH_FIELD = {"bert": "intermediate_size", "bert-cls": "intermediate_size", "gpt2": "n_inner",
               "llama": "intermediate_size", "llama-gqa": "intermediate_size"}


@pytest.fixture
def workspace(hf_folders, text_files):
    made = []

    def make(arch: str) -> Workspace:
        made.append(register_workspace_model(f"hfx_{arch}", hf_folders[arch], text_files[TEXT[arch]]))
        return Workspace(made[-1][0], "cpu")

    yield make
    for name, ds in made:
        unregister_workspace_model(name, ds)


def _example(ws):
    return ws.evalset.quick()[0][:16]


def _reference(ws, arch, folder, x):
    """What transformers alone computes from the folder, reduced as prunescope's wrapper does."""
    m = AUTO[arch].from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        if arch in ("gpt2", "llama", "llama-gqa"):
            return m(input_ids=x).logits[:, -1]
        mask = (x != 0).long()
        if arch == "bert-cls":
            return m(input_ids=x, attention_mask=mask).logits
        h = m(input_ids=x, attention_mask=mask).last_hidden_state
        return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


@pytest.mark.parametrize("arch", list(TEXT))
def test_a_uniformly_pruned_and_cut_model_loads_with_transformers_alone(workspace, hf_folders, tmp_path, arch):
    ws = workspace(arch)
    mlp = [MLP[arch].format(i) for i in (0, 1)]
    ws.add_step(Prune(criterion="l1", granularity="neuron", layers=tuple(LayerOverride(n, 0.5) for n in mlp),
                      round_to=8))
    ws.add_step(Cut(blocks=(f"{CONTAINER[arch]}.1",), bridge="identity"))
    x = _example(ws)
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", x)
    assert r.error is None and r.verified and r.max_abs_diff <= 1e-4, r
    assert AUTO[arch].__name__ in r.note and "fresh process without prunescope" in r.note
    out = tmp_path / "out"
    assert {"config.json", "model.safetensors", "tokenizer.json", "prunescope.plan.json"} <= {p.name for p in
                                                                                              out.iterdir()}
    cfg = json.loads((out / "config.json").read_text())
    width = {"gpt2": 128}.get(arch, 64) // 2
    assert cfg[WIDTH_FIELD[arch]] == width and cfg.get("num_hidden_layers", cfg.get("n_layer")) == 1
    assert cfg.get("num_key_value_heads") == {"llama": 4, "llama-gqa": 2}.get(arch)
    with torch.no_grad():
        torch.testing.assert_close(_reference(ws, arch, out, x), ws.model(x), rtol=1e-4, atol=1e-5)
    assert json.loads((out / "prunescope.plan.json").read_text())["model"] == ws.name
    tok = tf.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert tok.pad_token_id == 0 or arch != "bert"


def test_llama_heads_removed_alike_in_every_layer_are_written_as_num_attention_heads(workspace, tmp_path):
    ws = workspace("llama")
    heads = [f"hf.model.layers.{i}.self_attn" for i in (0, 1)]
    ws.add_step(Prune(criterion="l1", granularity="head", layers=tuple(LayerOverride(n, 0.5) for n in heads)))
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", _example(ws))
    assert r.verified, r
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (2, 2, 8)


def test_mlp_widths_that_differ_per_layer_are_refused_and_the_nearest_loadable_plan_exports(workspace, tmp_path):
    ws = workspace("llama")
    mlp = [MLP["llama"].format(i) for i in (0, 1)]
    ws.add_step(Prune(criterion="l1", granularity="neuron", layers=(LayerOverride(mlp[0], 0.25),
                                                                    LayerOverride(mlp[1], 0.75))))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "earlier.txt").write_text("kept")
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", _example(ws))
    assert not r.verified and r.path is None
    assert "the MLP width differs across layers ([48, 16])" in r.error and "intermediate_size" in r.error
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["earlier.txt"]  # nothing new, the earlier folder kept
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folder left
    plan, notes = loadable_plan(ws.plan, ws.model_before, ws.reports)
    step = plan.steps[0]
    assert is_loadable_step(step) and {o.sparsity for o in step.layers} == {0.5} and step.round_to == 8
    assert "the same amount from every block" in notes[0]
    ws.set_plan(plan)
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", _example(ws))
    assert r.verified and json.loads((tmp_path / "out" / "config.json").read_text())["intermediate_size"] == 32
    assert not (tmp_path / "out" / "earlier.txt").exists()  # replaced whole


@pytest.mark.parametrize("arch", ["bert-cls", "gpt2"])
def test_removed_heads_of_bert_and_gpt2_are_refused_with_the_reason(workspace, tmp_path, arch):
    ws = workspace(arch)
    ws.add_step(Prune(criterion="l1", granularity="head", sparsity=0.5))
    ws.add_step(Cut(blocks=(f"{CONTAINER[arch]}.1",), bridge="lstsq"))
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", _example(ws))
    assert r.error and "fitted bridge" in r.error
    plan, notes = loadable_plan(ws.plan, ws.model_before, ws.reports)
    assert [s.op for s in plan.steps] == ["cut"] and plan.steps[0].bridge == "identity"
    assert "left out: transformers cannot load heads removed" in notes[0]
    ws.set_plan(ws.plan.without(1))
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", _example(ws))
    assert "has no pruned_heads" in r.error and not (tmp_path / "out").exists()


def test_a_global_neuron_step_that_narrows_bert_s_hidden_width_is_refused(workspace, tmp_path):
    ws = workspace("bert")
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.5))
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", _example(ws))
    assert r.error and ("hidden width" in r.error or "MLP width differs" in r.error)
    plan, _ = loadable_plan(ws.plan, ws.model_before, ws.reports)
    ws.set_plan(plan)
    assert export_model(ws.model, ws.plan, "hf", tmp_path / "out", _example(ws)).verified


def test_a_model_that_is_not_a_transformers_model_is_refused_before_anything_is_written(tmp_path):
    from core.plan import Plan
    from core.sources.models import build_model

    model = build_model("digits_mlp", load_weights=False)
    with pytest.raises(PrunescopeError, match="not a Hugging Face model"):
        export_model(model, Plan("digits_mlp"), "hf", tmp_path / "out", torch.zeros(2, 1, 8, 8))
    assert not (tmp_path / "out").exists()


def test_the_check_process_cannot_import_prunescope(tmp_path):
    prelude = _CHILD.split("import torch")[0]
    r = subprocess.run([sys.executable, "-I", "-c", prelude + "import core\n"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "the check runs without prunescope" in r.stderr


ATTN = {"bert-cls": "hf.bert.encoder.layer.{}.attention", "gpt2": "hf.transformer.h.{}.attn"}
QUERY = {"bert-cls": "bert.encoder.layer.{}.attention.self.query.weight", "gpt2": "transformer.h.{}.attn.c_attn.weight"}


def _folder_params(folder) -> int:
    from safetensors.torch import load_file

    return sum(v.numel() for v in load_file(str(folder / "model.safetensors")).values())


@pytest.mark.parametrize("arch", ["bert-cls", "gpt2"])
def test_pad_writes_removed_heads_and_neurons_back_as_zeros_where_they_were_and_outputs_stay_exact(
        workspace, tmp_path, arch):
    from safetensors.torch import load_file

    ws = workspace(arch)
    ws.add_step(Prune(criterion="l1", granularity="head", sparsity=0.5))
    mlp = [MLP[arch].format(i) for i in (0, 1)]
    ws.add_step(Prune(criterion="l1", granularity="neuron", layers=(LayerOverride(mlp[0], 0.25),
                                                                    LayerOverride(mlp[1], 0.5))))
    x = _example(ws)
    assert "has no pruned_heads" in export_model(ws.model, ws.plan, "hf", tmp_path / "out", x).error  # off by default
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", x, pad=True, reports=ws.reports)
    assert r.error is None and r.verified and r.max_abs_diff <= 1e-4, r
    out = tmp_path / "out"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg.get("num_attention_heads", cfg.get("n_head")) == 4
    full = {"gpt2": 128}.get(arch, 64)
    widths = [ws.model.get_submodule(n).out_features for n in mlp]
    assert cfg[WIDTH_FIELD[arch]] == max(widths) < full
    removed = ws.reports[0].removed[ATTN[arch].format(0)]
    assert len(removed) == 2
    q = load_file(str(out / "model.safetensors"))[QUERY[arch].format(0)]
    q = q if arch == "bert-cls" else q.t()  # GPT-2's Conv1D layout: (in, out)
    rows = q.reshape(-1, 8, q.shape[-1])[:4]  # the query section, (heads, head_dim, in)
    zero = [h for h in range(4) if not rows[h].any()]
    assert zero == sorted(removed)  # written back where the pruned heads were
    neurons = 2 * max(widths) - sum(widths)
    folder, model = _folder_params(out), sum(p.numel() for p in ws.model.hf.parameters())
    assert (f"4 heads and {neurons} MLP neurons written back as zeros (" in r.note
            and f"the folder holds {folder:,} parameters, the pruned model {model:,}" in r.note), r.note
    with torch.no_grad():
        torch.testing.assert_close(_reference(ws, arch, out, x), ws.model(x), rtol=1e-4, atol=1e-5)


def test_pad_gives_llama_the_widest_mlp_and_the_fewest_heads_its_config_allows_over_the_most_kept(workspace, tmp_path):
    ws = workspace("llama")
    heads = [f"hf.model.layers.{i}.self_attn" for i in (0, 1)]
    mlp = [MLP["llama"].format(i) for i in (0, 1)]
    ws.add_step(Prune(criterion="l1", granularity="head", layers=(LayerOverride(heads[0], 0.25),
                                                                  LayerOverride(heads[1], 0.75))))
    ws.add_step(Prune(criterion="l1", granularity="neuron", layers=(LayerOverride(mlp[0], 0.25),
                                                                    LayerOverride(mlp[1], 0.75))))
    x = _example(ws)
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", x)
    assert "number of attention heads differs across layers ([3, 1])" in r.error
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", x, pad=True)  # no reports: at the end
    assert r.verified and r.max_abs_diff <= 1e-4, r
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    # 3 heads kept at most, 4 written: transformers asks the hidden width (32) to be a multiple of the heads
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]) == (4, 4, 48)
    assert "4 heads and 32 MLP neurons written back as zeros (at the end)" in r.note
    with torch.no_grad():
        torch.testing.assert_close(_reference(ws, "llama", tmp_path / "out", x), ws.model(x), rtol=1e-4, atol=1e-5)


def test_pad_cannot_restore_gpt2_s_hidden_width_and_says_so(workspace, tmp_path):
    ws = workspace("gpt2")
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.3))  # the residual width too
    assert ws.model.hf.transformer.wte.weight.shape[1] < 32
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", _example(ws), pad=True)
    assert "zero-padding cannot restore it" in r.error and "LayerNorm" in r.error and not (tmp_path / "out").exists()


def test_the_folder_s_files_get_the_mode_a_plain_file_gets(workspace, tmp_path):
    ws = workspace("llama")
    r = export_model(ws.model, ws.plan, "hf", tmp_path / "out", _example(ws), verify=False)
    (tmp_path / "plain.txt").write_text("x")
    mode = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert {p.name: p.stat().st_mode & 0o777 for p in map(Path, r.files)} == {Path(f).name: mode for f in r.files}


def test_the_cli_pads_with_pad_and_offers_it_when_refused(workspace, tmp_path, capsys):
    from tests.helpers.cli import run

    ws = workspace("bert-cls")
    ws.add_step(Prune(criterion="l1", granularity="head", sparsity=0.5))
    (tmp_path / "plan.json").write_text(ws.plan.to_json())
    code, _, err = run(capsys, "export", ws.name, "--plan", str(tmp_path / "plan.json"), "--format", "hf",
                       "--out", str(tmp_path / "out"), "--verify")
    assert code == 2 and "Or export with --pad" in err and not (tmp_path / "out").exists()
    code, out, err = run(capsys, "export", ws.name, "--plan", str(tmp_path / "plan.json"), "--format", "hf",
                         "--out", str(tmp_path / "out"), "--verify", "--pad", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["verified"] and "4 heads and 0 MLP neurons written back as zeros (where the pruned units were)" \
        in res["note"]
    code, _, err = run(capsys, "export", ws.name, "--format", "safetensors", "--out", str(tmp_path / "m.safetensors"),
                       "--pad")
    assert code == 2 and "--pad applies to --format hf only" in err
