"""A person's own metric: ``package.module:function`` from their environment (like a factory,
never code from an upload), called as ``function(outputs, targets)`` on a whole eval subset.

- ``outputs``: the model's outputs on the subset, fp32 on the CPU: one tensor (N, K), or for a
  "dense" / "nest" model the ``{leaf: tensor}`` of its judged leaves;
- ``targets``: the subset's labels (N,), or label masks (N, H, W) for segmentation; for task
  "fidelity" (no labels) the base model's outputs, in the same form as ``outputs``.

It returns named figures: a dict of names (strings) to real numbers, shown beside the built-in
figures (Metrics.extra["own"]), base against current, labelled with the function's path. It is
computed by :meth:`Evaluator.evaluate` on every subset (a provisional glimpse included: its
figures are then of that slice). A function that raises is the person's code: the error names
it and keeps its traceback (chained).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from core.errors import PrunescopeError, echo, first_line

MAX_FIGURES = 16


def load_metric(path: str) -> Callable:
    """The function at ``path`` (``package.module:function``).

    Raises:
        PrunescopeError: not importable, or not callable."""
    from core.ground.registry import import_object

    fn = import_object(path)
    if not callable(fn):
        raise PrunescopeError(f"metric {path!r} is a {type(fn).__name__}, not a function of (outputs, targets)")
    return fn


def own_figures(fn: Callable, path: str, outputs, targets) -> dict[str, float]:
    """``fn(outputs, targets)`` checked: at most :data:`MAX_FIGURES` names to finite numbers.

    Raises:
        PrunescopeError: the function raised (chained: its traceback is kept), or returned
            something other than named real numbers."""
    cpu = (lambda t: t.detach().float().cpu() if t.is_floating_point() else t.detach().cpu())
    outs = {k: cpu(v) for k, v in outputs.items()} if isinstance(outputs, dict) else cpu(outputs)
    tgts = {k: cpu(v) for k, v in targets.items()} if isinstance(targets, dict) else cpu(targets)
    try:
        got = fn(outs, tgts)
    except Exception as exc:  # the person's code: said as theirs, its traceback chained
        raise PrunescopeError(f"your metric {path} raised {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(got, dict) or not got or len(got) > MAX_FIGURES:
        raise PrunescopeError(f"your metric {path} must return a dict of 1 to {MAX_FIGURES} names to numbers, "
                              f"e.g. {{'top5': 0.93}}; got {echo(got)}")
    out = {}
    for k, v in got.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise PrunescopeError(f"your metric {path} must return names (strings) to finite numbers; got "
                                  f"{echo(k)}: {echo(v)}")
        out[k] = float(v)
    return out


__all__ = ["load_metric", "own_figures", "MAX_FIGURES"]
