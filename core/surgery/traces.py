"""Traces of a source model for :func:`~core.surgery.stitch.stitch`: one forward pass of the
calibration batch gives each block's input and output and what the model's forward passes
each block besides its input (:func:`trace_blocks`).

A trace is kept in the apply context's memo of the model it was taken from (per container;
see :class:`Trace`), so the cut, paste or compose after it (the Surgery page's next edit,
the drop-one guides, a donor pasted twice) fits its bridges without tracing again.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.sources.bases import clone_model
from core.surgery.blocks import block_activations, container_of
from core.surgery.carry import first_tensor, tail
from core.surgery.rootview import RootView


def block_calls(model: nn.Module, container: str, x: torch.Tensor) -> tuple[list[tuple[tuple, dict]], list]:
    """What the model's forward passes each block of ``container`` besides its input tensor
    (extra positional and keyword arguments: a transformers decoder layer's position
    embeddings and attention mask; ``((), {})`` for a block called with its input alone), and
    what each block returned after its tensor (``carry.tail``: MViT's ``thw``; None for a
    tensor), recorded on one forward pass of ``x``. Call on a private copy (hooks are added)."""
    c = container_of(model, container)
    children = list(c.children()) if isinstance(c, (nn.Sequential, nn.ModuleList)) else []
    if not children:  # the root view: its children are called as the model's forward does, with nothing carried
        return [], []
    got: list[tuple[tuple, dict] | None] = [None] * len(children)
    tails: list = [None] * len(children)
    handles = []

    def pre(i):
        def hook(_m, args, kwargs):
            if got[i] is None:
                got[i] = (tuple(args[1:]), dict(kwargs))
        return hook

    def post(i):
        def hook(_m, _a, o):
            if tails[i] is None:
                tails[i] = tail(o)
        return hook

    try:
        for i, ch in enumerate(children):
            handles.append(ch.register_forward_pre_hook(pre(i), with_kwargs=True))
            handles.append(ch.register_forward_hook(post(i)))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [g if g is not None else ((), {}) for g in got], tails


ROOT_TRACE = "root trace"  # key in ``ctx.memo(model)``: what a trace found about the root's children
SEAM_ACTS = "seam activations"  # key prefix in ``ctx.memo(model)``: a container's :class:`Trace`
MEMO_BYTES = 256 << 20  # a trace holding more activations than this is not kept in the memo


def _signature(model: nn.Module) -> tuple | None:
    """What an in-place edit of ``model`` changes: its mode and each parameter's and buffer's
    identity and version counter (None: inference tensors, which keep no version)."""
    ts = [*model.parameters(), *model.buffers()]
    if any(t.is_inference() for t in ts):
        return None
    return model.training, tuple((id(t), t._version) for t in ts)


@dataclass
class Trace:
    """One forward of a source model's calibration batch ``x``, as a stitch uses it: each
    block's input and the last one's output (``acts``, r_0 .. r_N), each block's output
    (``outs``, the first tensor of a tuple; None for the root view or where unknown) and what
    the model's forward passes each block besides its input (``extras``, None until known) and
    what each block returned after its tensor (``tails``, ``carry.tail`` of its output; None until known).
    Kept in the apply context's memo of the model, per container, while the model's tensors
    stay the same (``signature``) and only when it holds at most ``MEMO_BYTES``."""

    x: torch.Tensor
    signature: tuple | None
    acts: list[torch.Tensor]
    outs: list[torch.Tensor | None] | None = None
    extras: list[tuple[tuple, dict]] | None = None
    tails: list | None = None

    def fits(self, model: nn.Module, x: torch.Tensor) -> bool:
        """Whether this trace is of ``model`` as it is now, on the batch ``x``."""
        if self.signature is None or self.signature != _signature(model):
            return False
        return self.x is x or (self.x.shape == x.shape and self.x.device == x.device and torch.equal(self.x, x))

    def nbytes(self) -> int:
        """Bytes of the activations held (a tensor sharing another's storage counted once)."""
        seen: dict[int, int] = {}
        for t in [*self.acts, *(self.outs or [])]:
            if t is not None:
                st = t.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
        return sum(seen.values())


def trace_blocks(model: nn.Module, container: str, x: torch.Tensor) -> tuple[list, list | None, list, list]:
    """``(acts, outs, extras, tails)`` of ``container`` on ``x`` in one forward pass (see :class:`Trace`;
    ``core.surgery.blocks.block_activations`` and :func:`block_calls` in one). Call on a
    private copy (hooks are added)."""
    c = container_of(model, container)
    if isinstance(c, RootView):
        return block_activations(model, container, x), None, [], []
    children = list(c.children())
    extras: list[tuple[tuple, dict] | None] = [None] * len(children)
    outs: list[torch.Tensor | None] = [None] * len(children)
    tails: list = [None] * len(children)
    handles = []

    def pre(i):
        def hook(_m, args, kwargs):
            if extras[i] is None:
                extras[i] = (tuple(args[1:]), dict(kwargs))
        return hook

    def post(i):
        def hook(_m, _a, o):
            t = first_tensor(o)
            if outs[i] is None and isinstance(t, torch.Tensor):
                outs[i], tails[i] = t.detach(), tail(o)
        return hook

    try:
        for i, ch in enumerate(children):
            handles.append(ch.register_forward_pre_hook(pre(i), with_kwargs=True))
            handles.append(ch.register_forward_hook(post(i)))
        acts = block_activations(model, container, x)
    finally:
        for h in handles:
            h.remove()
    return acts, outs, [e if e is not None else ((), {}) for e in extras], tails


def memo_trace(memo: dict, container: str, owner: nn.Module, traced: nn.Module, x: torch.Tensor) -> Trace:
    """Trace ``container`` of ``traced`` (a private copy of ``owner``) on ``x``, keeping the
    trace in ``memo`` (``ctx.memo(owner)``) when it is small enough."""
    tr = Trace(x, _signature(owner), *trace_blocks(traced, container, x))
    _remember_trace(traced, container, memo)
    if tr.signature is not None and tr.nbytes() <= MEMO_BYTES:
        memo[(SEAM_ACTS, container)] = tr
    return tr


def memo_hit(memo: dict, container: str, owner: nn.Module, x: torch.Tensor) -> Trace | None:
    """The trace of ``container`` kept in ``memo`` (``ctx.memo(owner)``) if it is of ``owner``
    as it is now, on the batch ``x``; else None."""
    hit = memo.get((SEAM_ACTS, container))
    return hit if hit is not None and hit.fits(owner, x) else None


def _remember_trace(traced: nn.Module, container: str, memo: dict) -> None:
    view = container_of(traced, container)
    if isinstance(view, RootView):
        memo[ROOT_TRACE] = view.trace()


def traced_activations(model: nn.Module, ctx, container: str, x: torch.Tensor) -> list[torch.Tensor]:
    """``r_0 .. r_N`` of ``container`` on ``x``, traced on a private copy of ``model``
    (``core.surgery.blocks.block_activations``), for a later :func:`stitch`'s
    ``acts_cache``; the memo's trace (:class:`Trace`) when a stitch traced it already.
    Side effect: the trace, and what it found about a root view's children, are kept in
    ``ctx.memo(model)``, where the stitch reusing them reads them."""
    memo = ctx.memo(model)
    hit = memo_hit(memo, container, model, x)
    if hit is not None:
        return hit.acts
    return memo_trace(memo, container, model, clone_model(model), x).acts


__all__ = ["Trace", "trace_blocks", "traced_activations", "memo_trace", "memo_hit", "block_calls",
           "first_tensor",
           "ROOT_TRACE", "SEAM_ACTS", "MEMO_BYTES"]
