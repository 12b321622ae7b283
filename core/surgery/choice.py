"""Which container's children are a model's blocks by default (``blocks.py`` names and traces them).

The registry's ``ModelSpec.block_container`` when the model has it; else the container covering
most of the model's MACs on one example (the root's children when no container covers
:data:`ROOT_SHARE` of them); else, when the model cannot be run, the best of
:func:`~core.surgery.paths.container_candidates` by shape alone. A container seen through the
root view (the root itself, an ``nn.ModuleDict`` such as torchvision's IntermediateLayerGetter)
competes only when each of its children that ran took one tensor and returned one: a
detector's ``rpn`` takes images and features, so a detector's root is never its default; any
other container only when its first block takes one tensor and its last returns one, or the
chain is carried (``carry.py``: MViT's blocks pass ``(x, thw)`` along).
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import FOREIGN_ERRORS, ModelError
from core.sources.bases import clone_model
from core.sources.models import get_spec
from core.surgery.carry import carried
from core.surgery.modelcache import ModelCache
from core.surgery.paths import container_candidates, get_module, is_container, is_dict_container, join_path

ROOT_SHARE = 0.2  # the root's children are the default when no container covers this share of the MACs

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
    seen: dict[int, list] = {}  # id(child) -> [first input, first output, all args] (held: their ids stay unique)
    counter = [0]
    handles = []

    def pre(_m, _a):
        calls.setdefault(id(_m), []).append(counter[0])
        counter[0] += 1
        seen.setdefault(id(_m), [_a[0] if _a else None, None, tuple(_a)])

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
        io = [seen[id(ch)] for n, ch in kids if len(calls.get(id(ch), [])) == 1]
        if _parallel(io):
            continue  # branches on one input (an ASPP's convs): not a chain of blocks to cut from
        viewed = c == "" and not is_container(m) or is_dict_container(mods.get(c))
        if viewed and not all(isinstance(a, torch.Tensor) and isinstance(o, torch.Tensor) for a, o, _ in io):
            continue  # the root view traces children that take one tensor and return one
        if not isinstance(io[0][0], torch.Tensor) or not (isinstance(io[-1][1], torch.Tensor)
                                                         or carried([(a, o) for _, o, a in io])):
            continue  # a chain traced from one tensor to one, or carried (MViT's blocks pass (x, thw) along)
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
                if is_container(get_module(model, spec_c)) or is_dict_container(get_module(model, spec_c)):
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


__all__ = ["ROOT_SHARE", "container_macs", "default_container"]
