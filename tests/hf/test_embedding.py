"""A model whose output is an embedding (a Hugging Face encoder's pooled output, or a person's
own model that says so) is judged by its output cosine and nearest-neighbour recall@k against
the base, never by an argmax "accuracy" over its features; and a text example is shown as the
line the person wrote, not the tokenizer's decoding of it."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from core.errors import PrunescopeError
from core.prune import Prune
from core.sources.entries import data_from_path, list_user_models, load_user_models, register
from core.sources.hf import load_hf, original_text
from core.sources.models import get_spec
from core.workspace import Workspace
from tests.helpers.cli import run

ODD = ["def __anext__(self): return a.py", "x_1 = foo.bar(baz)  # two  spaces"]  # decoded: "_ _ anext _ _", "a. py"


@pytest.fixture
def code_text(text_files, tmp_path):
    """The plain sentences plus lines a word tokenizer cannot give back as written."""
    p = tmp_path / "code.txt"
    p.write_text(text_files["plain"].read_text() + "\n".join(ODD * 6) + "\n")
    return p


def test_an_encoder_opens_as_an_embedding_and_a_head_as_logits(hf_folders):
    assert load_hf(hf_folders["bert"])[1].output_kind == "embedding"
    assert load_hf(hf_folders["bert-cls"])[1].output_kind == "logits"
    assert load_hf(hf_folders["bert-cls"], "fidelity")[1].output_kind == "embedding"  # its pooled output
    assert load_hf(hf_folders["gpt2"], "fidelity")[1].output_kind == "logits"  # next-token logits


def test_an_encoders_headline_is_cosine_and_neighbour_recall(hf_folders, text_files, own_home):
    own_home.append("own_emb")
    spec = register("own_emb", hf=str(hf_folders["bert"]), data=data_from_path(str(text_files["plain"]), seq_len=16))
    assert (spec.task, spec.output) == ("fidelity", "embedding")
    ws = Workspace("own_emb", "cpu")
    assert ws.evaluator.output == "embedding"
    base = ws.metrics(latency=False)
    assert (base.output, base.neighbour_recall, base.accuracy, base.agreement) == ("embedding", 1.0, 1.0, 1.0)
    assert base.output_cosine == pytest.approx(1.0) and base.output_error == pytest.approx(0.0, abs=1e-6)
    assert base.recall_k == min(10, base.n - 1) and base.quality_name(spec.task) == f"neighbour recall@{base.recall_k}"
    ws.add_step(Prune(criterion="l1", granularity="weight", sparsity=0.9))
    m = ws.metrics(latency=False)
    assert m.accuracy == m.agreement == m.neighbour_recall < 1  # every user of the headline reads the recall
    assert m.output_cosine < 1 and m.output_error > 0 and m.loss == m.output_error
    assert json.loads(json.dumps(m.to_dict()))["neighbour_recall"] == m.neighbour_recall
    ch = ws.changes("quick")
    moved = ch.moved()
    assert ch.output == "embedding" and len(moved) == base.n
    assert [r["cosine"] for r in moved] == sorted(r["cosine"] for r in moved)
    assert sum(ch.recall) / len(ch.recall) == pytest.approx(m.neighbour_recall)


def test_every_text_example_is_the_line_as_written(hf_folders, code_text, own_home):
    own_home.append("own_lines")
    register("own_lines", hf=str(hf_folders["bert"]), data=data_from_path(str(code_text), seq_len=16))
    ws = Workspace("own_lines", "cpu")
    lines = set(code_text.read_text().splitlines())
    shown = [original_text(row) for row in ws.evalset.x]
    assert all(s in lines for s in shown), [s for s in shown if s not in lines][:3]
    assert set(ODD) & set(shown)  # the code lines come back as written, underscores and dots included


def test_a_sweep_judges_an_embedding_by_recall_and_its_shards_add_up(hf_folders, text_files, own_home):
    own_home.append("own_sweep")
    register("own_sweep", hf=str(hf_folders["bert"]), data=data_from_path(str(text_files["plain"]), seq_len=16))
    ws = Workspace("own_sweep", "cpu")
    one = ws.sensitivity("l1", "weight", (0.5, 0.95), layers=["hf.encoder.layer.0.attention.self.query"])
    two = ws.sensitivity("l1", "weight", (0.5, 0.95), layers=["hf.encoder.layer.0.attention.self.query"], shards=2)
    assert one.source["accuracy"] == one.source["neighbour_recall"] == 1.0
    pts = one.layers["hf.encoder.layer.0.attention.self.query"]
    assert all(p["accuracy"] == p["neighbour_recall"] for p in pts) and pts[-1]["output_cosine"] < 1
    assert [p["neighbour_recall"] for p in pts] == [p["neighbour_recall"]
                                                   for p in two.layers["hf.encoder.layer.0.attention.self.query"]]


def test_a_persons_own_model_can_say_its_output_is_an_embedding(own_home):
    own_home += ["own_feat", "own_feat2"]
    spec = register("own_feat", factory="torch.nn:Linear", kwargs={"in_features": 6, "out_features": 5},
                    data={"kind": "synthetic", "n": 64}, input_shape=(6,), output="embedding")
    assert (spec.task, spec.output) == ("fidelity", "embedding")
    assert [e.output for e in list_user_models()] == ["embedding"]
    load_user_models()  # as at the next start: the stored entry keeps it
    assert get_spec("own_feat").output == "embedding"
    ws = Workspace("own_feat", "cpu")
    assert ws.metrics(latency=False).neighbour_recall == 1.0
    with pytest.raises(PrunescopeError, match="embedding.*needs task fidelity"):
        register("own_feat2", factory="torch.nn:Linear", kwargs={"in_features": 6, "out_features": 5},
                 data={"kind": "synthetic", "n": 64}, input_shape=(6,), output="embedding", task="classification")
    assert register("own_feat2", factory="torch.nn:Linear", kwargs={"in_features": 6, "out_features": 5},
                    data={"kind": "synthetic", "n": 64}, input_shape=(6,)).output == "logits"


def test_cli_register_says_the_output_kind(hf_folders, text_files, own_home, capsys):
    own_home += ["cli_emb", "cli_logits"]
    code, out, err = run(capsys, "register", "cli_emb", "--hf", str(hf_folders["bert"]), "--data",
                         str(text_files["plain"]), "--seq-len", "16", "--json")
    assert code == 0, err
    assert json.loads(out)["output"] == "embedding"
    code, out, err = run(capsys, "register", "cli_logits", "--hf", str(hf_folders["bert"]), "--data",
                         str(text_files["plain"]), "--seq-len", "16", "--output", "logits", "--json")
    assert code == 0, err
    assert json.loads(out)["output"] == "logits"


def test_an_embedding_is_distilled_by_cosine_and_error_never_by_a_softmax(own_home):
    """Recovery of an embedding model follows the base's embedding: its training loss is the
    cosine distance plus relative squared error, and its before / after figure is the output
    cosine (a softmax or argmax over features would mean nothing)."""
    from core.recover import Finetune

    own_home.append("own_emb_ft")
    register("own_emb_ft", factory="tests.helpers.models:small_mlp", data={"kind": "synthetic", "n": 256},
             input_shape=(64,), output="embedding")
    ws = Workspace("own_emb_ft", "cpu")
    ws.add_step(Prune(criterion="l1", granularity="weight", sparsity=0.8))
    pruned = ws.metrics(latency=False)
    ws.add_step(Finetune(steps=40, lr=3e-3, loss="distill"))
    info = ws.reports[-1].info
    assert info["measure"] == "output cosine with the base"
    assert -1 <= info["before"]["accuracy"] < info["after"]["accuracy"] <= 1
    assert info["after"]["loss"] < info["before"]["loss"]
    assert "output cosine with the base" in ws.reports[-1].summary
    assert ws.metrics(latency=False).output_cosine > pruned.output_cosine
    with pytest.raises(PrunescopeError, match="no predicted classes"):  # a PlanError naming the step
        ws.add_step(Finetune(steps=2, loss="predictions"))
