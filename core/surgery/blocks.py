"""A model as a sequence of blocks: containers, block names, tracing.

A model's *blocks* are the children of one container (an ``nn.Sequential`` or
``nn.ModuleList``), or, for a model whose own class is neither (inception_v3), of its
root (container ``""``): its top-level children in execution order (``rootview.py``).

By default the container is the registry's ``ModelSpec.block_container``, else the one
covering most of the model's MACs (measured on one example; the root's children when no
container covers a fifth of them), else, when the model cannot be run, the longest run
of repeated children. A block is named by its module path (``"layers.2"``).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import FOREIGN_ERRORS, ModelError
from core.sources.bases import clone_model
from core.sources.models import get_spec
from core.surgery.modelcache import ModelCache
from core.surgery.rootview import RootView, root_activations, root_view, set_root_blocks, unwrap

ROOT_SHARE = 0.2  # the root's children are the default when no container covers this share of the MACs


def is_container(m: nn.Module) -> bool:
    """An ``nn.Sequential`` or ``nn.ModuleList``: a module whose children can be blocks."""
    return isinstance(m, (nn.Sequential, nn.ModuleList))


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` ("" is the model itself). Raises ModelError: no such module
    (the message lists the containers)."""
    if path == "":
        return model
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        valid = [n for n, m in model.named_modules() if n and is_container(m)]
        raise ModelError(f"module {path!r} not found in the model; containers: {valid}") from exc


def container_candidates(model: nn.Module) -> list[str]:
    """Paths of every ``nn.Sequential`` / ``nn.ModuleList`` with two or more children, best first by shape
    alone (longest run of children of one type, then most children, then shallowest); then ``""`` (the
    root's top-level children) when the root is not a container but has two or more children."""
    scored = []
    for name, m in model.named_modules():
        if not is_container(m) or len(m) < 2:
            continue
        types = Counter(type(c).__name__ for c in m.children())
        scored.append((-types.most_common(1)[0][1], -len(m), name.count(".") if name else -1, name))
    out = [s[-1] for s in sorted(scored)]
    if not is_container(model) and len(list(model.children())) >= 2:
        out.append("")
    return out


# asked for where no apply context exists (pickers, the CLI, Finetune's "last"): measured once per model object
_DEFAULTS: ModelCache[str] = ModelCache(size=64)


def _example_for(model: nn.Module, model_name: str | None) -> torch.Tensor | None:
    """One zero example of the registered input shape, on the model's device (None: unknown)."""
    try:
        shape = tuple(get_spec(model_name).input_shape) if model_name else None
    except ModelError:
        shape = None
    if shape is None:
        return None
    p = next(iter(model.parameters()), None)
    return torch.zeros(1, *shape, device=p.device if p is not None else "cpu",
                       dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)


def _parallel(io: list[list]) -> bool:
    """Whether children run in order (``[input, output]`` each) are branches on one input, not a chain: a child
    given the very tensor the child before was given, which did not pass it through (an ``nn.Identity`` does)."""
    return any(b[0] is not None and b[0] is a[0] and a[1] is not a[0] for a, b in zip(io, io[1:]))


def container_macs(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, int], int]:
    """MACs covered by each candidate container (its children that run once each, in the
    order they are defined), and the model's total, for one example. Runs a private copy;
    ``({}, 0)`` when the model's forward fails on the example (only that call is caught)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = clone_model(model)
    cands = container_candidates(m)
    mods = dict(m.named_modules())
    calls: dict[int, list[int]] = {}  # id(child) -> call positions
    seen: dict[int, list] = {}  # id(child) -> [first input, first output] (held: their ids stay unique)
    counter = [0]
    handles = []

    def pre(_m, _a):
        calls.setdefault(id(_m), []).append(counter[0])
        counter[0] += 1
        seen.setdefault(id(_m), [_a[0] if _a else None, None])

    def post(_m, _a, out):
        seen[id(_m)][1] = seen[id(_m)][1] if seen[id(_m)][1] is not None else out

    for c in cands:
        for ch in (mods[c] if c else m).children():
            if id(ch) not in calls:
                calls[id(ch)] = []
                handles += [ch.register_forward_pre_hook(pre), ch.register_forward_hook(post)]
    root = type(m).__name__
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            m(example[:1])
    except FOREIGN_ERRORS:  # the model's forward does not run on this example: nothing measured
        return {}, 0
    finally:
        for h in handles:
            h.remove()
    flops = {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}
    total = flops.get("Global", 0) // 2
    out = {}
    for c in cands:
        kids = list((mods[c] if c else m).named_children())
        ran = [(calls[id(ch)][0], join_path(c, n)) for n, ch in kids if len(calls.get(id(ch), [])) == 1]
        if len(ran) < 2 or [n for _, n in sorted(ran)] != [n for _, n in ran]:
            continue  # fewer than two blocks run, or not in the order they are defined
        if _parallel([seen[id(ch)] for n, ch in kids if len(calls.get(id(ch), [])) == 1]):
            continue  # branches on one input (an ASPP's convs): not a chain of blocks to cut from
        out[c] = sum(flops.get(f"{root}.{n}", 0) for _, n in ran) // 2
    return out, total


def default_container(model: nn.Module, model_name: str | None = None,
                      example: torch.Tensor | None = None) -> str:
    """The container whose children are the blocks: the spec's ``block_container`` when
    it exists in ``model``; else the container covering most of the model's MACs on one
    example (``example``, or zeros of the registered input shape), or the root's
    top-level children (``""``) when no container covers :data:`ROOT_SHARE` of them;
    else (the model cannot be run) the first of :func:`container_candidates`.
    Remembered per model object (a bounded weak-keyed cache: callers without an apply
    context ask for it, and measuring runs the model).

    Raises:
        ModelError: the model has no Sequential / ModuleList and no top-level children to cut.
    """
    if model_name:
        try:
            spec_c = get_spec(model_name).block_container
        except ModelError:
            spec_c = None
        if spec_c is not None:
            try:
                if is_container(get_module(model, spec_c)):
                    return spec_c
            except ModelError:
                pass
    cands = container_candidates(model)
    if not cands:
        raise ModelError("the model has no nn.Sequential or nn.ModuleList with two or more children, and no "
                         "top-level children to use as blocks; surgery needs a container of blocks")
    hit = _DEFAULTS.get(model)
    if hit is not None:
        return hit
    x = example if example is not None else _example_for(model, model_name)
    if x is None or len(cands) == 1:
        return cands[0]  # nothing to measure with (not remembered: a later call may have an example)
    best = None
    cover, total = container_macs(model, x)  # ({}, 0): the model does not run on zeros: by shapes
    # a root that is itself a container (a plain nn.Sequential model) competes like any
    # other; the root view of a model that is not one is the fallback below
    inner = {c: v for c, v in cover.items() if c != "" or is_container(model)}
    if inner and total > 0:
        c = max(inner, key=lambda k: (inner[k], -cands.index(k)))
        while True:  # a container inside it covering nearly as much has the finer blocks (nested Sequentials)
            nested = [k for k in inner if k != c and (c == "" or k.startswith(c + "."))
                      and inner[k] >= 0.9 * inner[c]]
            if not nested:
                break
            c = max(nested, key=lambda k: (inner[k], -cands.index(k)))
        if inner[c] >= ROOT_SHARE * total or "" not in cover:
            best = c
    if best is None and "" in cover:
        best = ""
    if best is None:
        best = cands[0]
    return _DEFAULTS.put(model, best)


def container_of(model: nn.Module, path: str) -> nn.Module:
    """The container at ``path``: a Sequential / ModuleList, or the root view
    (:class:`~core.surgery.rootview.RootView`) for ``""`` when the root is neither.

    Raises:
        ModelError: ``path`` is no module of ``model``, or not a container; lists the containers.
    """
    c = get_module(model, path)
    if path == "" and not is_container(c):
        return root_view(c)
    if not is_container(c):
        raise ModelError(f"container {path!r} is a {type(c).__name__}, expected an nn.Sequential or "
                         f"nn.ModuleList (its forward must run its children in order), or '' for the "
                         f"model's top-level children; containers: {container_candidates(model)}")
    return c


def join_path(container: str, child: str) -> str:
    """The module path of ``child`` inside ``container`` (``""`` is the model itself)."""
    return f"{container}.{child}" if container else child


def block_names(model: nn.Module, container: str) -> list[str]:
    """Full paths of the blocks in ``container``, in order."""
    c = container_of(model, container)
    return [join_path(container, n) for n, _ in c.named_children()]


def split_block(name: str) -> tuple[str, str]:
    """``"layers.2"`` -> ``("layers", "2")``; ``"3"`` -> ``("", "3")``."""
    if not isinstance(name, str) or not name:
        raise ModelError(f"a block is named by its module path, e.g. 'layers.2', got {name!r}")
    parent, _, leaf = name.rpartition(".")
    return parent, leaf


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


__all__ = ["Block", "list_blocks", "default_container", "container_candidates", "block_names", "get_module",
           "split_block", "is_bridge", "is_container", "container_of", "join_path", "locate_block", "set_module",
           "block_activations"]
