"""The dependency graph of a model, and the unit groups read from it.

A *unit* is what one structured decision removes:

* ``"neuron"``: an output feature of a Linear layer;
* ``"channel"``: an output channel of a convolution;
* ``"head"``: one head of a timm-style attention module (a module with ``qkv`` and
  ``proj`` Linear layers and an integer ``num_heads``), i.e. ``head_dim`` rows of each of
  q, k, v and the matching ``head_dim`` input columns of ``proj``.

Units are found, and removed, through Torch-Pruning's dependency graph
(``DependencyGraph.get_pruning_group``), so everything coupled to a unit goes with it:
BatchNorm, residual additions (which tie the channels of several layers into one
*group*), concatenations, grouped and depthwise convs, and the next layer's inputs.
A group is named after its first producing layer in module order (an attention
module's own path for heads); a per-layer override may name any producing layer of
the group. The output layer (the last Linear/Conv run by the forward pass) is never
pruned, nor is any group containing it; Linear groups that feed attention heads
(``qkv``) are pruned only as heads.

Scores (``scores.py``), selection (``select.py``) and the pruning itself
(``prune.py``) work on these groups; ``analysis.py`` caches a source model's graph.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from core.errors import ModelError

from ..masks import PRUNABLE_TYPES

UNIT_GRANULARITIES = ("neuron", "channel", "head")  # what one structured decision removes
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Member:
    """One Linear/Conv layer of a group: which of its channels hold which units."""

    name: str  # module path
    role: str  # "out": produces the units (rows); "in": reads them (input channels)
    idxs: torch.Tensor  # channel indices in this layer, (k,)
    root_idxs: torch.Tensor  # the group's root channel each index belongs to, (k,)


@dataclass
class UnitGroup:
    """Units removed together, with everything coupled to them."""

    name: str  # display / override name (first producer, or the attention module)
    granularity: str  # "neuron" | "channel" | "head"
    n_units: int
    producers: tuple[str, ...]  # layers whose outputs are these units (override names)
    members: list[Member]
    root: str  # module whose channels index the group in Torch-Pruning
    root_out: bool  # True: root's output channels; False: its input channels (heads: proj)
    unit_of_root: torch.Tensor | None = None  # root channel -> unit, (n_root,); None: identity

    def root_channels(self, units: Sequence[int]) -> list[int]:
        """The root channels that make up ``units``."""
        if self.unit_of_root is None:
            return sorted(int(u) for u in units)
        keep = torch.zeros(self.n_units, dtype=torch.bool)
        keep[list(units)] = True
        return torch.nonzero(keep[self.unit_of_root]).flatten().tolist()


def _is_attention(m: nn.Module) -> bool:
    qkv, proj, h = getattr(m, "qkv", None), getattr(m, "proj", None), getattr(m, "num_heads", None)
    return (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(h, int)
            and not isinstance(h, bool) and h > 0 and proj.in_features % h == 0
            and qkv.out_features == 3 * proj.in_features)


def build_graph(model: nn.Module, example: torch.Tensor):
    """(Torch-Pruning graph of ``model``, output layer name).

    Only ever called on a private copy. Hooks are removed and ``requires_grad`` flags
    restored afterwards."""
    import torch_pruning as tp

    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
               for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    # The graph is traced through autograd: parameters must require grad while tracing.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")  # "unwrapped parameters" (pos_embed): pruned on the last dim
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    finally:
        for h in handles:
            h.remove()
        for p, f in flags:
            p.requires_grad_(f)
    if not order:
        raise ModelError("the model has no Linear or Conv layer to prune")
    return dg, order[-1]


def _member(dg, item, names: dict) -> Member | None:
    layer = item.dep.target.module
    if not isinstance(layer, PRUNABLE_TYPES) or layer not in names:
        return None
    roots = item.root_idxs
    if roots is None or any(r is None for r in roots):
        return None
    fn = item.dep.handler
    role = "out" if dg.is_out_channel_pruning_fn(fn) else "in" if dg.is_in_channel_pruning_fn(fn) else None
    if role is None:
        return None
    # a depthwise conv's channels are its filters: treat it as a producer either way
    if isinstance(layer, _CONV) and layer.groups == layer.out_channels and layer.groups > 1:
        role = "out"
    return Member(names[layer], role, torch.as_tensor(list(item.idxs), dtype=torch.long),
                  torch.as_tensor(list(roots), dtype=torch.long))


def unit_groups(model: nn.Module, dg, output_layer: str, granularity: str) -> list[UnitGroup]:
    """The prunable unit groups of ``model`` at ``granularity``, in module order."""
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    mods = dict(model.named_modules())
    out: list[UnitGroup] = []
    if granularity == "head":
        for n, m in model.named_modules():
            if not _is_attention(m) or m.proj not in dg.module2node:
                continue
            proj = m.proj
            hd = proj.in_features // m.num_heads
            g = dg.get_pruning_group(proj, dg.get_pruner_of_module(proj).prune_in_channels,
                                     list(range(proj.in_features)))
            members = [x for x in (_member(dg, it, names) for it in g) if x is not None]
            if any(x.name == output_layer and x.role == "out" for x in members):
                continue
            unit_of_root = torch.arange(proj.in_features) // hd  # head h = columns h*hd .. h*hd+hd-1
            out.append(UnitGroup(n, "head", m.num_heads, (n, names[m.qkv], names[proj]), members,
                                 names[proj], False, unit_of_root))
        return out
    qkv = {m.qkv for m in model.modules() if _is_attention(m)}
    ignored = [mods[output_layer]]
    for g in dg.get_all_groups(ignored_layers=ignored, root_module_types=PRUNABLE_TYPES):
        members = [x for x in (_member(dg, it, names) for it in g) if x is not None]
        producers = [x.name for x in members if x.role == "out"]
        if not producers or any(mods[p] in qkv for p in producers):
            continue
        kind = "channel" if any(isinstance(mods[p], _CONV) for p in producers) else "neuron"
        if kind != granularity:
            continue
        root = g[0].dep.target.module
        producers = sorted(set(producers), key=order.get)
        n_root = len(g[0].idxs)
        # Grouped convs (not depthwise) need the same channels removed from every conv group:
        # a unit is then one channel position taken in each of the G groups.
        ch_groups = max([mods[x.name].groups for x in members if isinstance(mods[x.name], _CONV)
                         and 1 < mods[x.name].groups != mods[x.name].out_channels] or [1])
        unit_of_root = None
        if ch_groups > 1 and n_root % ch_groups == 0:
            unit_of_root = torch.arange(n_root) % (n_root // ch_groups)
        n_units = n_root if unit_of_root is None else n_root // ch_groups
        out.append(UnitGroup(producers[0], kind, n_units, tuple(producers), members,
                             names[root], True, unit_of_root))
    out.sort(key=lambda u: order[u.name])
    return out


__all__ = ["UNIT_GRANULARITIES", "Member", "UnitGroup", "build_graph", "unit_groups"]
