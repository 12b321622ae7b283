"""Structured pruning: neurons, channels and attention heads physically removed.

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

Scores. A criterion scores a unit from the layers that produce it (``source="out"``:
their rows) or from the layers that read it (``source="in"``: their input columns or
input activations); see ``core.importance``. Inside a group each layer's scores are
divided by their mean absolute value, then averaged over the group's layers (a head
averages its ``head_dim`` channels). Finally every group's scores are divided by their
mean absolute value, so **1.0 is an average unit of its layer**: this is the scale
the histograms show and in which global and per-layer thresholds are read.

Selection. A unit is pruned when its normalised score is strictly below the
threshold; a sparsity prunes exactly ``round(sparsity * units)`` lowest units (over all
groups for the global amount, inside the group for an override; ties are broken by
group order, then unit index). At least one unit of every group is kept: when an
amount asks for all of them the best-scoring unit stays and a warning is recorded in
``Selection.warnings`` (see :func:`select_units`, which the app calls to show them).
"""
from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn

UNIT_GRANULARITIES = ("neuron", "channel", "head")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WEIGHTED = (nn.Linear,) + _CONV

# Per source model: analysis (private copy + graph) and normalised scores.
_analysis_cache: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


# ------------------------------------------------------------------------------ data types

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


@dataclass
class Selection:
    """Which units a structured prune step removes (nothing is pruned to build it)."""

    granularity: str
    criterion: str
    scores: dict[str, torch.Tensor]  # group name -> normalised scores, (n_units,)
    pruned: dict[str, list[int]]  # group name -> pruned unit indices (sorted)
    thresholds: dict[str, float]  # group name -> threshold in normalised score units
    warnings: list[str] = field(default_factory=list)  # e.g. "kept 1 unit of ..."

    @property
    def n_pruned(self) -> int:
        return sum(len(v) for v in self.pruned.values())

    @property
    def n_units(self) -> int:
        return sum(len(v) for v in self.scores.values())


# ------------------------------------------------------------------------------ graph

def _is_attention(m: nn.Module) -> bool:
    qkv, proj, h = getattr(m, "qkv", None), getattr(m, "proj", None), getattr(m, "num_heads", None)
    return (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(h, int)
            and not isinstance(h, bool) and h > 0 and proj.in_features % h == 0
            and qkv.out_features == 3 * proj.in_features)


def _build_graph(model: nn.Module, example: torch.Tensor):
    """(Torch-Pruning graph of ``model``, output layer name).

    Only ever called on a private copy. Hooks are removed and ``requires_grad`` flags
    restored afterwards."""
    import torch_pruning as tp

    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
               for n, m in model.named_modules() if isinstance(m, _WEIGHTED)]
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
        raise ValueError("the model has no Linear or Conv layer to prune")
    return dg, order[-1]


def _member(dg, item, names: dict) -> Member | None:
    layer = item.dep.target.module
    if not isinstance(layer, _WEIGHTED) or layer not in names:
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


def _groups(model: nn.Module, dg, output_layer: str, granularity: str) -> list[UnitGroup]:
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
    for g in dg.get_all_groups(ignored_layers=ignored, root_module_types=_WEIGHTED):
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


# ------------------------------------------------------------------------------ scores

def _norm(s: torch.Tensor) -> torch.Tensor:
    m = s.abs().mean()
    return s / m if float(m) > 0 else s


def _group_scores(group: UnitGroup, crit, state, mods: dict) -> torch.Tensor:
    """Normalised scores of one group's units (see the module docstring)."""
    n_root = group.n_units if group.unit_of_root is None else len(group.unit_of_root)
    acc = torch.zeros(n_root)
    used = 0
    for mem in group.members:
        if mem.role != crit.source:
            continue
        module = mods[mem.name]
        per = (crit.unit_scores(mem.name, module, state) if mem.role == "out"
               else crit.input_scores(mem.name, module, state))
        per = per.detach().float().flatten().cpu()
        r = torch.zeros(n_root).scatter_add_(0, mem.root_idxs, per[mem.idxs])
        acc += _norm(r)
        used += 1
    if used == 0:
        what = "produces" if crit.source == "out" else "reads"
        raise ValueError(f"criterion {crit.name!r} needs a Linear/Conv layer that {what} the units of "
                         f"{group.name!r}; pick another criterion for this layer")
    acc /= used
    if group.unit_of_root is not None:  # mean over the root channels of each unit
        u = group.unit_of_root
        acc = torch.zeros(group.n_units).scatter_add_(0, u, acc) / torch.bincount(u, minlength=group.n_units)
    if not torch.isfinite(acc).all():
        raise ValueError(f"criterion {crit.name!r} gave non-finite scores for {group.name!r}")
    return _norm(acc)


def _score_groups(model: nn.Module, groups: list[UnitGroup], criterion: str, seed: int,
                  calib) -> dict[str, torch.Tensor]:
    from .importance import get_criterion
    from .masks import prunable_layers

    crit = get_criterion(criterion, seed=seed)
    if crit.needs_data and calib is None:
        raise ValueError(f"criterion {crit.name!r} needs a calibration batch")
    granularity = groups[0].granularity if groups else "channel"
    if granularity not in crit.granularities:
        raise ValueError(f"criterion {crit.name!r} supports granularities {crit.granularities}, "
                         f"not {granularity!r}")
    layers = prunable_layers(model)
    needed = {m.name for g in groups for m in g.members if m.role == crit.source}
    state = crit.prepare(model, {n: layers[n] for n in layers if n in needed}, calib)
    mods = dict(model.named_modules())
    return {g.name: _group_scores(g, crit, state, mods) for g in groups}


# ------------------------------------------------------------------------------ analysis cache

def _example(ctx, seed: int = 0) -> torch.Tensor:
    return ctx.calibration(seed)[0][:1]


def _calib_for(criterion: str, ctx, seed: int):
    from .importance import CRITERIA

    return ctx.calibration(seed) if CRITERIA.get(criterion).needs_data else None


class _Analysis:
    """A private copy of a source model with its graph, groups and cached scores."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        from .models import clone_model

        self.copy = clone_model(model)
        self.dg, self.output_layer = _build_graph(self.copy, example)
        self._groups: dict[str, list[UnitGroup]] = {}
        self.scores: dict[tuple, dict[str, torch.Tensor]] = {}

    def groups(self, granularity: str) -> list[UnitGroup]:
        if granularity not in self._groups:
            self._groups[granularity] = _groups(self.copy, self.dg, self.output_layer, granularity)
        return self._groups[granularity]


def _analysis(model: nn.Module, example: torch.Tensor) -> _Analysis:
    entry = _analysis_cache.get(model)
    if entry is None:
        entry = _Analysis(model, example)
        _analysis_cache[model] = entry
    return entry


def _scores_key(criterion: str, granularity: str, seed: int, calib) -> tuple:
    return (criterion, granularity, seed, None if calib is None else tuple(calib[0].shape))


def _validate_granularity(granularity: str) -> None:
    if granularity not in UNIT_GRANULARITIES:
        raise ValueError(f"granularity must be one of {UNIT_GRANULARITIES} for structured pruning, "
                         f"got {granularity!r}")


def _nonempty(groups: list[UnitGroup], granularity: str) -> list[UnitGroup]:
    if not groups:
        hint = {"neuron": "Linear layers (other than the output layer)",
                "channel": "convolutions", "head": "attention modules with qkv/proj/num_heads"}[granularity]
        raise ValueError(f"granularity {granularity!r}: the model has no prunable {hint}")
    return groups


# ------------------------------------------------------------------------------ selection

def _resolve(groups: list[UnitGroup], layer: str) -> UnitGroup:
    for g in groups:
        if layer == g.name or layer in g.producers:
            return g
    valid = ", ".join(g.name for g in groups[:16]) + (" ..." if len(groups) > 16 else "")
    raise ValueError(f"layer {layer!r} has no prunable {groups[0].granularity if groups else ''} units; "
                     f"prunable layers: {valid}")


def _cut(sorted_vals: torch.Tensor, k: int) -> float:
    """A threshold between the k-th and (k+1)-th smallest values (for display)."""
    if k <= 0:
        return -math.inf
    if k >= len(sorted_vals):
        return math.inf
    a, b = float(sorted_vals[k - 1]), float(sorted_vals[k])
    return (a + b) / 2 if b > a else float(torch.nextafter(torch.tensor(a), torch.tensor(math.inf)))


def _select(groups: list[UnitGroup], scores: dict[str, torch.Tensor], *, sparsity: float | None,
            threshold: float | None, overrides: Sequence = (), granularity: str = "",
            criterion: str = "") -> Selection:
    by_group = {}
    for o in overrides:
        g = _resolve(groups, o.layer)
        if g.name in by_group:
            raise ValueError(f"layer {o.layer!r}: group {g.name!r} is overridden twice")
        by_group[g.name] = o
    pruned: dict[str, list[int]] = {g.name: [] for g in groups}
    thresholds: dict[str, float] = {}
    glob = [g for g in groups if g.name not in by_group]
    if glob and threshold is not None:
        for g in glob:
            pruned[g.name] = torch.nonzero(scores[g.name] < threshold).flatten().tolist()
            thresholds[g.name] = float(threshold)
    elif glob and sparsity is not None:
        allv = torch.cat([scores[g.name] for g in glob])
        vals, order = torch.sort(allv, stable=True)
        k = int(round(sparsity * len(allv)))
        t = _cut(vals, k)
        offsets, start = {}, 0
        for g in glob:
            offsets[g.name] = start
            start += g.n_units
        chosen = order[:k].tolist()
        bounds = [(offsets[g.name], offsets[g.name] + g.n_units, g.name) for g in glob]
        for c in chosen:
            for lo, hi, name in bounds:
                if lo <= c < hi:
                    pruned[name].append(c - lo)
                    break
        for g in glob:
            thresholds[g.name] = t
    for name, o in by_group.items():
        s = scores[name]
        if o.threshold is not None:
            pruned[name] = torch.nonzero(s < o.threshold).flatten().tolist()
            thresholds[name] = float(o.threshold)
        else:
            vals, order = torch.sort(s, stable=True)
            k = int(round(o.sparsity * len(s)))
            pruned[name] = order[:k].tolist()
            thresholds[name] = _cut(vals, k)
    warns = []
    for g in groups:
        p = sorted(pruned[g.name])
        if len(p) >= g.n_units:
            best = int(torch.argmax(scores[g.name]))
            p = [i for i in p if i != best]
            warns.append(f"{g.name}: the amount asks to remove all {g.n_units} {g.granularity}s; "
                         f"kept 1 (the best-scoring, #{best})")
        pruned[g.name] = p
    return Selection(granularity, criterion, scores, pruned, thresholds, warns)


def _step_amounts(step) -> dict:
    return dict(sparsity=step.sparsity, threshold=step.threshold, overrides=step.layers,
                granularity=step.granularity, criterion=step.criterion)


# ------------------------------------------------------------------------------ public API

def prunable_units(model: nn.Module, granularity: str, ctx=None, *,
                   example: torch.Tensor | None = None) -> dict[str, int]:
    """Prunable layers (unit groups) of ``model`` at ``granularity`` -> number of units.

    Args:
        model: the model (not changed; analysed on a private copy, cached per model).
        granularity: "neuron", "channel" or "head".
        ctx: an ``ApplyContext`` (its calibration batch gives the example input), or
        example: an example input batch.

    Raises:
        ValueError: unknown granularity.
    """
    _validate_granularity(granularity)
    ex = example if example is not None else _example(ctx)
    return {g.name: g.n_units for g in _analysis(model, ex).groups(granularity)}


def group_info(model: nn.Module, granularity: str, ctx=None, *,
               example: torch.Tensor | None = None) -> list[UnitGroup]:
    """The unit groups (with coupled layers) of ``model`` at ``granularity``."""
    _validate_granularity(granularity)
    ex = example if example is not None else _example(ctx)
    return list(_analysis(model, ex).groups(granularity))


def all_unit_scores(model: nn.Module, criterion: str, granularity: str, ctx=None, *, seed: int = 0,
                    example: torch.Tensor | None = None, calib=None) -> dict[str, torch.Tensor]:
    """Normalised scores of every prunable group (cached per model, criterion, seed).

    Raises:
        ValueError: unknown granularity or criterion, a criterion that does not support the
            granularity, or the model has no units of that granularity.
    """
    _validate_granularity(granularity)
    ex = example if example is not None else _example(ctx, seed)
    if calib is None and ctx is not None:
        calib = _calib_for(criterion, ctx, seed)
    an = _analysis(model, ex)
    key = _scores_key(criterion, granularity, seed, calib)
    if key not in an.scores:
        groups = _nonempty(an.groups(granularity), granularity)
        an.scores[key] = _score_groups(an.copy, groups, criterion, seed, calib)
    return an.scores[key]


def unit_scores(model: nn.Module, layer: str, criterion: str, granularity: str, ctx=None, *,
                seed: int = 0, example: torch.Tensor | None = None, calib=None) -> torch.Tensor:
    """Normalised scores (1.0 = the layer's mean) of one layer's units, ``(n_units,)``.

    ``layer`` may be a group's name or any layer producing its units.
    """
    scores = all_unit_scores(model, criterion, granularity, ctx, seed=seed, example=example, calib=calib)
    ex = example if example is not None else _example(ctx, seed)
    return scores[_resolve(_analysis(model, ex).groups(granularity), layer).name]


def select_units(step, model: nn.Module, ctx=None, *, example: torch.Tensor | None = None,
                 calib=None) -> Selection:
    """What a structured ``Prune`` step would remove from ``model`` (nothing is pruned).

    Its ``warnings`` say when an amount asked to remove every unit of a layer.
    """
    _validate_granularity(step.granularity)
    ex = example if example is not None else _example(ctx, step.seed)
    scores = all_unit_scores(model, step.criterion, step.granularity, ctx, seed=step.seed,
                             example=ex, calib=calib)
    groups = _analysis(model, ex).groups(step.granularity)
    return _select(groups, scores, **_step_amounts(step))


def pruned_units(step, model: nn.Module, layer: str, ctx=None, **kw) -> list[int]:
    """Unit indices of ``layer`` that ``step`` removes."""
    sel = select_units(step, model, ctx, **kw)
    ex = kw.get("example") if kw.get("example") is not None else _example(ctx, step.seed)
    return sel.pruned[_resolve(_analysis(model, ex).groups(step.granularity), layer).name]


def compare_criteria(model: nn.Module, layer: str, criteria: Iterable[str], ratio: float,
                     granularity: str, ctx=None, *, seed: int = 0, example: torch.Tensor | None = None,
                     calib=None):
    """Which units of ``layer`` each criterion prunes at the same ``ratio``.

    Returns:
        ``(jaccard, grid)``: a criteria x criteria DataFrame of Jaccard overlaps of the
        pruned sets (1.0 where both prune nothing), and a units x criteria boolean
        DataFrame (True = pruned). Criteria that do not support the granularity are left out.
    """
    import pandas as pd

    from .importance import CRITERIA
    from .plan import validate_fraction

    validate_fraction("ratio", ratio)
    _validate_granularity(granularity)
    grid = {}
    n = None
    for c in criteria:
        cls = CRITERIA.get(c)
        if granularity not in cls.granularities:
            continue
        s = unit_scores(model, layer, c, granularity, ctx, seed=seed, example=example, calib=calib)
        n = len(s)
        k = min(int(round(ratio * n)), n - 1)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.sort(s, stable=True).indices[:k]] = True
        grid[c] = mask.numpy()
    names = list(grid)
    jac = pd.DataFrame(1.0, index=names, columns=names)
    for a in names:
        for b in names:
            inter = (grid[a] & grid[b]).sum()
            union = (grid[a] | grid[b]).sum()
            jac.loc[a, b] = float(inter / union) if union else 1.0
    table = pd.DataFrame(grid, index=pd.RangeIndex(n or 0, name="unit"))
    return jac, table


def structured_prune(model: nn.Module, example: torch.Tensor, *, granularity: str, criterion: str = "l1",
                     sparsity: float | None = None, threshold: float | None = None,
                     layers: Sequence = (), seed: int = 0, calib=None,
                     source: nn.Module | None = None) -> tuple[nn.Module, Selection]:
    """Remove units of ``model`` (a copy is pruned; ``model`` is not changed).

    Args:
        model: the model to prune.
        example: an example input batch (for tracing the dependency graph).
        granularity: "neuron" | "channel" | "head".
        criterion: importance criterion name.
        sparsity / threshold: the global amount (fraction of units, or a threshold in
            normalised score units); ``layers``: ``LayerOverride``s per layer.
        seed: seed of the criterion (random) — the calibration batch is ``calib``.
        calib: ``(x, y)`` for data-driven criteria.
        source: where to cache the scores (default ``model``).

    Returns:
        ``(pruned model, selection)``.

    Raises:
        ValueError: bad granularity / criterion / override, or no units to prune.
    """
    from .models import clone_model
    from .plan import validate_fraction

    _validate_granularity(granularity)
    validate_fraction("sparsity", sparsity)
    new = clone_model(model)
    dg, output_layer = _build_graph(new, example)
    groups = _nonempty(_groups(new, dg, output_layer, granularity), granularity)
    src = source if source is not None else model
    key = _scores_key(criterion, granularity, seed, calib)
    an = _analysis_cache.get(src)
    scores = an.scores.get(key) if an is not None else None
    if scores is None:
        scores = _score_groups(new, groups, criterion, seed, calib)  # `new` still equals `model` here
        if an is not None:
            an.scores[key] = scores
    sel = _select(groups, scores, sparsity=sparsity, threshold=threshold, overrides=layers,
                  granularity=granularity, criterion=criterion)
    mods = dict(new.named_modules())
    for g in groups:
        units = sel.pruned[g.name]
        if not units:
            continue
        idxs = g.root_channels(units)
        root = mods[g.root]
        pruner = dg.get_pruner_of_module(root)
        fn = pruner.prune_out_channels if g.root_out else pruner.prune_in_channels
        dg.get_pruning_group(root, fn, idxs).prune(record_history=False)
        if g.granularity == "head":
            mods[g.name].num_heads -= len(units)
    trainable = any(p.requires_grad for p in model.parameters())
    for p in new.parameters():  # Torch-Pruning makes new Parameters; keep the source's flag
        p.requires_grad_(trainable)
    new.eval()
    return new, sel


def apply_structured_prune(step, model: nn.Module, ctx) -> nn.Module:
    """Build the model of a ``Prune`` step with granularity neuron / channel / head.

    The input model is not changed. The calibration batch is ``ctx.calibration(step.seed)``;
    the same step on the same model gives identical weights. Warnings (a layer kept at
    one unit) are available from :func:`select_units` with the same arguments.

    Raises:
        ValueError: bad granularity, criterion or override; the model has no such units.
    """
    calib = _calib_for(step.criterion, ctx, step.seed)
    new, _ = structured_prune(model, _example(ctx, step.seed), granularity=step.granularity,
                              criterion=step.criterion, sparsity=step.sparsity, threshold=step.threshold,
                              layers=step.layers, seed=step.seed, calib=calib)
    return new


__all__ = ["UNIT_GRANULARITIES", "UnitGroup", "Selection", "prunable_units", "group_info",
           "all_unit_scores", "unit_scores", "select_units", "pruned_units", "compare_criteria",
           "structured_prune", "apply_structured_prune"]
