"""The Prune page's one-shot panel: magnitude, Wanda and the reconstruction at one sparsity,
each row the figures the plan with that step gives, every method pruning the same layers by the
same fraction, measured in the background, with an Apply that adds the row's step (AppTest)."""
from __future__ import annotations

import pytest
import torch

from app.oneshot_ui import METHODS, candidate_steps, measure
from core.plan import apply
from core.prune import Reconstruct
from core.prune.nm import eligible_layers
from core.sensitivity import payload_for
from core.workspace import Workspace
from tests.helpers.app import finish_job, new_app, ok, workspace


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_each_row_is_what_the_plan_with_its_step_gives_on_the_same_layers(pattern):
    ws = Workspace("digits_mlp", "cpu")
    payload = payload_for(ws.float_model, ws.evaluator, ws.ctx, "quick", 0)
    rows = measure(payload, candidate_steps(payload.source, 0.7, pattern))
    assert [r.method for r in rows][:2] == list(METHODS[:2])
    measured = [r for r in rows if r.figures is not None]
    assert len(measured) >= (2 if pattern == "unstructured" else 1)
    touched = list(eligible_layers(ws.base, 4 if pattern == "2:4" else 1))
    want = 0.5 if pattern == "2:4" else 0.7
    for r in measured:
        m = ws.evaluate_plan(ws.plan.then(r.step), latency=False)
        assert (r.figures["accuracy"], r.figures["loss"], r.sparsity) == pytest.approx((m.accuracy, m.loss, m.sparsity))
        layers = dict(apply(ws.plan.then(r.step), ws.base, ctx=ws.ctx).named_modules())
        for name in touched:  # the same fraction of every touched layer, the output layer whole
            assert float((layers[name].weight == 0).float().mean()) == pytest.approx(want, abs=0.01), (r.method, name)
        head = [n for n, mod in layers.items() if isinstance(mod, torch.nn.Linear)][-1]
        assert head not in touched and bool((layers[head].weight != 0).all())
    assert rows[2].method == "reconstruct" and rows[2].figures is not None
    if pattern == "2:4":
        assert rows[1].figures is None and "2:4" in rows[1].reason  # no N:M Wanda step: said, not measured


def test_the_panel_measures_in_the_background_and_apply_adds_the_chosen_step():
    at = new_app("digits_mlp")
    at.slider(key="oneshot_sparsity").set_value(0.6).run()
    at.button(key="oneshot_measure").click().run()
    finish_job(at, "oneshot_job")
    ok(at)
    df = next(d.value for d in at.dataframe if "method" in d.value.columns)
    assert "accuracy, quick subset" in df.columns and "loss (cross-entropy, nats)" in df.columns
    assert list(df["method"])[:2] == ["Magnitude |w|", "Wanda |w|·‖x‖"]
    assert (df["zero weights (% of Linear/Conv)"].iloc[0] == df["zero weights (% of Linear/Conv)"].iloc[1])
    ws = workspace(at)
    at.button(key="oneshot_apply_wanda").click().run()
    ok(at)
    step = ws.plan.steps[-1]
    assert step.criterion == "wanda" and {o.sparsity for o in step.layers} == {0.6}
    assert any("measure again" in c.value for c in at.caption)  # the table was for the plan before
    at.button(key="oneshot_measure").click().run()  # on the plan with the Wanda step now
    finish_job(at, "oneshot_job")
    at.button(key="oneshot_apply_reconstruct").click().run()
    ok(at)
    assert ws.plan.steps[-1] == Reconstruct(sparsity=0.6) and len(ws.plan.steps) == 2


def test_a_language_model_is_compared_by_next_token_accuracy_and_perplexity(tmp_path, own_home):
    pytest.importorskip("transformers")
    from core.sources.entries import data_from_path, register
    from tests.helpers.hf import build, save, sentences, tokenizer

    folder = save(tmp_path / "llama", build("llama"), tokenizer("lm"))
    (tmp_path / "lm.txt").write_text("\n".join(sentences(150, 3)) + "\n")
    own_home.append("oneshot_llama")
    register("oneshot_llama", hf=str(folder), data=data_from_path(str(tmp_path / "lm.txt"), seq_len=16))
    at = new_app("oneshot_llama")
    at.button(key="oneshot_measure").click().run()
    finish_job(at, "oneshot_job")
    ok(at)
    df = next(d.value for d in at.dataframe if "method" in d.value.columns)
    assert {"next-token accuracy, quick subset", "perplexity (exp loss)"} <= set(df.columns)
    ws = workspace(at)
    ppl = ws.evaluate_plan(ws.plan.then(candidate_steps(ws.base, 0.5, "unstructured")[0].step),
                           latency=False).extra["perplexity"]
    assert df["perplexity (exp loss)"].iloc[0] == f"{ppl:.4g}"
    assert list(df["method"]) == ["Magnitude |w|", "Wanda |w|·‖x‖", "Reconstruction (SparseGPT)"]
    assert "–" not in set(df["perplexity (exp loss)"])  # all three measured on the language model


def test_a_model_whose_only_linear_layer_is_its_output_is_told_there_is_nothing_to_compare():
    at = new_app("digits_cnn")  # convolutions, then one Linear layer: the output layer
    ok(at)
    assert all(r.step is None for r in candidate_steps(workspace(at).base, 0.5, "unstructured"))
    assert any(i.value.startswith("Nothing to compare on this model: the model has no Linear layer besides its "
                                  "output layer") for i in at.info)
    assert not [b for b in at.button if b.key == "oneshot_measure"]
