"""One unit (a neuron, channel or head) seen from inside: the group it is coupled to, the
order of layers, its activations over the evaluation set, the input region it sees and a report
that puts these together."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from core.errors import PrunescopeError
from core.prune.structured.heads import find_heads
from core.prune.structured.select import find_group

if TYPE_CHECKING:
    from core.metrics import Evaluator
    from core.plan import ApplyContext, Plan, StepReport


def coupled_group(model: nn.Module, granularity: str, layer: str, unit: int, ctx) -> dict:
    """Every layer Torch-Pruning's dependency graph changes when ``unit`` of ``layer`` goes
    (convolutions, linear layers, BatchNorm, LayerNorm, ... on the same stream), with the
    channel indices each loses.

    Raises:
        PrunescopeError: the layer has no such units (the output layer, for one), the unit
            does not exist, or it is the group's last unit (a group is never emptied).
    """
    from core.prune.structured.analysis import analysis

    an = analysis(model, ctx)
    g = find_group(an.groups(granularity), layer)
    if not isinstance(unit, int) or not 0 <= unit < g.n_units:
        raise PrunescopeError(f"{layer} has {g.n_units} {granularity}s (0 to {g.n_units - 1}); got unit {unit!r}")
    if g.n_units == 1:
        raise PrunescopeError(f"{layer} has one {granularity} left; removing it would empty the layer, so it stays")
    mods = dict(an.copy.named_modules())
    out = {"group": g.name, "granularity": granularity, "unit": unit, "n_units": g.n_units,
           "unit_name": g.unit_name(unit), "label": g.label,
           "columns": (g.root, g.root_channels([unit])) if granularity == "head" else None,
           "found_by": "the grouped-query module's own layers" if g.by_hand else "Torch-Pruning's dependency graph"}
    if g.by_hand:  # grouped-query heads: pruned by hand (Torch-Pruning cannot follow repeat_kv), read its members
        return {**out, "layers": [{"layer": n, "type": type(mods[n]).__name__, "role": role, "indices": sorted(i)}
                                  for n, role, i in g.unit_members(unit) if i]}
    names = {m: n for n, m in mods.items()}
    root = mods[g.root]
    pruner = an.dg.get_pruner_of_module(root)
    fn = pruner.prune_out_channels if g.root_out else pruner.prune_in_channels
    group = an.dg.get_pruning_group(root, fn, g.root_channels([unit]))
    layers, seen = [], set()
    for item in group:
        m = item.dep.target.module
        name = names.get(m)
        if name is None or (name, item.dep.handler.__name__) in seen:
            continue
        seen.add((name, item.dep.handler.__name__))
        role = "out" if an.dg.is_out_channel_pruning_fn(item.dep.handler) else \
            "in" if an.dg.is_in_channel_pruning_fn(item.dep.handler) else "other"
        layers.append({"layer": name, "type": type(m).__name__, "role": role,
                       "indices": sorted(int(i) for i in item.idxs)})
    return {**out, "layers": layers}


def _recorder(order: list, name: str, kind: str):
    """A forward pre-hook that appends ``{"layer": name, "type": kind}`` to ``order``."""
    return lambda _m, _a: order.append({"layer": name, "type": kind})


def layer_order(model: nn.Module, example: torch.Tensor) -> list[dict]:
    """The model's parameterised leaf layers (convolutions, linear layers, norms, ...) in
    the order a forward pass runs them: ``[{"layer", "type"}]``; the model is only read."""
    order, handles = [], []
    for name, m in model.named_modules():
        if name and not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False)):
            handles.append(m.register_forward_pre_hook(_recorder(order, name, type(m).__name__)))
    try:
        with torch.inference_mode():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    seen, out = set(), []
    for r in order:
        if r["layer"] not in seen:
            seen.add(r["layer"])
            out.append(r)
    return out


def unit_activations(model: nn.Module, layer: str, unit: int, x: torch.Tensor, granularity: str,
                     columns: tuple[str, list[int]] | None = None) -> torch.Tensor:
    """One unit's activation per example: a channel's mean over positions, a neuron's value
    (mean over tokens for sequences), a head's mean |output| over its columns of the
    attention projection's input (``columns``: that projection and the columns, as
    :func:`coupled_group` gives them; a grouped-query unit spans several heads). A layer that
    ran on k inputs an example, batched as k blocks of the examples, gives each example its largest."""
    mods = dict(model.named_modules())
    if layer not in mods:
        raise PrunescopeError(f"no layer {layer!r} in the model")
    target, got = mods[layer], {}
    if granularity == "head" and columns is not None:
        cols = torch.as_tensor(columns[1], dtype=torch.long)

        def pre(_m, args):
            got["a"] = args[0].detach()[..., cols.to(args[0].device)].abs().float()
        h = mods[columns[0]].register_forward_pre_hook(pre)
    elif granularity == "head":
        heads = find_heads(target)
        if heads is None:
            raise PrunescopeError(f"{layer!r} is not an attention module with heads")
        proj, hd = heads.out, heads.head_dim

        def pre(_m, args):
            got["a"] = args[0].detach()[..., unit * hd:(unit + 1) * hd].abs().float()
        h = proj.register_forward_pre_hook(pre)
    else:
        def post(_m, _a, o):
            got["a"] = o.detach().float()
        h = target.register_forward_hook(post)
    try:
        with torch.inference_mode():
            model(x)
    finally:
        h.remove()
    a = got["a"]
    if granularity == "head":
        v = a.flatten(1).mean(1)
    elif a.dim() == 4:  # (B, C, H, W)
        v = a[:, unit].mean((1, 2))
    elif a.dim() == 3:  # (B, T, C)
        v = a[..., unit].mean(1)
    else:
        v = a[:, unit]
    if len(v) != len(x) and len(x) and len(v) % len(x) == 0:  # the layer ran on k images an example, batched as
        v = v.reshape(-1, len(x)).amax(0)  # k blocks (RAFT's encoder on both images of a pair): the largest
    return v


def receptive_box(model: nn.Module, layer: str, unit: int, x: torch.Tensor) -> dict | None:
    """Where in the input one channel of a feature map looks for one example: the position
    of the channel's largest activation and the input region that position depends on (its
    receptive field, read from the input gradient of that one activation: rows and columns
    where it is not zero). None when the layer's output is not a (N, C, H, W) feature map.

    Returns:
        ``{"row", "col"}`` (the activation's position in the feature map) and
        ``{"top", "bottom", "left", "right"}`` (inclusive input rows and columns).
    """
    mods = dict(model.named_modules())
    if layer not in mods:
        raise PrunescopeError(f"no layer {layer!r} in the model")
    if not x.is_floating_point():  # token ids: no input gradient, no spatial field
        return None
    got = {}
    h = mods[layer].register_forward_hook(lambda _m, _a, o: got.__setitem__("a", o))
    xi = x.detach().clone()[None].requires_grad_(True)
    try:
        with torch.enable_grad():
            model(xi)
            a = got.get("a")
            if not isinstance(a, torch.Tensor) or a.dim() != 4 or xi.dim() != 4:
                return None
            fmap = a[0, unit]
            pos = int(torch.argmax(fmap))
            r, c = divmod(pos, fmap.shape[1])
            (grad,) = torch.autograd.grad(fmap[r, c], xi)  # the input's gradient only: no parameter is touched
    finally:
        h.remove()
    g = grad[0].abs().sum(0)
    rows, cols = torch.nonzero(g.sum(1)).flatten(), torch.nonzero(g.sum(0)).flatten()
    if not len(rows) or not len(cols):  # a dead unit: no gradient reaches the input
        return {"row": r, "col": c, "top": None, "bottom": None, "left": None, "right": None}
    return {"row": r, "col": c, "top": int(rows[0]), "bottom": int(rows[-1]),
            "left": int(cols[0]), "right": int(cols[-1])}


def unit_report(evaluator: Evaluator, ctx: ApplyContext, plan: Plan, reports: Sequence[StepReport], layer: str,
                unit: int, granularity: str = "channel", *, subset: str = "quick", top: int = 12) -> dict:
    """A unit of the evaluator's *base* model: its top-activating examples on ``subset`` of
    the evaluator's eval set (for a channel, with the input region its largest activation
    depends on: ``field``, see :func:`receptive_box`), its activation over the subset, its
    normalised score under every criterion for this granularity, the coupled group, and
    whether ``plan`` (with ``reports``, one per step) removes it (known when one structured
    step of this granularity was applied to the base). ``Workspace.unit_report`` passes its
    own.

    Raises:
        PrunescopeError: no such layer or unit (see :func:`coupled_group`); an unknown subset.
    """
    from core.prune import CRITERIA
    from core.prune.structured.analysis import unit_scores

    base, evalset = evaluator.base, evaluator.evalset
    group = coupled_group(base, granularity, layer, unit, ctx)
    x, _ = evalset.subset(subset)
    acts = unit_activations(base, group["group"] if granularity == "head" else layer, unit, x, granularity,
                            group["columns"])
    order = torch.argsort(acts, descending=True, stable=True)[:top].tolist()
    idx = evalset.quick_index.tolist() if subset == "quick" else list(range(len(evalset.y)))
    scores = {}
    for name, crit in CRITERIA.items():
        if granularity in crit.granularities:
            try:
                scores[name] = float(unit_scores(base, layer, name, granularity, ctx)[unit])
            except PrunescopeError:
                scores[name] = None
    removed, by = None, None
    structured = [(i, s) for i, s in enumerate(plan.steps) if getattr(s, "granularity", None) == granularity]
    if len(structured) == 1 and structured[0][0] == 0:
        i = structured[0][0]
        removed = unit in reports[i].removed.get(group["group"], ())
        by = i + 1 if removed else None
    box = (lambda j: receptive_box(base, layer, unit, x[j])) if granularity == "channel" else (lambda j: None)
    return {"layer": layer, "unit": unit, "granularity": granularity, "subset": subset,
            "top": [{"index": idx[j], "activation": float(acts[j]), "field": box(j)} for j in order],
            "activations": acts.tolist(), "scores": scores, "coupled": group,
            "removed": removed, "removed_by_step": by}


__all__ = ["coupled_group", "layer_order", "unit_activations", "receptive_box", "unit_report"]
