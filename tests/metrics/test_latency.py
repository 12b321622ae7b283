"""Latency: base and current timed back to back, interleaved, and a speed conclusion
drawn only outside the noise of the two timings."""
from __future__ import annotations

import pytest
import torch

from core.metrics.cost import Latency, measure_latency_pair, speed_verdict, timed_beside
from core.prune import Prune
from core.workspace import Workspace


def _lat(median, iqr):
    return Latency(median_ms=median, iqr_ms=iqr, batch_size=8, threads=1, device="cpu", runs=10)


def test_a_verdict_only_outside_the_noise():
    assert speed_verdict(_lat(10, 0.5), _lat(5, 0.2)) == "faster"
    assert speed_verdict(_lat(5, 0.2), _lat(10, 0.5)) == "slower"
    assert speed_verdict(_lat(10, 3), _lat(8, 2)) == "within noise"  # 1.25x, but spreads of 30% and 25%
    assert _lat(10, 3).noisy and not _lat(10, 1).noisy


def test_pair_times_both_models_at_the_same_batch_threads_and_device():
    big = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    small = torch.nn.Sequential(torch.nn.Linear(256, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10)).eval()
    a, b = measure_latency_pair(big, small, torch.randn(4, 256), batch_size=16, min_run_time=0.05, rounds=4)
    for lat in (a, b):
        assert lat.batch_size == 16 and lat.device == "cpu" and lat.runs >= 4 and lat.median_ms > 0
    assert a.threads == b.threads == torch.get_num_threads()


def test_structured_metrics_carry_the_base_timed_with_them():
    ws = Workspace("digits_cnn", "cpu", latency_time=0.05, latency_batch=8)
    ws.add_step(Prune(granularity="channel", sparsity=0.5))
    m = ws.metrics()
    assert m.shapes_changed and m.base_latency is not None and m.base_latency is not ws.base_metrics().latency
    assert m.base_latency.batch_size == m.latency.batch_size == 8
    assert m.to_dict()["base_latency_ms"]["batch_size"] == 8
    assert timed_beside(m.base_latency, m.latency)
    ws.set_plan(ws.plan.prefix(0).then(Prune(sparsity=0.5)))  # masks: timed beside the base too, not alone
    m = ws.metrics()
    assert not m.shapes_changed and timed_beside(m.base_latency, m.latency)


def _pair(ev, **kw):
    """A (base, model) pair as one interleaved timing made in ``ev``'s conditions, changed by ``kw``."""
    batch, threads, device, precision = ev.conditions()
    how = dict(median_ms=2.0, iqr_ms=0.1, batch_size=batch, threads=threads, device=device, runs=20,
               precision=precision, interleaved=True, timed_at=1000.0) | kw
    return Latency(**how), Latency(**how)


@pytest.mark.parametrize("change", [
    {"iqr_ms": 41.0},  # issue 23 (2): noisy
    {"runs": 2},  # too few runs (the base's first timing: 2 runs on a busy machine)
    {"threads": 99}, {"batch_size": 3}, {"device": "meta"}, {"precision": "bf16"},  # other conditions
])
def test_a_noisy_or_differently_conditioned_timing_is_not_reused_for_another_plan(change):
    ws = Workspace("digits_mlp", "cpu", latency_time=0.02, latency_batch=8)
    ev, masked = ws.evaluator, ws.model
    ev._arch_cache[ev._pair_key(ev.base_signature)] = stale = _pair(ev, **change)
    assert ev.timed_pair(masked) is None
    ws.set_plan(ws.plan.then(Prune(sparsity=0.5)))
    assert ws.metrics(latency=False).latency is None  # not attached: "timing…", then timed anew
    m = ws.metrics(latency=True)
    assert m.latency not in stale and timed_beside(m.base_latency, m.latency)
    assert ws.base_metrics().latency is m.base_latency  # the Model page shows the base timed beside it


def test_a_reliable_pair_in_the_same_conditions_serves_every_masked_plan():
    ws = Workspace("digits_mlp", "cpu", latency_time=0.02, latency_batch=8)
    ev = ws.evaluator
    ev._arch_cache[ev._pair_key(ev.base_signature)] = good = _pair(ev)
    ws.set_plan(ws.plan.then(Prune(sparsity=0.3)))
    assert ws.metrics(latency=False).latency is good[1]
    assert ws.base_metrics().latency is good[0]


def test_time_again_drops_a_masked_plans_pair_and_times_base_and_current_beside_each_other():
    ws = Workspace("digits_mlp", "cpu", latency_time=0.02, latency_batch=8)
    ws.set_plan(ws.plan.then(Prune(sparsity=0.5)))
    first = ws.metrics()
    assert ws.base_metrics().latency is first.base_latency
    ws.forget_latency()
    assert ws.metrics(latency=False).latency is None and ws.base_metrics(latency=False).latency is None
    again = ws.metrics()
    assert again.latency is not first.latency and timed_beside(again.base_latency, again.latency)
    assert again.latency.timed_at > first.latency.timed_at
    assert ws.base_metrics().latency is again.base_latency


def test_a_latency_says_how_and_when_it_was_timed():
    lat = Latency(median_ms=3.92, iqr_ms=41, batch_size=64, threads=2, device="cpu", runs=12, timed_at=100.0,
                  interleaved=True)
    assert lat.how(now=100.0 + 180) == ("median of 12 runs (IQR 1046% of it: noisy) of one batch of 64 on "
                                        "cpu, 2 threads, fp32 (wall clock); timed 3 min ago, interleaved with the base")
    assert "IQR 10% of it" in Latency(10, 1, 8, 1, "cpu", 8).how() and "alone" in Latency(10, 1, 8, 1, "cpu", 8).how()
    assert not timed_beside(lat, Latency(3.9, 0.1, 64, 2, "cpu", 12, timed_at=100.0))  # the second not interleaved
