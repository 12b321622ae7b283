"""A model as a sequence of blocks: containers, block names, tracing.

A model's *blocks* are the children of one container (an ``nn.Sequential`` or
``nn.ModuleList``); of an ``nn.ModuleDict`` whose own forward runs its children in order
(torchvision's IntermediateLayerGetter, the body of a detector's backbone); or, for a model
whose own class is neither (inception_v3), of its root (container ``""``). The last two are
seen through the root view (``rootview.py``): their children in the order they are defined.
Container paths are ``paths.py``'s, the default container ``choice.py``'s. A block is named by its module path
(``"layers.2"``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import FOREIGN_ERRORS, ModelError
from core.sources.bases import clone_model
from core.surgery.carry import first_tensor
from core.surgery.choice import default_container
from core.surgery.paths import (
           container_candidates,
           get_module,
           is_container,
           is_dict_container,
           join_path,
           split_block,
)
from core.surgery.rootview import RootView, root_activations, root_view, set_root_blocks, unwrap


def container_of(model: nn.Module, path: str) -> nn.Module:
    """The container at ``path``: a Sequential / ModuleList, or the root view
    (:class:`~core.surgery.rootview.RootView`) of a ModuleDict, or of ``""`` when the root is neither.

    Raises:
        ModelError: ``path`` is no module of ``model``, or not a container; lists the containers.
    """
    c = get_module(model, path)
    if path == "" and not is_container(c) or is_dict_container(c):
        return root_view(c)
    if not is_container(c):
        raise ModelError(f"container {path!r} is a {type(c).__name__}, expected an nn.Sequential or "
                         f"nn.ModuleList (its forward must run its children in order), or '' for the "
                         f"model's top-level children; containers: {container_candidates(model)}")
    return c


def block_names(model: nn.Module, container: str) -> list[str]:
    """Full paths of the blocks in ``container``, in order."""
    c = container_of(model, container)
    return [join_path(container, n) for n, _ in c.named_children()]


def locate_block(model: nn.Module, name: str, what: str = "model") -> tuple[str, int]:
    """(container path, position) of block ``name``; ``what`` names the model in messages.

    Raises:
        ModelError: not a child of a Sequential / ModuleList; lists the valid blocks.
    """
    parent, _ = split_block(name)
    try:
        names = block_names(model, parent)
    except ModelError as exc:
        cont = default_container(model)
        raise ModelError(f"block {name!r} is not a block of the {what}; blocks: "
                         f"{block_names(model, cont)}") from exc
    if name not in names:
        raise ModelError(f"block {name!r} is not in the {what}; blocks of {parent or 'the model'!r}: {names}")
    return parent, names.index(name)


def set_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``path`` inside ``model`` (in place); returns the (new) root.

    For the root view (``path == ""`` on a root that is not a container), ``new`` is the
    view's new sequence of blocks: kept children stay where they are, and each run of
    removed children is replaced in place by what was put between its neighbours (the
    bridge; later removed children of the run become ``nn.Identity``), so the model keeps
    its own forward."""
    if path == "":
        if is_container(model):
            return new
        return set_root_blocks(model, new)
    if is_dict_container(at := get_module(model, path)):
        set_root_blocks(at, new)
        return model
    parent, _, leaf = path.rpartition(".")
    setattr(get_module(model, parent), leaf, new)
    return model


def block_activations(model: nn.Module, container: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Inputs of each block of ``container`` and the last block's output: ``r_0 .. r_N``.

    Hooks are put on ``model`` for one forward pass and removed; call it on a private
    copy only (a shared base may be running in another thread). For the root view the
    trace also records, on the view's blocks, which children ran and their input shapes.

    Raises:
        ModelError: a block was not called once with one tensor.
    """
    c = container_of(model, container)
    if isinstance(c, RootView):
        return root_activations(model, c, x)
    children = list(c.children())
    n = len(children)
    ins: list[torch.Tensor | None] = [None] * n
    out: list[torch.Tensor | None] = [None]
    handles = []

    def pre(i):
        def hook(_m, args):
            if not args or not isinstance(args[0], torch.Tensor):
                raise ModelError(f"block {i} of {container!r} does not take one tensor")
            if ins[i] is None:
                ins[i] = args[0].detach()
        return hook

    def post(_m, _args, o):
        o = first_tensor(o)  # a carried chain's last block returns (tensor, *tail)
        if not isinstance(o, torch.Tensor):
            raise ModelError(f"the last block of {container!r} does not return one tensor")
        out[0] = o.detach()

    try:
        for i, ch in enumerate(children):
            handles.append(ch.register_forward_pre_hook(pre(i)))
        if n:
            handles.append(children[-1].register_forward_hook(post))
        else:
            handles.append(c.register_forward_pre_hook(lambda _m, a: ins.append(a[0].detach())))
            handles.append(c.register_forward_hook(lambda _m, _a, o: out.__setitem__(0, o.detach())))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if n == 0:
        return [ins[-1], out[0]]
    missing = [i for i, t in enumerate(ins) if t is None]
    if missing or out[0] is None:
        raise ModelError(f"blocks {missing} of {container!r} were not called by the model's forward")
    return list(ins) + [out[0]]


def is_bridge(m: nn.Module) -> bool:
    """A seam adapter inserted by surgery (``core.surgery.bridges.Bridge``)."""
    return type(m).__name__ == "Bridge" and hasattr(m, "resample") and hasattr(m, "proj")


@dataclass(frozen=True)
class Block:
    """One block of a container, with facts from a traced example batch."""

    name: str  # module path, e.g. "layers.2"
    index: int  # position in the container
    kind: str  # class name, e.g. "BasicBlock"
    in_shape: tuple[int, ...]  # one example's input shape
    out_shape: tuple[int, ...]  # one example's output shape
    params: int  # parameters of the block
    macs: int  # multiply-accumulates for one example
    adapter: bool  # a Bridge inserted by surgery

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["in_shape"], d["out_shape"] = list(self.in_shape), list(self.out_shape)
        return d


def list_blocks(model: nn.Module, example: torch.Tensor, container: str | None = None,
                model_name: str | None = None) -> list[Block]:
    """The blocks of ``container`` (default: :func:`default_container`) with shapes, params, MACs.

    Args:
        model: the model (not changed: a private copy is traced).
        example: an input batch (at least one example) on the model's device.
        container: container path; default as described above.
        model_name: registry name, for the spec's default container.
    """
    container = default_container(model, model_name, example) if container is None else container
    m = clone_model(model)
    acts = block_activations(m, container, example[:2])
    macs = _module_macs(m, example[:1])
    out = []
    for i, (name, b) in enumerate(container_of(m, container).named_children()):
        ran = getattr(b, "ran", True)
        b = unwrap(b)
        # a root child's output is what it returned (the next child may see it flattened)
        o = acts[i + 1] if not isinstance(container_of(m, container), RootView) or not ran else None
        if o is None:
            with torch.no_grad():
                o = b(acts[i][:1])
        out.append(Block(name=join_path(container, name), index=i, kind=type(b).__name__,
                         in_shape=tuple(acts[i].shape[1:]), out_shape=tuple(o.shape[1:]),
                         params=sum(p.numel() for p in b.parameters()),
                         macs=_macs_of(macs, m, join_path(container, name), b, acts[i][:1]) if ran else 0,
                         adapter=is_bridge(b)))
    return out


def _module_macs(model: nn.Module, x1: torch.Tensor) -> dict[str, int] | None:
    """MACs of every module on one forward pass of the whole model, by module path (a block
    runs with whatever the model's forward gives it: a transformers layer's position
    embeddings and mask included); None when the pass cannot be counted."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x1)
    except FOREIGN_ERRORS:  # the model's forward under the counter: best effort, the block alone is next
        return None
    root = type(model).__name__
    return {k[len(root) + 1:]: int(sum(v.values()) // 2) for k, v in fc.get_flop_counts().items()
            if k.startswith(root + ".")}


def _macs_of(counts: dict[str, int] | None, model: nn.Module, path: str, block: nn.Module, x1: torch.Tensor) -> int:
    """A block's MACs for one example: from the whole model's pass, else the block alone."""
    from torch.utils.flop_counter import FlopCounterMode

    if counts is not None:
        return counts.get(path, 0)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        block(x1)
    return int(fc.get_total_flops() // 2)


__all__ = ["Block", "list_blocks", "container_candidates", "is_dict_container", "block_names", "get_module",
           "split_block", "is_bridge", "is_container", "container_of", "join_path", "locate_block", "set_module",
           "block_activations"]
