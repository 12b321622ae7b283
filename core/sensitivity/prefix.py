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
``layers.2`` needs no entry for ``layers.2.conv1``). Outputs are copied when recorded, and
handed back as copies until a run shows that nothing modifies them in place (the copy's
version counter did not move); from then on the record itself is handed back, and should a
run ever modify it (its version counter moves) it is dropped after that run, which was
still right. So an in-place operation after them (``ReLU(inplace=True)``, ``x += y``) changes
neither the record nor the next run, and outputs nothing modifies cost no copy (about a tenth
of a weight-level sweep of digits_resnet). Shared modules (called twice) are never skipped.
"""
from __future__ import annotations

import torch
import torch.utils._pytree as pytree
from torch import nn


def _returning(out: torch.Tensor):
    """A ``forward`` that ignores its inputs and returns a copy of the recorded ``out``."""
    return lambda *a, **k: out.clone()


def _handing(out: torch.Tensor):
    """A ``forward`` that ignores its inputs and returns ``out`` itself."""
    return lambda *a, **k: out

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
            with torch.no_grad():  # (not inference mode: records keep a version counter)
                self.output = model(x)
        finally:
            for h in handles:
                h.remove()


def _clone(out):
    """A detached copy of a model's output: a tensor, or every tensor of a nest of them."""
    return pytree.tree_map(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, out)


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
        self._direct: set[str] = set()  # outputs no run modified in place: handed back without a copy
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
        patched, handed = [], {}  # handed: name -> (tensor handed back, its version before the run)
        try:
            for n in skip:
                m, out = mods[n], self.outputs[n]
                if n not in self._direct:
                    with torch.inference_mode(False), torch.no_grad():  # a copy with a version counter
                        out = out.clone()
                handed[n] = (out, out._version)
                m.forward = _handing(out)
                patched.append(m)
            y = model(self.x)
        finally:
            for m in patched:
                del m.forward
            for n, (t, v) in handed.items():
                if t._version == v:
                    self._direct.add(n)
                elif n in self._direct:  # the record itself was modified in place: this run was right, the record
                    del self.outputs[n]  # is not any more
                    self._direct.discard(n)
        # an output that is (a view of) a record handed back: a copy, so the caller may modify it
        held = {t.untyped_storage().data_ptr() for t, _ in handed.values()}
        return pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) and
                               t.untyped_storage().data_ptr() in held else t, y)


class _Flow:
    """Execution order and data flow of one forward at module level: positions as in
    :class:`_Trace`, which modules produced each tensor an operation consumed (module outputs
    by identity, kept alive so an identity names one tensor), and the stack of modules each
    operation ran inside (a ``TorchFunctionMode`` sees every torch function and tensor method)."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        from torch.overrides import TorchFunctionMode
        from torch.utils._pytree import tree_flatten

        self.start, self.end, self.calls, self.ops = {}, {}, {}, []  # ops: (module stack, producer names)
        made_by: dict[int, set[str]] = {}
        outs: dict[str, torch.Tensor] = {}
        clock, stack, handles = [0], [()], []

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                prods = set()
                for a in tree_flatten((args, kwargs))[0]:
                    if isinstance(a, torch.Tensor):
                        prods |= made_by.get(id(a), set())
                if prods:
                    flow.ops.append((stack[0], prods))
                return func(*args, **kwargs)

        def pre(name):
            def hook(_m, _inp):
                self.calls[name] = self.calls.get(name, 0) + 1
                self.start.setdefault(name, clock[0])
                clock[0] += 1
                stack[0] = stack[0] + (name,)
            return hook

        def post(name):
            def hook(_m, _inp, out):
                self.end[name] = clock[0]
                clock[0] += 1
                stack[0] = stack[0][:-1]
                if isinstance(out, torch.Tensor):
                    outs[name] = out
                    made_by.setdefault(id(out), set()).add(name)
            return hook

        flow = self
        for name, m in model.named_modules():
            if name:
                handles += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name))]
        try:
            with torch.inference_mode(), Mode():
                out = model(x)
        finally:
            for h in handles:
                h.remove()
        self.final = set().union(*(made_by.get(id(t), set()) for t in tree_flatten(out)[0]
                                   if isinstance(t, torch.Tensor)))
        self.ok = {n for n in outs if self.calls.get(n) == 1}
        self.example_bytes = {n: t.numel() * t.element_size() for n, t in outs.items()}
        self.meta = {n: (tuple(t.shape[1:]), t.dtype) for n, t in outs.items()}
        self._needs: dict[int, tuple[list[str], set[str]]] = {}

    def skippable(self, s: int) -> list[str]:
        done = {n for n in self.ok if self.end[n] < s}
        return [n for n in done if not any(p in done for p in _ancestors(n))]

    def needs(self, s: int) -> tuple[list[str], set[str]]:
        """(modules skipped for a change starting at ``s``, those whose output something that
        still runs consumes: their recorded outputs are needed; the rest may return anything)."""
        if s not in self._needs:
            skip = self.skippable(s)
            inside = set(skip)
            need = self.final & inside
            for stack, prods in self.ops:
                if not any(n in inside for n in stack):  # (the call stack: nothing inside a skipped one runs)
                    need |= prods & inside
            self._needs[s] = (skip, need)
        return self._needs[s]


def _digest(m: nn.Module) -> bytes:
    """A hash of the module's own parameters and buffers (not its children's)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for _, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
        if t is not None:
            h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.digest()


class LivePrefix:
    """The live loop's prefix reuse: the model evaluated last on a batch leaves the outputs of
    chosen modules behind, and the next model, when it differs from it only from some module on
    (a per-layer override moved on a late layer), runs from them instead of from the input.

    What changed is found by content: a hash of each module's own weights and buffers, so any
    edit (a mask, a copy) is seen. A change starting at position ``s`` skips the outermost
    modules that finished before ``s``; of those, only the outputs that something still running
    consumes are handed back (the data flow of one traced forward says which), the others
    return an empty stand-in. The outputs kept are those the latest changes need, the latest
    first, within ``budget_bytes`` (default 512 MiB) for the whole batch; a change that needs
    more than was kept starts from the latest earlier position whose needs were kept, or runs
    the whole forward. A new structure (names, types, shapes), batch, tag (the precision) or a
    model in training mode or not made of PyTorch modules (an int8 onnxruntime model) runs the
    whole forward.

    Attributes:
        skipped: the modules the last run skipped (empty: a whole forward).
    """

    def __init__(self, budget_bytes: int = 512 << 20):
        self.budget_bytes = budget_bytes
        self.skipped: list[str] = []
        self._flow: tuple | None = None  # (structure, _Flow)
        self._last: tuple | None = None  # (key, digests, records, output)

    def _flow_of(self, model: nn.Module, x: torch.Tensor, structure: tuple) -> _Flow:
        if self._flow is None or self._flow[0] != structure:
            self._flow = (structure, _Flow(model, x[:1]))
        return self._flow[1]

    def _kept(self, flow: _Flow, n_examples: int) -> set[str]:
        """The outputs to keep: those the latest change positions need, within the budget."""
        keep, total = set(), 0
        for s in sorted(set(flow.start.values()), reverse=True):
            more = flow.needs(s)[1] - keep
            b = sum(flow.example_bytes[n] for n in more) * n_examples
            if total + b > self.budget_bytes:
                break
            keep |= more
            total += b
        return keep

    @torch.inference_mode()
    def run(self, model: nn.Module, x: torch.Tensor, tag: str = "") -> torch.Tensor:
        """``model``'s output on ``x``, equal to ``model(x)``; keeps what the next run may reuse."""
        self.skipped = []
        if getattr(model, "final", False) or model.training:
            self._last = None
            return model(x)
        mods = dict(model.named_modules())
        structure = tuple((n, type(m).__qualname__, tuple(
            (k, tuple(t.shape)) for k, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
            if t is not None)) for n, m in mods.items())
        key = (structure, x.data_ptr(), tuple(x.shape), str(x.device), tag)
        digests = {n: _digest(m) for n, m in mods.items()}
        flow = self._flow_of(model, x, structure)
        keep = self._kept(flow, len(x))
        records: dict[str, torch.Tensor] = {}
        skip, need = [], set()
        if self._last is not None and self._last[0] == key:
            _, old, records, out = self._last
            changed = [n for n in digests if digests[n] != old[n]]
            if not changed:
                return _clone(out)
            first = min((flow.start[n] for n in changed if n in flow.start), default=None)
            for s in sorted((p for p in set(flow.start.values()) if first is not None and p <= first), reverse=True):
                skip, need = flow.needs(s)
                if need <= records.keys():
                    break
                skip, need = [], set()
        out = self._forward(model, mods, x, skip, need, records, keep)
        self._last = (key, digests, records, _clone(out))
        self.skipped = sorted(skip, key=flow.start.get)
        return out

    def _forward(self, model, mods, x, skip, need, records, keep) -> torch.Tensor:
        """One forward with ``skip`` patched (``need`` from ``records``), recording ``keep``."""
        patched, handles = [], []

        def record(name):
            def hook(_m, _inp, out):
                records[name] = out.detach().clone()
            return hook

        try:
            for n in skip:
                m = mods[n]
                if n in need:
                    m.forward = _returning(records[n])
                else:
                    shape, dtype = self._flow[1].meta[n]
                    standin = torch.zeros((), dtype=dtype, device=x.device).expand(len(x), *shape)  # no memory
                    m.forward = lambda *a, _t=standin, **k: _t
                patched.append(m)
            inside = set(skip)
            for n in keep:
                if n not in inside and not any(p in inside for p in _ancestors(n)):
                    handles.append(mods[n].register_forward_hook(record(n)))
            return model(x)
        finally:
            for m in patched:
                del m.forward
            for h in handles:
                h.remove()


def _ancestors(name: str) -> list[str]:
    out = []
    p = _parent(name)
    while p:
        out.append(p)
        p = _parent(p)
    return out


__all__ = ["PrefixCache", "LivePrefix"]
