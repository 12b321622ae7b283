"""Graph diffs made by hand for the figure tests: the leaf modules of a real model, in the order
a forward runs them, with chosen statuses (the figures are tested apart from the diff's maker)."""
from __future__ import annotations

import torch
from torch import nn

from core.explain.graphdiff import DiffNode, GraphDiff, NodeFigures


def forward_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Leaf modules of ``model`` in the order its forward first calls them."""
    seen: list[tuple[str, nn.Module]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append((names[mod], mod)) if all(
        mod is not s for _, s in seen) else None) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model.eval()(example)
    for h in hooks:
        h.remove()
    return seen


def _figures(m: nn.Module, scale: float = 1.0, ms: float | None = None) -> NodeFigures:
    params = int(sum(p.numel() for p in m.parameters(recurse=False)) * scale)
    shape = {k: int(getattr(m, k) * scale) for k in ("in_channels", "out_channels", "in_features", "out_features")
             if hasattr(m, k)}
    return NodeFigures(params=params, macs=params * 10, sparsity=0.0, shape=shape, latency_ms=ms,
                       latency_share=None if ms is None else ms / 100)


def hand_diff(model: nn.Module, example: torch.Tensor, name: str, *, narrow: str = "", remove: str = "",
              mask: str = "", profiled: bool = False) -> GraphDiff:
    """A diff of ``model`` with itself, told by hand: modules under ``narrow`` narrowed to half
    their widths, under ``remove`` removed (and one bridge added in their place), under ``mask``
    masked to 50% sparsity; the rest kept. ``profiled`` fills made-up times (ms = 1 + order)."""
    nodes = []
    order = forward_order(model, example)
    for i, (path, m) in enumerate(order):
        ms_b = (1.0 + i) if profiled else None
        before = _figures(m, 1.0, ms_b)
        container = path.rsplit(".", 1)[0] if "." in path else ""
        kw = dict(name=path, kind=type(m).__name__, removed_importance=None, steps=(), container=container,
                  order=i)
        if remove and path.startswith(remove):
            nodes.append(DiffNode(status="removed", before=before, after=None, widths={}, **kw))
        elif narrow and path.startswith(narrow) and before.shape:
            after = _figures(m, 0.5, ms_b and ms_b / 2)
            widths = {k: (v, after.shape[k]) for k, v in before.shape.items()}
            nodes.append(DiffNode(status="narrowed", before=before, after=after, widths=widths,
                                  **{**kw, "removed_importance": 0.25, "steps": (0,)}))
        elif mask and path.startswith(mask) and before.params:
            after = NodeFigures(before.params, before.macs, 0.5, before.shape, ms_b, before.latency_share)
            nodes.append(DiffNode(status="masked", before=before, after=after, widths={}, **{**kw, "steps": (0,)}))
        else:
            nodes.append(DiffNode(status="kept", before=before, after=before, widths={}, **kw))
    if remove:
        at = max(n.order for n in nodes if n.status == "removed")
        nodes.append(DiffNode(name=remove.rstrip(".") + "_bridge", kind="Bridge", status="added", before=None,
                              after=NodeFigures(10, 100, 0.0, {}, 0.5 if profiled else None), widths={},
                              removed_importance=None, steps=(1,), container="", order=at))
    names = [n.name for n in sorted(nodes, key=lambda n: n.order)]
    note = "torch.profiler, batch 8, 2 threads, cpu, 3 runs (hand-made times)" if profiled else "not profiled"
    return GraphDiff(model=name, plan_key="hand", nodes=nodes, edges=list(zip(names, names[1:])),
                     edges_from="order", totals={"before": {}, "after": {}}, profiled=profiled, profile_note=note)
