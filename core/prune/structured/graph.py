"""The dependency graph of a model, and the unit groups read from it.

A *unit* is what one structured decision removes:

* ``"neuron"``: an output feature of a Linear layer;
* ``"channel"``: an output channel of a convolution;
* ``"head"``: one head of an attention module of a layout ``heads.py`` knows (timm
  ``qkv`` / ``proj`` / ``num_heads``, GPT-2, BERT, Llama), i.e. ``head_dim`` rows of each
  of q, k, v and the matching ``head_dim`` input columns of the output projection. A
  grouped-query module (fewer key/value heads than query heads) has two groups instead,
  pruned by hand (``heads.prune_gqa``: Torch-Pruning cannot follow ``repeat_kv``): its own
  path, whose units are *key/value groups* (a key/value head with its query heads), and
  ``<path>.q_proj``, whose units are *query positions* (query head ``r`` of every group,
  so every group keeps the same number). A person picks one kind by overriding the other
  with sparsity 0; a global amount ranks both.

Units are found, and removed, through Torch-Pruning's dependency graph
(``DependencyGraph.get_pruning_group``), so everything coupled to a unit goes with it:
BatchNorm, residual additions (which tie the channels of several layers into one
*group*), concatenations, grouped and depthwise convs, and the next layer's inputs.
A group is named after its first producing layer in module order (an attention
module's own path for heads); a per-layer override may name any producing layer of
the group. The output layers (the last Linear/Conv run by the forward pass; for a nest
of outputs, every layer feeding a leaf: ``build_graph``) are never pruned, nor is any group
containing one; Linear groups that feed attention heads
(``qkv``) are pruned only as heads.

Where Torch-Pruning cannot follow an operation (its index mapping of a reshape, a
concatenation or a split raises), the graph is built all the same: that operation is
marked, and a group passing through it is left out, as is a group whose own lookup
raises (``tp_compat.py``, the one module using Torch-Pruning's internals).
:func:`unit_groups` says which and why (``skipped``), and the step's report
lists them in its warnings.

Scores (``scores.py``), selection (``select.py``) and the pruning itself
(``prune.py``) work on these groups; ``analysis.py`` caches a source model's graph.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import ModelError
from core.ground.outputs import is_nest, leaf_shapes, leaves
from core.ground.units import UNIT_GRANULARITIES
from core.prune.masks import PRUNABLE_TYPES
from core.prune.structured.heads import Heads, find_heads, stacked_rows
from core.prune.structured.swin import heads_multiple, opaque_pruners, tie_hook
from core.prune.structured.tp_compat import TorchPruningFailed, Unmapped, trace_graph

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
    multiple: int = 1  # the kept units must be a multiple of this (an nn.MultiheadAttention's num_heads,
    # a GroupNorm's num_groups)
    by_hand: str = ""  # grouped-query heads pruned by heads.prune_gqa: "kv_groups" | "query_positions"
    label: str = ""  # what the units are when the name does not say it, e.g. "residual width (hidden size)"
    head_dim: int = 0  # head groups: root channels per head (unit names list the query heads)

    def unit_name(self, unit: int) -> str:
        """How a person reads ``unit``: ``"head 3"``; a grouped-query module's ``"group 1 (KV head 1,
        query heads 2-3)"`` or ``"query head 1 of every group (heads 1, 3)"``; else ``"<granularity> 3"``."""
        if self.granularity != "head" or not self.head_dim or self.unit_of_root is None:
            return f"{self.granularity} {unit}"
        heads = sorted({c // self.head_dim for c in self.root_channels([unit])})
        if self.by_hand == "kv_groups":
            return f"group {unit} (KV head {unit}, query heads {heads[0]}-{heads[-1]})"
        if self.by_hand == "query_positions":
            return f"query head {unit} of every group (heads {', '.join(map(str, heads))})"
        return f"head {unit}"

    def unit_members(self, unit: int) -> list[tuple[str, str, list[int]]]:
        """``(layer, role, channel indices)`` of every member layer that ``unit`` is made of."""
        u = torch.arange(self.n_units) if self.unit_of_root is None else self.unit_of_root
        return [(m.name, m.role, m.idxs[u[m.root_idxs] == unit].tolist()) for m in self.members]

    def root_channels(self, units: Sequence[int]) -> list[int]:
        """The root channels that make up ``units``."""
        if self.unit_of_root is None:
            return sorted(int(u) for u in units)
        keep = torch.zeros(self.n_units, dtype=torch.bool)
        keep[list(units)] = True
        return torch.nonzero(keep[self.unit_of_root]).flatten().tolist()


MAX_GROUP_INDICES = 1 << 16  # a group whose channel indices multiply past this (and 64 per root channel) is left out


def _drop_saved(_t):
    return None


def _grad_fn(o):
    o = o[0] if isinstance(o, tuple) and o else o  # nn.MultiheadAttention: (output, weights)
    return getattr(o, "grad_fn", None)


def _leaf_layers(out, made_by: dict) -> set[str]:
    """The layers whose outputs reach a leaf of ``out`` through no other Linear / Conv layer
    (walked back through autograd's graph): pruning their output units changes a leaf's shape."""
    todo = [f for t in leaves(out).values() if (f := t.grad_fn) is not None]
    seen: set[int] = set()
    found: set[str] = set()
    while todo:
        fn = todo.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if id(fn) in made_by:
            found.add(made_by[id(fn)][1])
            continue
        todo.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return found


def build_graph(model: nn.Module, example: torch.Tensor, outputs: list | None = None):
    """(Torch-Pruning graph of ``model``, the last Linear / Conv layer run, the output layers).

    Only ever called on a private copy. Hooks are removed and ``requires_grad`` flags
    restored afterwards. Operations whose channels the graph cannot map are kept in
    ``graph.unmapped``; groups through them are left out by :func:`unit_groups`.
    ``outputs`` (a list), when given, receives what the model returned when called on
    ``example`` itself: the shape of each leaf (``core.ground.outputs.leaves``: one leaf
    ``"output"`` for a plain tensor); Torch-Pruning tries ``model(*example)`` first, the batch
    unpacked, which is not recorded.

    The output layers are never pruned: for a model returning one tensor, the last Linear / Conv
    layer run; for a nest of tensors (several heads, a segmenter's ``out`` and ``aux``, a
    pyramid of feature maps), also every layer whose output reaches a leaf through no other such
    layer (after a pooling, an upsample, a residual addition), so every leaf keeps its shape."""
    order: list[str] = []
    made_by: dict[int, tuple] = {}  # id(grad_fn of a layer's output) -> (grad_fn, layer): kept alive
    returned: list = []

    def record(n, o):
        order.append(n)
        if (f := _grad_fn(o)) is not None:
            made_by[id(f)] = (f, n)

    handles = [m.register_forward_hook(lambda mod, i, o, n=n: record(n, o))
               for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    handles.append(model.register_forward_hook(
        lambda mod, i, o: returned.append(o) if len(i) == 1 and i[0] is example else None))
    # The graph is traced through autograd: parameters must require grad while tracing.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        # The graph needs autograd's nodes and the sizes they keep, never the activations they
        # save for a backward pass: dropping those keeps the graph's memory small.
        with warnings.catch_warnings(), torch.enable_grad(), \
                torch.autograd.graph.saved_tensors_hooks(_drop_saved, _drop_saved):
            warnings.simplefilter("ignore")  # "unwrapped parameters" (pos_embed): pruned on the last dim
            dg = trace_graph(model, example, opaque_pruners(model), tie_hook, MAX_GROUP_INDICES)
    finally:
        for h in handles:
            h.remove()
        for p, f in flags:
            p.requires_grad_(f)
    if not order:
        raise ModelError("the model has no Linear or Conv layer to prune")
    out_layers = {order[-1]}
    if returned and is_nest(returned[-1]):
        out_layers |= _leaf_layers(returned[-1], made_by)
    if outputs is not None and returned:
        outputs.append(leaf_shapes(returned[-1]))
    return dg, order[-1], out_layers


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


def _all_groups(dg, ignored: list, names: dict, skipped: list):
    """Torch-Pruning's ``get_all_groups`` (one group per Linear/Conv producing channels),
    leaving out, with the reason in ``skipped``, a group whose lookup raises."""
    visited: set = set()
    for m in list(dg.module2node.keys()):
        if m in ignored or not isinstance(m, PRUNABLE_TYPES) or m in visited:
            continue
        pruner = dg.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        try:
            group = dg.get_pruning_group(m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))))
        except Unmapped as exc:  # Torch-Pruning cannot follow this group: leave it out
            visited.add(m)
            skipped.append((names.get(m, type(m).__name__), str(exc)))
            continue
        ok = True
        for dep, _ in group:
            if dg.is_out_channel_pruning_fn(dep.handler):
                visited.add(dep.target.module)
                if dep.target.module in ignored:
                    ok = False
        if ok:
            yield group


def _gqa_groups(n: str, h: Heads, names: dict) -> list[UnitGroup]:
    """The two groups of grouped-query attention module ``n`` (see the module docstring). Both are
    indexed by ``o_proj``'s input columns (query head ``i`` = columns ``i*hd .. i*hd+hd-1``); a
    key/value row maps to the columns of its group's first query head, for the scores."""
    hd, n_rep = h.head_dim, h.num_heads // h.kv_heads
    q, k, v = (names[p] for p in h.producers)
    width = h.num_heads * hd
    cols = torch.arange(width)
    kv_rows = torch.arange(h.kv_heads * hd)
    kv_root = (kv_rows // hd) * n_rep * hd + kv_rows % hd
    query = [Member(q, "out", cols, cols), Member(names[h.out], "in", cols, cols)]
    kv = query + [Member(k, "out", kv_rows, kv_root), Member(v, "out", kv_rows, kv_root)]
    return [UnitGroup(n, "head", h.kv_heads, (n, k, v), kv, names[h.out], False, cols // (n_rep * hd),
                      by_hand="kv_groups", label=f"key/value groups of {n_rep} query heads", head_dim=hd),
            UnitGroup(q, "head", n_rep, (q,), query, names[h.out], False, (cols // hd) % n_rep,
                      by_hand="query_positions", label=f"query heads within groups, removed from all "
                                                       f"{h.kv_heads} groups alike", head_dim=hd)]


def unit_groups(model: nn.Module, dg, output_layers: set[str], granularity: str,
                skipped: list | None = None) -> list[UnitGroup]:
    """The prunable unit groups of ``model`` at ``granularity``, in module order.

    ``skipped`` (a list), when given, receives ``(layer, reason)`` for each group
    Torch-Pruning could not follow (left out)."""
    skipped = [] if skipped is None else skipped
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    mods = dict(model.named_modules())
    out: list[UnitGroup] = []
    if granularity == "head":
        for n, m in model.named_modules():
            h = find_heads(m)
            if h is None or h.out not in dg.module2node:
                continue
            if h.kv_heads != h.num_heads:  # Torch-Pruning cannot follow repeat_kv: pruned by hand
                if names[h.out] not in output_layers:
                    out.extend(_gqa_groups(n, h, names))
                continue
            proj = h.out
            g = dg.get_pruning_group(proj, dg.get_pruner_of_module(proj).prune_in_channels,
                                     list(range(proj.in_features)))
            members = [x for x in (_member(dg, it, names) for it in g) if x is not None]
            if any(x.name in output_layers and x.role == "out" for x in members):
                continue
            qkv = [x for x in members if x.name == names[h.producers[0]] and x.role == "out"]
            for off, _ in stacked_rows(h, len(qkv[0].idxs) if len(qkv) == 1 else 0):  # GPT-2: k and v rows too
                members.append(Member(qkv[0].name, "out", qkv[0].idxs + off, qkv[0].root_idxs))
            unit_of_root = torch.arange(proj.in_features) // h.head_dim  # head i = columns i*hd .. i*hd+hd-1
            out.append(UnitGroup(n, "head", h.num_heads, (n, *(names[p] for p in h.producers), names[proj]),
                                 members, names[proj], False, unit_of_root, head_dim=h.head_dim))
        return out
    qkv = {p for m in model.modules() if (h := find_heads(m)) is not None for p in h.producers}
    ignored = [mods[n] for n in sorted(output_layers)]
    for g in _all_groups(dg, ignored, names, skipped):
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
        mha = [it.dep.target.module for it in g if isinstance(it.dep.target.module, nn.MultiheadAttention)]
        multiple = max([m.num_heads for m in mha if m.embed_dim == n_root] or [1])
        for it in g:  # an opaque window attention splits the width into its heads as well; a GroupNorm
            t = it.dep.target.module  # keeps its group count, so the kept width stays divisible by it
            multiple = math.lcm(multiple, heads_multiple(t, n_root),
                                t.num_groups if isinstance(t, nn.GroupNorm) and t.num_channels == n_root else 1)
        # a token embedding losing these channels: the units are the residual stream's width (a
        # transformer's hidden size), named after the embedding rather than its first writer
        emb = [names[it.dep.target.module] for it in g if isinstance(it.dep.target.module, nn.Embedding)
               and dg.is_out_channel_pruning_fn(it.dep.handler)]
        if emb:
            producers = [emb[0], *producers]
        out.append(UnitGroup(producers[0], kind, n_units, tuple(producers), members, names[root], True,
                             unit_of_root, multiple, label="residual width (hidden size)" if emb else ""))
    out.sort(key=lambda u: order[u.name])
    return out


__all__ = ["UNIT_GRANULARITIES", "Member", "UnitGroup", "build_graph", "unit_groups", "TorchPruningFailed"]
