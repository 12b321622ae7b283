"""A Hugging Face folder registered by path (``register(hf=...)``, ``--hf``) with a text
file: the task read from the folder's config, the text split and judged as that task."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from core.prune import Prune
from core.sources.entries import data_from_path, list_user_models, register
from core.workspace import Workspace


def test_a_language_model_folder_with_a_text_file(hf_folders, text_files, own_home):
    own_home.append("own_llama")
    spec = register("own_llama", hf=str(hf_folders["llama"]), data=data_from_path(str(text_files["lm"]), seq_len=16))
    assert spec.task == "language-model" and spec.input_shape == (16,)
    entry = list_user_models()[0]
    assert entry.factory == "core.sources.hf:hf_model" and entry.kwargs["path"] == str(hf_folders["llama"])
    ws = Workspace("own_llama", "cpu")
    assert ws.evalset.kind == "text" and ws.evalset.x.dtype.is_floating_point is False
    m = ws.metrics(latency=False)
    assert "perplexity" in m.extra and m.agreement == 1.0
    ws.add_step(Prune(criterion="l1", granularity="head", sparsity=0.5))
    assert ws.metrics(latency=False).params < m.params


def test_a_classifier_folder_with_labelled_lines(hf_folders, text_files, own_home):
    own_home.append("own_cls")
    spec = register("own_cls", hf=str(hf_folders["bert-cls"]), data=data_from_path(str(text_files["labelled"]),
                                                                                   seq_len=16))
    assert spec.task == "classification"
    assert Workspace("own_cls", "cpu").evalset.classes == ["neg", "pos"]


def test_an_encoder_with_synthetic_tokens_is_judged_by_fidelity(hf_folders, own_home):
    own_home.append("own_enc")
    spec = register("own_enc", hf=str(hf_folders["bert"]), data={"kind": "synthetic", "n": 40})
    assert spec.task == "fidelity" and spec.input_shape == (64,)
    ws = Workspace("own_enc", "cpu")
    assert not ws.evalset.x.is_floating_point() and int(ws.evalset.x.max()) < 64


def test_text_needs_a_hugging_face_model_and_a_folder_needs_a_config(tmp_path, text_files, own_home):
    from core.errors import PrunescopeError

    with pytest.raises(PrunescopeError, match="text data needs a Hugging Face model"):
        register("t", factory="torch.nn:Linear", kwargs={"in_features": 4, "out_features": 2},
                 data=data_from_path(str(text_files["plain"])), input_shape=(4,))
    with pytest.raises(PrunescopeError, match="not a Hugging Face model folder"):
        register("t", hf=str(tmp_path))


def test_cli_register_hf(hf_folders, text_files, own_home, capsys):
    from tests.helpers.cli import run

    own_home.append("cli_llama")
    code, out, err = run(capsys, "register", "cli_llama", "--hf", str(hf_folders["gpt2"]), "--data",
                         str(text_files["lm"]), "--seq-len", "16", "--json")
    assert code == 0, err
    assert json.loads(out)["task"] == "language-model"
    code, out, err = run(capsys, "evaluate", "cli_llama", "--no-latency", "--json")
    assert code == 0, err
    assert "perplexity" in json.loads(out)["extra"]


def test_neuron_pruning_on_grouped_query_attention_leaves_out_what_it_cannot_map(hf_folders, text_files, own_home):
    """Torch-Pruning's group search cycles through repeat_kv (it hung before); the search is
    bounded, those groups are left out with the reason, the MLP neurons are pruned."""
    own_home.append("own_gqa")
    register("own_gqa", hf=str(hf_folders["llama-gqa"]), data=data_from_path(str(text_files["lm"]), seq_len=16))
    ws = Workspace("own_gqa", "cpu")
    m = ws.metrics(latency=False)
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.3))
    r = ws.reports[-1]
    assert r.pruned > 0 and any("does not settle" in w for w in r.warnings)
    assert ws.metrics(latency=False).params < m.params
