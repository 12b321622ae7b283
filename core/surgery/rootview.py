"""The root view: a model whose own class is not a container (inception_v3) seen as the
sequence of its top-level children, in the order they are defined, which must be the
order its forward runs them. A child that does not run (an auxiliary head in eval mode),
or runs more than once (a shared activation), passes its input through in the chain of
blocks that bridges are fitted along. Cutting a root block puts its bridge in that
attribute; the model's own forward stays (``blocks.py`` uses this for container ``""``).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from core.errors import ModelError
from core.surgery.modelcache import ModelCache


class RootBlock(nn.Module):
    """One top-level child of a root that is not a container, as a block of the root view.

    Used only while a view is traced or stitched, never left inside a model. It adds what
    the root's forward does between children and a chain of blocks would not: the reshape
    to the input shape the child saw (a flatten before the classifier), and a pass-through
    for a child the forward does not run."""

    def __init__(self, child: nn.Module):
        super().__init__()
        self.child = child
        self.in_shape: tuple[int, ...] | None = None  # one example's input shape, once traced
        self.ran = True  # False: the root's forward does not call it (it passes its input on)

    def forward(self, x):
        if not self.ran:
            return x
        s = self.in_shape
        if s is not None and isinstance(x, torch.Tensor) and tuple(x.shape[1:]) != s \
                and x[0].numel() == math.prod(s):
            x = x.reshape(len(x), *s)
        return self.child(x)


RootTrace = tuple[tuple[bool, "tuple[int, ...] | None"], ...]  # per child: (runs once, input shape)


class RootView(nn.Sequential):
    """The root's top-level children as a Sequential of :class:`RootBlock` (not part of the model)."""

    def trace(self) -> RootTrace:
        """What the last trace (:func:`root_activations`) found, per child: (runs once, input shape)."""
        return tuple((b.ran, b.in_shape) for b in self.children())

    def learn(self, trace: RootTrace) -> None:
        """Give the blocks what a trace of a model of the same layout found (a private copy
        whose activations were computed once and are reused)."""
        for b, (ran, shape) in zip(self.children(), trace):
            b.ran, b.in_shape = ran, shape


# The view's blocks carry what a trace found, and a stitch looks the view of one model up
# several times (trace, then the blocks to run): it must get the same blocks each time.
_VIEWS: ModelCache[tuple] = ModelCache(size=64)


def root_view(model: nn.Module) -> RootView:
    """The root view of ``model``: the same object while its children stay the same objects
    (kept in a bounded weak-keyed cache, see :mod:`core.surgery.modelcache`)."""
    kids = tuple((n, id(c)) for n, c in model.named_children())
    hit = _VIEWS.get(model)
    if hit is not None and hit[0] == kids:
        return hit[1]
    view = RootView(OrderedDict((n, RootBlock(c)) for n, c in model.named_children()))
    view.train(model.training)
    _VIEWS.put(model, (kids, view))
    return view


def unwrap(m: nn.Module) -> nn.Module:
    """The model's own child inside a :class:`RootBlock`; any other module as it is."""
    return m.child if isinstance(m, RootBlock) else m


def set_root_blocks(model: nn.Module, new: nn.Module) -> nn.Module:
    """Make ``model``'s top-level children what the root view ``new`` holds (in place; returns
    ``model``): kept children stay, each run of removed children is replaced by what was put
    between its neighbours (the bridge; later removed children of the run become
    ``nn.Identity``), so the model keeps its own forward.

    Raises:
        ModelError: kept children reordered, or blocks inserted where none was cut.
    """
    old = [(n, b.child) for n, b in root_view(model).named_children()]
    old_names = [n for n, _ in old]
    items = [(n, unwrap(m)) for n, m in new.named_children()]
    kept = [i for i, (n, m) in enumerate(items) if any(n == o and m is c for o, c in old)]
    kept_names = [items[i][0] for i in kept]
    pos = [old_names.index(n) for n in kept_names]
    if pos != sorted(pos):
        raise ModelError("the model's top-level children are called by its own forward: they can be cut or "
                         "replaced, not reordered")
    bounds = [-1] + kept + [len(items)]
    old_bounds = [-1] + pos + [len(old)]
    for g in range(len(bounds) - 1):
        inserted = [m for _, m in items[bounds[g] + 1:bounds[g + 1]]]
        removed = old_names[old_bounds[g] + 1:old_bounds[g + 1]]
        if inserted and not removed:
            where = f"after {kept_names[g - 1]!r}" if g else "at the start"
            raise ModelError(f"cannot insert blocks {where} of the model's top-level children: they are "
                             "attributes its own forward calls, so a block can only take the place of one "
                             "that is cut; use a container (nn.Sequential / nn.ModuleList) instead")
        for k, name in enumerate(removed):
            if k == 0 and inserted:
                rep = inserted[0] if len(inserted) == 1 else nn.Sequential(*inserted)
            else:
                rep = nn.Identity()
            setattr(model, name, rep)
    return model


def root_activations(model: nn.Module, view: RootView, x: torch.Tensor) -> list[torch.Tensor]:
    """``r_0 .. r_N`` of the root view (see ``core.surgery.blocks.block_activations``). A child the forward does
    not call passes the activation before it on; the view's blocks learn the input shape
    each child saw (so a chain of them reshapes where the forward flattens).

    Raises:
        ModelError: children called out of the order they are defined, or a child called with
            something other than one tensor.
    """
    blocks = [b for _, b in view.named_children()]
    names = [n for n, _ in view.named_children()]
    n = len(blocks)
    ins: list = [None] * n
    outs: list = [None] * n
    calls = [0] * n
    order: list[int] = []
    handles = []

    def pre(i):
        def hook(_m, args):
            calls[i] += 1
            if calls[i] == 1:
                if not args or not isinstance(args[0], torch.Tensor):
                    raise ModelError(f"top-level child {names[i]!r} does not take one tensor")
                ins[i] = args[0].detach()
                order.append(i)
        return hook

    def post(i):
        def hook(_m, _a, o):
            if calls[i] == 1:
                outs[i] = o.detach() if isinstance(o, torch.Tensor) else None
        return hook

    for i, b in enumerate(blocks):
        handles.append(b.child.register_forward_pre_hook(pre(i)))
        handles.append(b.child.register_forward_hook(post(i)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    once = [i for i in order if calls[i] == 1]  # a child run more than once is a pass-through
    if once != sorted(once):
        ran = [names[i] for i in once]
        raise ModelError(f"the model's top-level children run in another order ({', '.join(ran[:8])}"
                         f"{' ...' if len(ran) > 8 else ''}) than they are defined; choose a container")
    for i, b in enumerate(blocks):
        b.ran = calls[i] == 1
        b.in_shape = tuple(ins[i].shape[1:]) if b.ran else None
        if b.ran and not isinstance(outs[i], torch.Tensor):
            raise ModelError(f"top-level child {names[i]!r} does not return one tensor")
        if not b.ran:
            ins[i] = None
    acts: list[torch.Tensor] = []
    cur = next((t for t in ins if t is not None), x)
    for i in range(n):
        if ins[i] is not None:
            acts.append(ins[i])
            cur = outs[i]
        else:
            acts.append(cur)
    acts.append(cur)
    return acts


__all__ = ["RootBlock", "RootView", "RootTrace", "root_view", "unwrap", "set_root_blocks", "root_activations"]
