"""A model as a sequence of blocks: containers, block names, tracing.

A model's *blocks* are the children of one container (an ``nn.Sequential`` or
``nn.ModuleList``): by default the registry's ``ModelSpec.block_container``, else the
longest run of repeated children found in the model. A block is named by its module
path (``"layers.2"``).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import ModelError
from core.models import clone_model, get_spec

def _is_container(m: nn.Module) -> bool:
    return isinstance(m, (nn.Sequential, nn.ModuleList))


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` ("" is the model itself).

    Raises:
        ModelError: no such module; the message lists a few valid paths.
    """
    if path == "":
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        valid = [n for n, m in model.named_modules() if n and _is_container(m)]
        raise ModelError(f"module {path!r} not found in the model; containers: {valid}") from None


def container_candidates(model: nn.Module) -> list[str]:
    """Paths of every ``nn.Sequential`` / ``nn.ModuleList`` with two or more children,
    best default first (longest run of children of one type, then most children, then
    shallowest)."""
    scored = []
    for name, m in model.named_modules():
        if not _is_container(m) or len(m) < 2:
            continue
        types = Counter(type(c).__name__ for c in m.children())
        scored.append((-types.most_common(1)[0][1], -len(m), name.count(".") if name else -1, name))
    return [s[-1] for s in sorted(scored)]


def default_container(model: nn.Module, model_name: str | None = None) -> str:
    """The container whose children are the blocks: the spec's ``block_container`` when
    it exists in ``model``, else the best of :func:`container_candidates`.

    Raises:
        ModelError: the model has no Sequential / ModuleList to cut.
    """
    if model_name:
        try:
            spec_c = get_spec(model_name).block_container
        except ModelError:
            spec_c = None
        if spec_c is not None:
            try:
                if _is_container(get_module(model, spec_c)):
                    return spec_c
            except ModelError:
                pass
    cands = container_candidates(model)
    if not cands:
        raise ModelError("the model has no nn.Sequential or nn.ModuleList with two or more children; "
                         "surgery needs a container of blocks")
    return cands[0]


def _container(model: nn.Module, path: str) -> nn.Module:
    c = get_module(model, path)
    if not _is_container(c):
        raise ModelError(f"container {path!r} is a {type(c).__name__}, expected an nn.Sequential or "
                         f"nn.ModuleList (its forward must run its children in order); "
                         f"containers: {container_candidates(model)}")
    return c


def _join(container: str, child: str) -> str:
    return f"{container}.{child}" if container else child


def block_names(model: nn.Module, container: str) -> list[str]:
    """Full paths of the blocks in ``container``, in order."""
    c = _container(model, container)
    return [_join(container, n) for n, _ in c.named_children()]


def split_block(name: str) -> tuple[str, str]:
    """``"layers.2"`` -> ``("layers", "2")``; ``"3"`` -> ``("", "3")``."""
    if not isinstance(name, str) or not name:
        raise ModelError(f"a block is named by its module path, e.g. 'layers.2', got {name!r}")
    parent, _, leaf = name.rpartition(".")
    return parent, leaf


def _locate(model: nn.Module, name: str, what: str = "model") -> tuple[str, int]:
    """(container path, position) of block ``name``.

    Raises:
        ModelError: not a child of a Sequential / ModuleList; lists the valid blocks.
    """
    parent, _ = split_block(name)
    try:
        names = block_names(model, parent)
    except ModelError:
        cont = default_container(model)
        raise ModelError(f"block {name!r} is not a block of the {what}; blocks: "
                         f"{block_names(model, cont)}") from None
    if name not in names:
        raise ModelError(f"block {name!r} is not in the {what}; blocks of {parent or 'the model'!r}: {names}")
    return parent, names.index(name)


def _set_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``path`` inside ``model`` (in place); returns the (new) root."""
    if path == "":
        return new
    parent, _, leaf = path.rpartition(".")
    setattr(get_module(model, parent), leaf, new)
    return model


def _activations(model: nn.Module, container: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Inputs of each block of ``container`` and the last block's output: ``r_0 .. r_N``.

    Hooks are put on ``model`` for one forward pass and removed; call it on a private
    copy only (a shared base may be running in another thread).

    Raises:
        ModelError: a block was not called once with one tensor.
    """
    c = _container(model, container)
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


def _block_macs(block: nn.Module, x1: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        block(x1)
    return int(fc.get_total_flops() // 2)


def list_blocks(model: nn.Module, example: torch.Tensor, container: str | None = None,
                model_name: str | None = None) -> list[Block]:
    """The blocks of ``container`` (default: :func:`default_container`) with shapes, params, MACs.

    Args:
        model: the model (not changed: a private copy is traced).
        example: an input batch (at least one example) on the model's device.
        container: container path; default as described above.
        model_name: registry name, for the spec's default container.
    """
    container = default_container(model, model_name) if container is None else container
    m = clone_model(model)
    acts = _activations(m, container, example[:2])
    out = []
    for i, (name, b) in enumerate(_container(m, container).named_children()):
        out.append(Block(name=_join(container, name), index=i, kind=type(b).__name__,
                         in_shape=tuple(acts[i].shape[1:]), out_shape=tuple(acts[i + 1].shape[1:]),
                         params=sum(p.numel() for p in b.parameters()),
                         macs=_block_macs(b, acts[i][:1]), adapter=is_bridge(b)))
    return out


__all__ = ["Block", "list_blocks", "default_container", "container_candidates", "block_names", "get_module",
           "split_block", "is_bridge"]
