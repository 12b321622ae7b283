"""Fidelity of an embedding to the base's (core/metrics/fidelity.py): output cosine and
nearest-neighbour recall@k on hand-made embeddings, and an embedding model's quality sums
(headline = neighbour recall; shards add up to the whole set)."""
from __future__ import annotations

import math

import pytest
import torch

from core.metrics import Evaluator, quality_sums
from core.metrics.fidelity import neighbour_recall, neighbour_recall_each, neighbours, output_cosine_each, recall_k
from core.sources.datasets import DataSplits, EvalSet


def _pairs() -> torch.Tensor:
    """Six unit vectors in three tight pairs (0, 1), (2, 3), (4, 5): pairs 120 degrees apart,
    the members of a pair 5 degrees apart."""
    angles = [0, 5, 120, 125, 240, 245]
    return torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles])


def test_identical_embeddings_keep_every_neighbour_and_point_the_same_way():
    emb = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    assert neighbour_recall(emb, emb.clone()) == 1.0
    assert torch.allclose(output_cosine_each(emb, 3 * emb), torch.ones(40, dtype=torch.float64))
    assert neighbour_recall(2 * emb, emb) == 1.0  # a scale changes no cosine, so no neighbour


def test_a_known_swap_keeps_a_known_share_of_neighbours():
    base = _pairs()
    cur = base.clone()
    cur[1], cur[2] = base[2], base[1]  # now 0 pairs with 2 and 1 with 3; only (4, 5) keeps its pair
    assert neighbours(base, 1).flatten().tolist() == [1, 0, 3, 2, 5, 4]
    assert neighbours(cur, 1).flatten().tolist() == [2, 3, 0, 1, 5, 4]
    assert neighbour_recall_each(cur, base, 1).tolist() == [0, 0, 0, 0, 1, 1]
    assert neighbour_recall(cur, base, 1) == pytest.approx(1 / 3)


def test_k_is_ten_or_fewer_on_a_small_set():
    assert (recall_k(256), recall_k(11), recall_k(5), recall_k(1)) == (10, 10, 4, 0)
    one = torch.ones(1, 3)
    assert neighbour_recall(one, -one) == 1.0  # no neighbours to lose


def test_an_embeddings_headline_is_its_neighbour_recall_and_shards_add_up():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(30, 8, generator=g)
    cur = base + 0.8 * torch.randn(30, 8, generator=g)
    y = torch.zeros(30, dtype=torch.long)
    whole = quality_sums(cur, base, y, "fidelity", 8, "embedding").figures()
    assert whole["accuracy"] == whole["agreement"] == whole["neighbour_recall"] == neighbour_recall(cur, base)
    assert whole["recall_k"] == 10 and 0 < whole["neighbour_recall"] < 1
    assert whole["output_cosine"] == pytest.approx(float(output_cosine_each(cur, base).mean()))
    rel = float(((cur - base).norm(dim=1) / base.norm(dim=1)).mean())
    assert whole["output_error"] == pytest.approx(rel) and whole["loss"] == pytest.approx(rel)
    parts = quality_sums(cur[:13], base[:13], y[:13], "fidelity", 8, "embedding") + \
        quality_sums(cur[13:], base[13:], y[13:], "fidelity", 8, "embedding")
    assert parts.figures()["neighbour_recall"] == whole["neighbour_recall"]
    logits = quality_sums(cur, base, y, "fidelity", 8).figures()  # the same outputs read as class scores
    assert logits["neighbour_recall"] is None and logits["accuracy"] == logits["agreement"] != whole["accuracy"]


def test_the_evaluator_judges_an_embedding_model_by_cosine_and_recall():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(48, 6, generator=g)
    splits = DataSplits("emb", x, torch.zeros(48, dtype=torch.long), x, torch.zeros(48, dtype=torch.long),
                        [str(i) for i in range(6)], kind="tabular")
    base = torch.nn.Linear(6, 6).eval()
    ev = Evaluator(EvalSet.from_splits(splits), base, task="fidelity", output="embedding")
    m0 = ev.evaluate(base, "full", latency=False)
    assert (m0.output, m0.neighbour_recall, m0.accuracy, m0.recall_k) == ("embedding", 1.0, 1.0, 10)
    assert m0.output_cosine == pytest.approx(1.0) and m0.quality_name("fidelity") == "neighbour recall@10"
    cur = torch.nn.Linear(6, 6).eval()
    with torch.no_grad():
        cur.weight.copy_(base.weight + 0.5 * torch.randn(6, 6, generator=g))
        cur.bias.copy_(base.bias)
    m = ev.evaluate(cur, "full", latency=False)
    assert m.accuracy == m.neighbour_recall < 1 and m.output_cosine < 1 and m.output_error > 0
    assert Evaluator(ev.evalset, base, task="fidelity").evaluate(base, latency=False).neighbour_recall is None
