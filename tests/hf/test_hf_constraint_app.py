"""The Prune page's "Loadable by transformers" toggle on a tiny Llama (AppTest): turned on, the
active structured step removes one amount from every block (the model's shapes fit a config);
the global slider, the selected layer's slider and the metrics read the new step; turned off,
the person's own step comes back, or the page says the plan is kept."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from core.ground import formatting as fmt
from core.io.hf_shapes import loadable_config
from core.prune import Prune
from core.sources.entries import data_from_path, register
from tests.helpers.app import metric, new_app, ok, workspace
from tests.helpers.hf import build, save, sentences, tokenizer

MLP = "hf.model.layers.{}.mlp.gate_proj"


@pytest.fixture
def llama(tmp_path, own_home):
    folder = save(tmp_path / "llama", build("llama"), tokenizer("lm"))
    txt = tmp_path / "lm.txt"
    txt.write_text("\n".join(sentences(150, 3)) + "\n")
    own_home.append("app_llama")
    register("app_llama", hf=str(folder), data=data_from_path(str(txt), seq_len=16))
    return "app_llama"


def _widths(ws) -> list[int]:
    return [b.mlp.gate_proj.out_features for b in ws.model.hf.model.layers]


def _on_neurons(llama, amount: float):
    at = new_app(llama)
    at.selectbox(key="prune_granularity").set_value("neuron").run()
    at.slider(key="global_sparsity").set_value(amount).run()
    ok(at)
    return at, workspace(at)


def test_turned_on_a_global_neuron_step_removes_one_amount_from_every_block_and_the_controls_read_it(llama):
    at, ws = _on_neurons(llama, 0.3)
    mine = ws.plan.steps[-1]
    assert mine.sparsity == 0.3 and len(set(_widths(ws))) == 2, _widths(ws)  # [48, 40]: not loadable
    at.toggle(key="prune_hf_loadable").set_value(True).run()
    ok(at)
    step = ws.plan.steps[-1]
    assert len(ws.plan.steps) == 1 and step.sparsity == 0.3 and step.round_to == 8
    overrides = {o.layer: o.sparsity for o in step.layers}
    assert overrides == {MLP.format(0): 0.3, MLP.format(1): 0.3, "hf.model.embed_tokens": 0.0}  # residual width
    widths = _widths(ws)
    assert len(set(widths)) == 1 and widths[0] % 8 == 0, widths  # 48 of 64: 0.3 rounded to a multiple of 8
    assert ws.model.hf.model.embed_tokens.weight.shape[1] == 32  # the hidden width stays
    loadable_config(ws.model.hf)  # the config can say every shape
    assert at.slider(key="global_sparsity").value == 0.3
    at.selectbox(key="layer").set_value(MLP.format(1)).run()
    ok(at)
    assert at.slider(key=f"ov_{ws.name}_{MLP.format(1)}").value == 0.3
    assert "Override for" in at.slider(key=f"ov_{ws.name}_{MLP.format(1)}").label
    assert ws.reports[-1].units[MLP.format(1)] == (64 - widths[1], 64)
    assert any("every block loses 30.0% of its neurons" in c.value for c in at.caption), [c.value for c in at.caption]
    m = ws.metrics("quick", latency=False)
    assert metric(at, "Parameters") == fmt.count(m.params)
    assert metric(at, "MACs / example") == fmt.count(m.macs)

    at.toggle(key="prune_hf_loadable").set_value(False).run()
    ok(at)
    assert ws.plan.steps == (mine,) and len(set(_widths(ws))) == 2
    assert at.slider(key="global_sparsity").value == 0.3
    assert any("is yours again" in s.value for s in at.success), [s.value for s in at.success]


def test_moving_a_control_while_on_sets_one_amount_for_every_block(llama):
    at, ws = _on_neurons(llama, 0.3)
    at.toggle(key="prune_hf_loadable").set_value(True).run()
    at.slider(key="global_sparsity").set_value(0.2).run()  # the global amount: kept as moved
    ok(at)
    assert ws.plan.steps[-1].sparsity == 0.2 and len(set(_widths(ws))) == 1
    assert at.slider(key="global_sparsity").value == 0.2
    at.selectbox(key="layer").set_value(MLP.format(0)).run()
    at.slider(key=f"ov_{ws.name}_{MLP.format(0)}").set_value(0.5).run()  # one block's slider: every block
    ok(at)
    step = ws.plan.steps[-1]
    assert step.sparsity == 0.5 and [o.sparsity for o in step.layers] == [0.5, 0.5, 0.0] and _widths(ws) == [32, 32]
    assert at.slider(key="global_sparsity").value == 0.5
    assert at.slider(key=f"ov_{ws.name}_{MLP.format(0)}").value == 0.5
    loadable_config(ws.model.hf)

    at.toggle(key="prune_hf_loadable").set_value(False).run()  # edited since: the person's first step comes back
    ok(at)
    assert ws.plan.steps[-1] == Prune(criterion="l1", granularity="neuron", sparsity=0.3, round_to=8)


def test_turned_off_after_another_edit_the_plan_is_kept_and_the_page_says_so(llama):
    at, ws = _on_neurons(llama, 0.5)  # [32, 32]: loadable as it is, nothing to change
    at.toggle(key="prune_hf_loadable").set_value(True).run()
    ok(at)
    assert ws.plan.steps[-1].layers == () and ws.plan.steps[-1].sparsity == 0.5
    assert any("Loadable by transformers as it is" in c.value for c in at.caption)
    at.toggle(key="prune_hf_loadable").set_value(False).run()
    assert any("changed nothing" in i.value for i in at.info), [i.value for i in at.info]
    at, ws = _on_neurons(llama, 0.3)
    at.toggle(key="prune_hf_loadable").set_value(True).run()
    at.button(key="prune_add_step").click().run()  # a new step on top: the toggle's step is no longer the last
    ok(at)
    made = ws.plan
    assert len(made.steps) == 2
    at.toggle(key="prune_hf_loadable").set_value(False).run()
    ok(at)
    assert ws.plan == made
    assert any("the plan is kept as it is" in i.value for i in at.info), [i.value for i in at.info]


def test_bert_heads_cannot_be_made_loadable_and_the_page_points_at_padding(tmp_path, own_home):
    folder = save(tmp_path / "bert", build("bert"), tokenizer("bert"))
    txt = tmp_path / "plain.txt"
    txt.write_text("\n".join(sentences(60, 1)) + "\n")
    own_home.append("app_bert_h")
    register("app_bert_h", hf=str(folder), data=data_from_path(str(txt), seq_len=16))
    at = new_app("app_bert_h")
    at.selectbox(key="prune_granularity").set_value("head").run()
    at.slider(key="global_sparsity").set_value(0.5).run()
    ws = workspace(at)
    mine = ws.plan
    at.toggle(key="prune_hf_loadable").set_value(True).run()
    ok(at)
    assert ws.plan == mine
    assert any("Pad with zeros" in w.value for w in at.warning), [w.value for w in at.warning]
