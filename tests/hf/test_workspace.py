"""Transformers models through the Workspace: registered from their folder with text data,
evaluated (next-token accuracy, loss and perplexity for a language model), pruned, cut,
exported, and refused where token ids have no gradient."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")

import torch
import torch.nn.functional as F

from core.errors import PrunescopeError
from core.prune import Prune
from core.sources.datasets import DATASETS, get_dataset
from core.sources.hf import load_hf, register_text_dataset
from core.sources.models import MODELS, register_factory
from core.surgery import Cut
from core.workspace import Workspace

CONTAINER = {"llama": "hf.model.layers", "gpt2": "hf.transformer.h", "bert": "hf.encoder.layer",
             "bert-cls": "hf.bert.encoder.layer"}


@pytest.fixture
def registered(hf_folders, text_files):
    """Registers ``hf_<arch>`` (factory core.sources.hf:hf_model, the folder as keyword) with its text
    data as dataset ``text:<arch>``; removed afterwards. Returns the registering function."""
    names = []

    def reg(arch: str) -> str:
        _, info = load_hf(hf_folders[arch])
        f = {"fidelity": "plain", "classification": "labelled", "language-model": "lm"}[info.task]
        ds = register_text_dataset(f"text:{arch}", text_files[f], hf_folders[arch], seq_len=16, task=info.task,
                                   classes=info.classes or [str(i) for i in range(info.outputs)])
        name = f"hf_{arch}"
        register_factory("core.sources.hf:hf_model", weights=None, dataset=ds, name=name, task=info.task,
                         input_shape=tuple(get_dataset(ds).x_test.shape[1:]), kwargs={"path": str(hf_folders[arch])})
        names.append((name, ds))
        return name

    yield reg
    for name, ds in names:
        MODELS.unregister(name)
        DATASETS.unregister(ds)
        get_dataset.cache_clear()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_language_model_is_judged_by_next_token_accuracy_loss_and_perplexity(registered, arch):
    ws = Workspace(registered(arch), "cpu")
    assert ws.spec.task == "language-model" and ws.evalset.kind == "text" and ws.evalset.x.dtype == torch.int64
    x, y = ws.evalset.quick()
    m = ws.metrics(latency=False)
    with torch.no_grad():
        out = ws.base(x)
    assert m.accuracy == pytest.approx(float((out.argmax(1) == y).float().mean()))
    assert m.loss == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-5)
    assert m.extra["perplexity"] == pytest.approx(math.exp(m.loss)) and m.macs > 0
    ws.add_step(Prune(criterion="l1", granularity="head", sparsity=0.5))
    r = ws.reports[-1]
    assert (r.pruned, r.total) == (4, 8) and "removed 4 of 8 heads" in r.summary
    p = ws.metrics(latency=False)
    assert p.params == m.params - 4 * 4 * 8 * 32 - (4 * 3 * 8 if arch == "gpt2" else 0)  # q, k, v rows, o columns
    assert p.macs < m.macs and p.shapes_changed and "perplexity" in p.extra
    assert ws.model(x[:3]).shape == (3, 64)


def test_a_classification_head_is_registered_through_user_models(registered, hf_folders, text_files, own_home):
    from core.sources.entries import register

    ds = register_text_dataset("text:bert-cls", text_files["labelled"], hf_folders["bert-cls"], seq_len=16,
                               classes=["neg", "pos"])
    own_home.append("own_bert")
    spec = register("own_bert", factory="core.sources.hf:hf_model", kwargs={"path": str(hf_folders["bert-cls"])},
                    data={"kind": "dataset", "name": ds})
    assert spec.task == "classification"
    ws = Workspace("own_bert", "cpu")
    assert ws.evalset.classes == ["neg", "pos"]
    base = ws.metrics(latency=False)
    ws.add_step(Prune(criterion="taylor", granularity="head", sparsity=0.5))
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.25))
    m = ws.metrics(latency=False)
    assert m.params < base.params and 0 <= m.accuracy <= 1
    DATASETS.unregister(ds)
    get_dataset.cache_clear()


def test_an_encoder_is_judged_by_fidelity_of_its_pooled_embedding(registered):
    ws = Workspace(registered("bert"), "cpu")
    m = ws.metrics(latency=False)
    assert ws.spec.task == "fidelity" and m.agreement == 1.0 and m.output_cosine == pytest.approx(1.0)
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.5))
    p = ws.metrics(latency=False)
    assert p.params < m.params and ws.model(ws.evalset.quick()[0][:2]).shape == (2, 32)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_a_layer_cut_runs(registered, arch):
    ws = Workspace(registered(arch), "cpu")
    from core.surgery import list_blocks

    x = ws.evalset.quick()[0]
    blocks = list_blocks(ws.base, x[:2], CONTAINER[arch])
    assert [b.name for b in blocks] == [f"{CONTAINER[arch]}.0", f"{CONTAINER[arch]}.1"]
    before = ws.metrics(latency=False)
    ws.add_step(Cut(blocks=(f"{CONTAINER[arch]}.1",)))
    m = ws.metrics(latency=False)
    assert m.params < before.params and ws.model(x[:3]).shape == ws.base(x[:3]).shape


def test_a_llama_layer_cut_runs(registered):
    """A Llama decoder layer needs the position embeddings its model passes it: stitching
    calls each kept block with what the model's own forward gave it."""
    ws = Workspace(registered("llama"), "cpu")
    ws.add_step(Cut(blocks=("hf.model.layers.1",)))
    assert ws.model(ws.evalset.quick()[0][:3]).shape == (3, 64)


def test_token_inputs_are_refused_by_gradient_maps_and_exported_with_verification(registered, tmp_path):
    from core.io import export_model

    ws = Workspace(registered("llama"), "cpu")
    for method in ("gradient", "gradcam"):
        with pytest.raises(PrunescopeError, match="needs float inputs .* token ids, which have no gradient"):
            ws.attribution_pair(0, method)
    ws.add_step(Prune(criterion="l1", granularity="head", sparsity=0.5))
    r = export_model(ws.model, ws.plan, "onnx", tmp_path / "lm.onnx", ws.evalset.quick()[0][:2], model_name=ws.name)
    assert r.error is None and r.agreement == 1.0


def test_a_language_model_quantizes_to_int8(registered):
    from core.recover import Quantize

    ws = Workspace(registered("llama"), "cpu")
    base = ws.metrics(latency=False)
    ws.add_step(Quantize())
    m = ws.metrics(latency=False)
    assert m.size_bytes < base.size_bytes and "perplexity" in m.extra and m.agreement > 0.5


def test_an_encoder_quantizes_to_int8(registered):
    """strip_onnx_debug once renamed values v0, v1, ... onto a name the quantised BERT graph
    keeps (onnxruntime: Duplicate definition of name): short names now skip kept ones."""
    from core.recover import Quantize

    ws = Workspace(registered("bert-cls"), "cpu")
    ws.add_step(Quantize())
    assert ws.metrics(latency=False).n > 0
