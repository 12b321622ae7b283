"""The first, provisional readout: the glimpse slice of the quick subset, its figures and
their 95% intervals; the quick and full figures are unchanged by it."""
import math

import pytest
import torch

from core.metrics import Evaluator
from core.metrics.progressive import normal_interval, wilson
from core.prune import Prune
from core.prune.masks import weight_prune
from core.sources.bases import load_base
from core.sources.datasets import EvalSet, get_dataset, glimpse_slice


@pytest.fixture(scope="module")
def evaluator():
    ev = EvalSet.from_splits(get_dataset("digits"), "cpu", quick_size=128)
    return Evaluator(ev, load_base("digits_cnn"), latency_time=0.05, latency_batch=16)


def _wilson_closed_form(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 7), (3, 7), (7, 7), (20, 25), (130, 200)])
def test_wilson_matches_the_closed_form(k, n):
    assert wilson(k, n) == pytest.approx(_wilson_closed_form(k, n), abs=1e-9)


def test_normal_interval_is_mean_plus_minus_z_standard_errors():
    v = torch.tensor([1.0, 2.0, 4.0, 7.0])
    lo, hi = normal_interval(v)
    half = 1.959963984540054 * float(v.std()) / 2
    assert (lo, hi) == pytest.approx((3.5 - half, 3.5 + half))


def test_glimpse_is_a_tenth_of_quick_with_every_class_and_fixed():
    y = torch.arange(10).repeat_interleave(torch.tensor([30, 2, 5, 9, 14, 1, 20, 3, 8, 8]))  # 100, unbalanced
    idx = glimpse_slice(y, 10)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert sorted(y[idx].tolist()) == list(range(10))  # one per class while the size allows
    assert torch.equal(idx, glimpse_slice(y, 10))  # fixed seed: the same slice every time
    big = glimpse_slice(y, 40)
    counts = torch.bincount(y[big], minlength=10)
    assert (counts >= 1).all() and counts[0] == counts.max()  # then in proportion: the largest class most


def test_evalset_glimpse_is_drawn_from_the_quick_subset(evaluator):
    es = evaluator.evalset
    xq, yq = es.quick()
    xg, yg = es.subset("glimpse")
    assert len(yg) == len(yq) // 10
    assert set(yg.tolist()) == set(range(10))
    rows = {tuple(r.flatten().tolist()) for r in xq}
    assert all(tuple(r.flatten().tolist()) in rows for r in xg)


def test_glimpse_metrics_are_provisional_with_an_interval_around_the_figure(evaluator):
    pruned, _ = weight_prune(Prune(sparsity=0.9), evaluator.base)
    m = evaluator.evaluate(pruned, "glimpse", latency=False)
    x, y = evaluator.evalset.glimpse()
    with torch.inference_mode():
        acc = float((pruned(x).argmax(1) == y).float().mean())
    assert m.provisional and m.subset == "glimpse" and m.n == len(y)
    assert m.accuracy == pytest.approx(acc)
    lo, hi = m.interval
    assert (lo, hi) == pytest.approx(_wilson_closed_form(round(acc * len(y)), len(y)), abs=1e-9)
    assert lo <= m.accuracy <= hi
    llo, lhi = m.extra["loss_interval"]
    assert llo < m.loss < lhi and m.extra["confidence"] == 0.95


def test_quick_and_full_figures_stay_as_before(evaluator):
    m = evaluator.evaluate(evaluator.base, "quick", latency=False)
    assert not m.provisional and m.interval is None and m.extra == {}
    x, y = evaluator.evalset.quick()
    with torch.inference_mode():
        assert m.accuracy == pytest.approx(float((evaluator.base(x).argmax(1) == y).float().mean()))
    assert evaluator.pass_seconds["quick"] > 0
