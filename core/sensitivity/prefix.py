"""Run an edited model on a fixed batch, reusing what the unedited model computed before
the first module the edit changed.

A sensitivity sweep runs the same batch through hundreds of models that differ from one
source model in one layer (or one coupled group). Every module that *finished* before the
first changed module started computes exactly what it computed in the source, so its
output is recorded once (a forward hook on the source) and handed back instead of running
it (the module's ``forward`` is replaced for that one call). Only the modules from the
first changed one on are recomputed: pruning a late layer costs a late part of a forward.

Which modules can be skipped is read from the execution order, not from the graph: one
traced forward records when each module starts and ends and how often it is called. A
module qualifies for a change starting at position ``s`` when it was called once, ended
before ``s`` and returned a tensor; of those, the outermost are skipped (a skipped
``layers.2`` needs no entry for ``layers.2.conv1``). Outputs are copied when recorded and
when handed back, so an in-place operation after them (``ReLU(inplace=True)``) changes
neither the record nor the next run. Shared modules (called twice) are never skipped.
"""
from __future__ import annotations

import torch
from torch import nn


def _returning(out: torch.Tensor):
    """A ``forward`` that ignores its inputs and returns a copy of the recorded ``out``."""
    return lambda *a, **k: out.clone()

class _Trace:
    """Execution order of one forward: start / end positions and call counts per module."""

    def __init__(self, model: nn.Module, x: torch.Tensor, keep: set[str] | bool = False):
        self.start: dict[str, int] = {}
        self.end: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.tensor_out: set[str] = set()
        self.outputs: dict[str, torch.Tensor] = {}
        clock = [0]
        handles = []

        def pre(name):
            def hook(_m, _inp):
                self.calls[name] = self.calls.get(name, 0) + 1
                self.start.setdefault(name, clock[0])
                clock[0] += 1
            return hook

        def post(name):
            def hook(_m, _inp, out):
                self.end[name] = clock[0]
                clock[0] += 1
                if isinstance(out, torch.Tensor):
                    self.tensor_out.add(name)
                    if keep is True or (keep and name in keep):
                        self.outputs[name] = out.detach().clone()
            return hook

        for name, m in model.named_modules():
            if name:
                handles.append(m.register_forward_pre_hook(pre(name)))
                handles.append(m.register_forward_hook(post(name)))
        try:
            with torch.inference_mode():
                self.output = model(x)
        finally:
            for h in handles:
                h.remove()


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


class PrefixCache:
    """The source model's module outputs on one batch, and runs of edited copies of it
    that skip every module finished before the edit's first changed module.

    Args:
        source: the unedited model (not changed; traced with hooks that are removed).
        x: the batch every run uses.
        starts: module names whose edits will be asked for (e.g. every prunable layer);
            the outputs recorded are those any of them can skip.
        budget_bytes: at most this many bytes of recorded outputs; modules that fewer of
            ``starts`` can skip are dropped first when over.
    """

    def __init__(self, source: nn.Module, x: torch.Tensor, starts: list[str], budget_bytes: int = 1 << 30):
        self.x = x
        order = _Trace(source, x[:1], keep=True)  # positions, and bytes per example of each output
        self.start, self.end, self.calls = order.start, order.end, order.calls
        self._ok = {n for n in order.tensor_out if self.calls.get(n) == 1}
        uses: dict[str, int] = {}
        for s in starts:
            for n in self._skippable(self.start.get(s)):
                uses[n] = uses.get(n, 0) + 1
        keep, total = set(), 0
        for n in sorted(uses, key=lambda n: -uses[n]):
            t = order.outputs[n]
            b = t.numel() * t.element_size() * len(x)
            if total + b <= budget_bytes:
                keep.add(n)
                total += b
        full = _Trace(source, x, keep=keep)
        self.outputs = full.outputs
        self.output = full.output  # the source's own output on x
        self.bytes = total

    def _skippable(self, s: int | None) -> list[str]:
        """The outermost modules that ended before position ``s`` and can be skipped."""
        if s is None:
            return []
        done = {n for n in self._ok if self.end[n] < s}
        return [n for n in done if not any(p in done for p in _ancestors(n))]

    def first_start(self, changed: list[str]) -> int | None:
        """Where the earliest of ``changed`` starts (None: none of them runs, or not known)."""
        pos = [self.start[n] for n in changed if n in self.start]
        return min(pos) if pos else None

    @torch.inference_mode()
    def run(self, model: nn.Module, changed: list[str]) -> torch.Tensor:
        """``model``'s output on the batch; ``model`` is a copy of the source (same module
        names) whose modules ``changed`` may differ, every other module as in the source.
        Without a known changed module the whole forward runs."""
        s = self.first_start(changed)
        skip = [n for n in (self._skippable(s) if s is not None else []) if n in self.outputs]
        if not skip:
            return model(self.x)
        mods = dict(model.named_modules())
        patched = []
        try:
            for n in skip:
                m, out = mods[n], self.outputs[n]
                m.forward = _returning(out)
                patched.append(m)
            return model(self.x)
        finally:
            for m in patched:
                del m.forward


def _ancestors(name: str) -> list[str]:
    out = []
    p = _parent(name)
    while p:
        out.append(p)
        p = _parent(p)
    return out


__all__ = ["PrefixCache"]
