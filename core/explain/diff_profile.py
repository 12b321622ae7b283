"""Per-module latency of the base and the current model, measured with ``torch.profiler``:
each leaf module's forward is wrapped in a ``record_function`` (entered by a forward pre-hook,
left by a forward hook) and read from ``key_averages()``. Both models run on the same batch
and threads, interleaved, several times; each module's time is the median over the runs.
This answers "MACs dropped but latency did not": a layer's share of the time can differ much
from its share of the MACs (memory-bound norms, activations, reshapes)."""
from __future__ import annotations

import statistics

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from core.explain.diff_figures import is_leaf

PREFIX = "prunescope::"  # record_function names: never an operator's


def _hooks(model: nn.Module) -> list:
    """Forward pre/post hooks that enter and leave ``record_function(PREFIX + path)`` around
    every leaf module's forward."""
    handles, open_ = [], {}

    def pre(name):
        def hook(_m, _a):
            rf = record_function(PREFIX + name)
            rf.__enter__()
            open_.setdefault(name, []).append(rf)
        return hook

    def post(name):
        def hook(_m, _a, _o):
            open_[name].pop().__exit__(None, None, None)
        return hook

    for n, m in model.named_modules():
        if n and is_leaf(m):
            handles.append(m.register_forward_pre_hook(pre(n)))
            handles.append(m.register_forward_hook(post(n)))
    return handles


def _one_run(model: nn.Module, x: torch.Tensor, cuda: bool) -> dict[str, float]:
    """Milliseconds per leaf module of one forward of ``x`` (all calls of a module added)."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof, torch.inference_mode():
        model(x)
        if cuda:
            torch.cuda.synchronize(x.device)
    out = {}
    for ev in prof.key_averages():
        if ev.key.startswith(PREFIX):
            us = ev.device_time_total if cuda else ev.cpu_time_total
            out[ev.key[len(PREFIX):]] = us / 1000.0
    return out


def _spread(totals: list[float]) -> float:
    """(max - min) / median of a side's summed module time over the runs."""
    med = statistics.median(totals)
    return (max(totals) - min(totals)) / med if med > 0 else 0.0


def profile_pair(base: nn.Module, current: nn.Module, example: torch.Tensor, batch: int = 32,
                 runs: int = 5) -> tuple[dict[str, float], dict[str, float], str]:
    """Per-leaf-module time of ``base`` and ``current`` on one batch of ``batch`` copies of the
    first example, same threads and device, runs interleaved (one warm-up each first).

    Returns:
        ``(base ms per module, current ms per module, note)``: each module's median over
        ``runs``; the note says batch, threads, device, runs and the spread, and calls the
        timing noisy when a side's spread passes ``core.metrics.cost.NOISY_SPREAD``.
        The models are only read; the hooks are removed.
    """
    from core.metrics.cost import NOISY_SPREAD

    x = example[:1].repeat(batch, *([1] * (example.dim() - 1)))
    cuda = x.device.type == "cuda"
    handles = _hooks(base) + _hooks(current)
    samples: tuple[list[dict], list[dict]] = ([], [])
    try:
        _one_run(base, x, cuda), _one_run(current, x, cuda)  # warm-up: allocations, lazy init
        for _ in range(runs):
            samples[0].append(_one_run(base, x, cuda))
            samples[1].append(_one_run(current, x, cuda))
    finally:
        for h in handles:
            h.remove()
    medians = [{k: statistics.median(s.get(k, 0.0) for s in side) for k in side[0]} for side in samples]
    spreads = [_spread([sum(s.values()) for s in side]) for side in samples]
    clock = "device (CUDA) time" if cuda else "CPU time"
    note = (f"torch.profiler {clock} per leaf module, median of {runs} interleaved runs after a warm-up, "
            f"batch {batch}, {torch.get_num_threads()} thread(s), {x.device}; spread (max-min)/median of the "
            f"summed module time: base {spreads[0]:.0%}, current {spreads[1]:.0%}")
    if max(spreads) > NOISY_SPREAD:
        note += " - noisy: compare shares, or profile again on a quieter machine"
    return medians[0], medians[1], note


__all__ = ["profile_pair", "PREFIX"]
