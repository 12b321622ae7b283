"""Per-layer tables of a model against its base: what the Prune page's overview, the
Model page's layer table and the structured view's shape changes show, and what a
notebook draws with the same figures.

The two costly ones take an optional ``memo`` (the apply context's memo of ``model``,
``ctx.memo(model)``): the table is then computed once per model, whichever page or
notebook cell asks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.ground.layers import prunable_layers
from core.metrics.cost import layer_macs, nonzero_of


@dataclass(frozen=True)
class LayerSparsity:
    """Sparsity of every prunable layer of a base, in a model built from it."""

    names: list[str]  # prunable layers of the base, in module order
    # 1 - nonzero weights in the model / weights in the base (removed units count; a layer gone: 1.0)
    sparsity: list[float]
    params: list[int]  # weights of the layer in the base


def layer_sparsity(base: nn.Module, model: nn.Module, memo: dict | None = None) -> LayerSparsity:
    """Per prunable layer of ``base``: its sparsity in ``model`` and its weights in ``base``.

    A unit removed from a layer counts as pruned (the base's weight count is the
    denominator); a layer that is not in ``model`` any more is 100% sparse.

    Args:
        base: the base model.
        model: a model built from it (a plan's model); neither is changed.
        memo: the apply context's memo of ``model`` (``ctx.memo(model)``), to compute once.
    """
    key = ("layer_sparsity", id(base))  # the memo belongs to ``model``; its base is fixed per context
    if memo is not None and key in memo:
        return memo[key]
    cur = dict(model.named_modules())
    layers = prunable_layers(base)
    now = {n: getattr(cur.get(n), "weight", None) for n in layers}
    present = [n for n, w in now.items() if isinstance(w, torch.Tensor)]
    nz = dict(zip(present, nonzero_of([now[n] for n in present])))  # one read per device
    names, sp, params = [], [], []
    for n, m in layers.items():
        total = m.weight.numel()
        names.append(n)
        sp.append(1.0 - nz.get(n, 0) / total if total else 0.0)
        params.append(total)
    out = LayerSparsity(names, sp, params)
    if memo is not None:
        memo[key] = out
    return out


def leaf_rows(base: nn.Module, model: nn.Module, example: torch.Tensor, memo: dict | None = None) -> list[dict]:
    """One row per leaf module of ``base``: type, weight shape, parameters, MACs and
    sparsity in ``model``, the base's MACs, whether it is prunable and still present.

    Args:
        base: the base model.
        model: a model built from it; neither is changed.
        example: one input batch; MACs are counted per example of it.
        memo: the apply context's memo of ``model`` (``ctx.memo(model)``), to count once.

    Returns:
        Rows with keys layer, type, shape, params, MACs, base MACs, sparsity, prunable, present.
    """
    key = ("leaf_rows", id(base), tuple(example.shape))
    if memo is not None and key in memo:
        return list(memo[key])
    base_macs, macs = layer_macs(base, example), layer_macs(model, example)
    prunable = set(prunable_layers(model))
    cur = dict(model.named_modules())
    all_params = list(model.parameters())
    nonzero = {id(p): c for p, c in zip(all_params, nonzero_of(all_params))}  # one read per device
    rows = []
    for name, mod in base.named_modules():
        if not name or any(True for _ in mod.children()):
            continue  # leaves only
        c = cur.get(name)
        w = getattr(c, "weight", None) if c is not None else None
        own = list(c.parameters()) if c is not None else []
        params = sum(p.numel() for p in own)
        nz = sum(nonzero.get(id(p), 0) for p in own)
        rows.append({
            "layer": name, "type": type(mod).__name__,
            "shape": "×".join(map(str, w.shape)) if w is not None and hasattr(w, "shape") else "",
            "params": params, "MACs": macs.get(name, 0), "base MACs": base_macs.get(name, 0),
            "sparsity": (1 - nz / params) if params else 0.0,
            "prunable": name in prunable, "present": c is not None,
        })
    if memo is not None:
        memo[key] = rows
    return list(rows)


def shape_changes(base: nn.Module, model: nn.Module) -> list[dict]:
    """Layers whose weight shape (or head count) differs between ``base`` and ``model``.

    Returns:
        Rows with keys layer, type (the module's class, or "heads"), base and now (shapes
        or head counts as text), in ``base``'s module order.
    """
    cur = dict(model.named_modules())
    rows = []
    for n, m in base.named_modules():
        c = cur.get(n)
        if c is None:
            continue
        w0, w1 = getattr(m, "weight", None), getattr(c, "weight", None)
        if isinstance(w0, torch.Tensor) and isinstance(w1, torch.Tensor) and w0.shape != w1.shape:
            rows.append({"layer": n, "type": type(m).__name__, "base": str(tuple(w0.shape)),
                         "now": str(tuple(w1.shape))})
        h0, h1 = getattr(m, "num_heads", None), getattr(c, "num_heads", None)
        if isinstance(h0, int) and isinstance(h1, int) and h0 != h1:
            rows.append({"layer": n, "type": "heads", "base": str(h0), "now": str(h1)})
    return rows


__all__ = ["LayerSparsity", "layer_sparsity", "leaf_rows", "shape_changes"]
