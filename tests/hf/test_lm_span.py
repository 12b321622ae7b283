"""A span of decoder layers of a language model cut and replaced by one linear map fitted by least
squares (ReplaceMe-style, the ``lstsq`` bridge): fitted on the calibration text's hidden states,
judged by perplexity, replayed to the same weights, and offered on the Surgery page."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")

import torch

from core.plan.build import ApplyContext, apply
from core.sources.entries import data_from_path, register
from core.surgery import Cut
from core.surgery.bridges import Bridge, ridge_lstsq
from core.workspace import Workspace
from tests.helpers.app import metric, new_app, ok, workspace
from tests.helpers.hf import build, save, sentences, tokenizer

LAYERS = {"llama": "hf.model.layers", "gpt2": "hf.transformer.h"}
SPAN = (1, 2)  # of 4 decoder layers: layer 0's output goes to layer 3 through the fitted map


def _deep(arch: str):
    """The tiny test model of ``arch`` with 4 decoder layers instead of 2 (seeded random weights)."""
    cfg = build(arch).config
    setattr(cfg, "num_hidden_layers" if arch == "llama" else "n_layer", 4)
    torch.manual_seed(0)
    return type(build(arch))(cfg).eval()


@pytest.fixture
def lm(tmp_path, own_home):
    """Registers a 4-layer language model of an architecture with its text; returns its name."""

    def reg(arch: str) -> str:
        folder = save(tmp_path / arch, _deep(arch), tokenizer("lm"))
        txt = tmp_path / f"{arch}.txt"
        txt.write_text("\n".join(sentences(150, 3)) + "\n")
        name = f"span_{arch}"
        own_home.append(name)
        register(name, hf=str(folder), data=data_from_path(str(txt), seq_len=16))
        return name

    return reg


def _span_cut(arch: str, bridge: str = "lstsq") -> Cut:
    return Cut(tuple(f"{LAYERS[arch]}.{i}" for i in SPAN), bridge=bridge)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_cut_span_becomes_a_linear_map_fitted_on_the_calibration_texts_hidden_states(lm, arch):
    ws = Workspace(lm(arch), "cpu")
    ws.add_step(_span_cut(arch))
    seams = ws.reports[-1].seams
    assert [(s.where, s.bridge) for s in seams] == [(f"{LAYERS[arch]}.0 -> {LAYERS[arch]}.3", "lstsq")]
    assert 0 < seams[0].fit_error < 1  # 1 - R^2 of the fitted map on the calibration batch
    layers = list(ws.model.get_submodule(LAYERS[arch]))
    assert len(layers) == 3 and isinstance(layers[1], Bridge) and layers[1].fitted
    # the oracle: hidden states of the base on the calibration text, layer 0's output -> layer 3's input
    x = ApplyContext(ws.name).calibration(0)[0]
    with torch.no_grad():
        hs = ws.base.hf.base_model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True,
                                   use_cache=False).hidden_states  # embeddings, then each layer's output
    w, b = ridge_lstsq(hs[1].reshape(-1, 32), hs[3].reshape(-1, 32))
    torch.testing.assert_close(layers[1].proj.weight, w.t(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(layers[1].proj.bias, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_fitted_span_is_closer_to_the_base_on_held_out_text_than_skipping_it_and_reports_perplexity(lm, arch):
    ws = Workspace(lm(arch), "cpu")
    ws.add_step(_span_cut(arch, "identity"))  # the span skipped (the residual stream goes on unchanged)
    skipped = ws.metrics(latency=False)
    ws.undo()
    ws.add_step(_span_cut(arch))
    fitted = ws.metrics(latency=False)
    assert fitted.output_cosine > skipped.output_cosine  # eval split: windows the fit never saw
    assert fitted.extra["perplexity"] == pytest.approx(math.exp(fitted.loss))
    assert fitted.params == skipped.params + 32 * 32 + 32  # the map's weight and bias


def test_a_span_cut_replays_from_its_recipe_to_the_same_weights(lm):
    ws = Workspace(lm("llama"), "cpu")
    ws.add_step(_span_cut("llama"))
    again = apply(ws.plan, ws.base, ctx=ApplyContext(ws.name))
    got, want = again.state_dict(), ws.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(v, want[k]) for k, v in got.items())


@pytest.mark.slow
def test_the_surgery_page_cuts_a_span_with_the_lstsq_bridge_and_shows_perplexity(lm):
    at = new_app(lm("llama"))
    at.switch_page("views/surgery.py").run()
    ok(at)
    before = metric(at, "Perplexity")
    assert at.selectbox(key="surgery_container_span_llama").value == LAYERS["llama"]
    assert "lstsq" in at.radio(key="surgery_bridge").options
    at.radio(key="surgery_bridge").set_value("lstsq").run()
    at.multiselect(key="surgery_selected").set_value([f"{LAYERS['llama']}.{i}" for i in SPAN]).run()
    at.button(key="surgery_cut").click().run()
    ok(at)
    assert workspace(at).plan.steps[-1] == _span_cut("llama")
    assert metric(at, "Perplexity") != before
