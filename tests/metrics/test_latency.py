"""Latency: base and current timed back to back, interleaved, and a speed conclusion
drawn only outside the noise of the two timings."""
from __future__ import annotations

import torch

from core.metrics.cost import Latency, measure_latency_pair, speed_verdict
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
    ws.set_plan(ws.plan.prefix(0).then(Prune(sparsity=0.5)))  # masks: the base's own timing, twice
    m = ws.metrics()
    assert not m.shapes_changed and m.base_latency is m.latency
