"""A sentence encoder (a Hugging Face encoder without a head: its pooled embedding) in the app
(AppTest): the headline is its output cosine and neighbour recall@k with the base, with no
argmax "Accuracy", cross-entropy "Loss", per-class chart, label gallery or confusion matrix;
its text examples are shown as the lines the person wrote."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from core.prune import Prune
from core.sources.entries import data_from_path, register
from tests.helpers.app import metric, new_app, ok, workspace
from tests.helpers.hf import build, save, sentences, tokenizer

SUFFIX = ", ok!"  # not in the tokenizer's vocabulary: its decoding drops it, the line as written keeps it


@pytest.fixture
def encoder(tmp_path, own_home):
    """An encoder folder registered with a text file whose every line ends in SUFFIX; its name."""
    folder = save(tmp_path / "bert", build("bert"), tokenizer("bert"))
    txt = tmp_path / "lines.txt"
    txt.write_text("\n".join(s + SUFFIX for s in sentences(60, 1)) + "\n")
    own_home.append("app_enc")
    register("app_enc", hf=str(folder), data=data_from_path(str(txt), seq_len=16))
    return "app_enc"


def _titles(at) -> list[str]:
    return [str(json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")) for c in at.get("plotly_chart")]


def _quoted(at) -> list[str]:
    """The text cards' quoted lines."""
    return [c.value.split("“", 1)[1] for c in at.caption if "“" in c.value]


def test_the_prune_page_shows_cosine_and_neighbour_recall_not_accuracy(encoder):
    at = new_app(encoder)
    ok(at)
    ws = workspace(at)
    k = ws.metrics("quick", latency=False).recall_k
    labels = [m.label for m in at.metric]
    assert "Output cosine" in labels and f"Neighbour recall@{k}" in labels and "Output error" in labels
    assert not {"Accuracy", "Loss", "Fidelity"} & set(labels), labels
    assert metric(at, f"Neighbour recall@{k}") == "100.0%" and metric(at, "Output cosine") == "1.0000"
    help_text = next(m.help for m in at.metric if m.label == f"Neighbour recall@{k}")
    assert f"{k} nearest neighbours among the base's embeddings" in help_text
    assert not any("Per-class" in t for t in _titles(at)), _titles(at)
    ws.add_step(Prune(criterion="l1", granularity="weight", sparsity=0.9))
    at.run()
    at.toggle(key="prune_changes").set_value(True).run()
    ok(at)
    m = ws.metrics("quick", latency=False)
    assert metric(at, f"Neighbour recall@{k}") == f"{100 * m.neighbour_recall:.1f}%" and m.neighbour_recall < 1
    assert not any("predictions differ" in c.value for c in at.caption)
    quoted = _quoted(at)
    assert len(quoted) == 12 and all(q.endswith(SUFFIX + "”") for q in quoted), quoted[:3]
    assert any("cosine" in c.value and "neighbours" in c.value for c in at.caption)


def test_the_explain_page_shows_the_examples_that_moved_most_as_written(encoder):
    at = new_app(encoder)
    workspace(at).add_step(Prune(criterion="l1", granularity="weight", sparsity=0.9))
    at.switch_page("views/explain.py").run()
    ok(at)
    assert any(m.value == "#### Examples whose embedding moved most" for m in at.markdown)
    assert not any(m.value == "#### Changed predictions" for m in at.markdown)
    assert not any("Confusion" in t for t in _titles(at)), _titles(at)
    quoted = _quoted(at)
    assert quoted and all(q.endswith(SUFFIX + "”") for q in quoted), quoted[:3]
    assert not any("label" in c.value.split("\n")[0] for c in at.caption if "cosine" in c.value)


def test_history_plots_the_neighbour_recall(encoder):
    at = new_app(encoder)
    k = workspace(at).metrics("quick", latency=False).recall_k
    at.switch_page("views/history.py").run()
    ok(at)
    assert f"Neighbour recall@{k} vs non-zero parameters" in _titles(at), _titles(at)


def test_the_sensitivity_page_names_neighbour_recall_and_has_no_per_class_view(encoder):
    """A sweep of an embedding model measures its neighbour recall: the heatmap, curves, captions
    and the automatic plan's target say so, and no "Per class" tab shows the embedding's
    dimensions as classes."""
    from tests.helpers.app import finish_job

    at = new_app(encoder)
    at.switch_page("views/sensitivity.py").run()
    ok(at)
    at.multiselect(key="sens_amounts").set_value([0.5, 0.9]).run()
    at.button(key="sens_run").click().run()
    finish_job(at, f"sens_job_{encoder}")
    ok(at)
    k = workspace(at).metrics("quick", latency=False).recall_k
    titles = _titles(at)
    assert f"Neighbour recall@{k} drop when one layer is pruned alone" in titles, titles
    assert not any("Accuracy" in t or "Per-class" in t for t in titles), titles
    assert [t.label for t in at.tabs] == ["Heatmap", "Curves"]
    assert any(f"neighbour recall@{k} 100.0%" in c.value for c in at.caption)
    assert any(f"neighbour recall@{k} drop" in o for o in at.selectbox(key="sens_target").options)
