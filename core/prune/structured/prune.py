"""Removing the selected units, with everything coupled to them, from a copy.

The pruned copy must still run: after pruning, the example batch goes through it and
its output must keep its shape: every leaf of a nest of outputs (``core.ground.outputs.leaves``:
a segmenter's ``out`` and ``aux``, a pyramid's feature maps) keeps the base's name and shape.
A module attribute holding the old width (torchvision's
ViT reshapes with its stored ``hidden_dim``) is updated to the new one. When the copy
does not run, the groups that break it are found by bisection (each half pruned on a
fresh copy) and left out; the report's warnings name them and say why, as they name the
groups Torch-Pruning could not follow (``graph.unit_groups``).

Each copy is the source's analysis copy with its dependency graph, copied together
(``tp_compat.copy_graph``): the graph is traced once per source model, not per prune.
The outcome of the check is kept in the analysis (``Analysis.checked``) by the widths
pruned, i.e. the units removed per group: the shapes a pruned model computes with depend
on those alone, not on which units went, so the same widths on the same source skip the
check forward (and the bisection) and leave out the same groups with the same reasons. Only Torch-Pruning's own
calls and the model's forward are caught (``FOREIGN_ERRORS``, chained): the model not
running on the example, or running out of memory, is a :class:`~core.errors.ModelError`;
a failure of our own code (selection, scores, widths) propagates as the bug it is.
"""
from __future__ import annotations

import torch
from torch import nn

from core.errors import FOREIGN_ERRORS, ModelError, first_line
from core.ground.constraints import Options, check_args
from core.ground.outputs import SINGLE, leaf_shapes
from core.plan.report import UNIT_NORMALISED, StepReport
from core.prune.structured.analysis import Analysis, all_unit_scores, analysis, calibration_for, example_input
from core.prune.structured.graph import UNIT_GRANULARITIES, TorchPruningFailed, UnitGroup
from core.prune.structured.heads import prune_gqa, remove_heads
from core.prune.structured.select import Selection, units_to_remove
from core.prune.structured.tp_compat import copy_graph
from core.sources.bases import clone_model

# attributes of non-layer modules that hold a width, updated when that width is pruned
WIDTH_ATTRS = ("hidden_dim", "embed_dim", "dim", "hidden_size", "d_model", "num_features", "width",
               "channels", "num_channels", "embed_dims")


def _layer_type(m: nn.Module) -> bool:
    """A module Torch-Pruning prunes itself (its own shape attributes are its business)."""
    from torch_pruning import ops

    return ops.module2type(m) != ops.OPTYPE.ELEMENTWISE


def _fix_widths(model: nn.Module, members: set[str], old: int, new: int) -> list[str]:
    """Set width attributes equal to ``old`` on the ancestors of ``members`` to ``new``;
    returns the attributes changed (``path.attr``)."""
    if old == new:
        return []
    ancestors = {""}
    for name in members:
        parts = name.split(".")
        ancestors.update(".".join(parts[:i]) for i in range(1, len(parts)))
    mods = dict(model.named_modules())
    changed = []
    for path in sorted(ancestors):
        m = mods.get(path)
        if m is None or _layer_type(m):
            continue
        for a in WIDTH_ATTRS:
            v = m.__dict__.get(a)
            if isinstance(v, int) and not isinstance(v, bool) and v == old:
                setattr(m, a, new)
                changed.append(f"{path + '.' if path else ''}{a}")
    return changed


def _prune_groups(an: Analysis, model: nn.Module, groups: list[UnitGroup],
                  pruned: dict[str, list[int]]) -> nn.Module:
    """A copy of ``model`` (of its analysis copy ``an.copy``, with a copy of its graph) with
    ``pruned[g.name]`` units removed from each of ``groups``."""
    new, dg = copy_graph(an.dg)
    mods = dict(new.named_modules())
    gqa: dict[str, dict[str, list[int]]] = {}  # grouped-query module -> its units by kind (pruned by hand)
    for g in groups:
        units = pruned.get(g.name)
        if not units:
            continue
        if g.by_hand:
            gqa.setdefault(g.root.rsplit(".", 1)[0], {})[g.by_hand] = units
            continue
        root = mods[g.root]
        pruner = dg.get_pruner_of_module(root)
        fn = pruner.prune_out_channels if g.root_out else pruner.prune_in_channels
        width = pruner.get_out_channels(root) if g.root_out else pruner.get_in_channels(root)
        group = dg.get_pruning_group(root, fn, g.root_channels(units))  # TorchPruningFailed: cannot follow it
        try:  # Torch-Pruning pruning the person's layers
            group.prune(record_history=False)
        except FOREIGN_ERRORS as exc:
            raise TorchPruningFailed(f"{type(exc).__name__}: {first_line(exc)[:160]}") from exc
        if g.granularity == "head":
            remove_heads(mods[g.name], units)
        elif g.root_out:
            _fix_widths(new, {x.name for x in g.members}, width, pruner.get_out_channels(root))
    del dg
    for attn, kinds in gqa.items():
        prune_gqa(mods[attn], kinds.get("kv_groups", ()), kinds.get("query_positions", ()))
    trainable = any(p.requires_grad for p in model.parameters())
    for p in new.parameters():  # Torch-Pruning makes new Parameters; keep the source's flag
        p.requires_grad_(trainable)
    new.eval()
    return new


def _runs(model: nn.Module, example: torch.Tensor, want: dict[str, tuple]) -> str | None:
    """None when ``model`` runs on ``example`` with output leaves of the shapes ``want``, else why not."""
    try:
        with torch.no_grad():
            out = model(example)
    except FOREIGN_ERRORS as exc:  # the person's model's forward, pruned: its failure is the finding
        return f"{type(exc).__name__}: {first_line(exc)[:160]}"
    got = leaf_shapes(out)
    if got.keys() != want.keys():
        return f"its output leaves are {', '.join(got)} instead of {', '.join(want)}"
    for k, shape in want.items():
        if got[k] != shape:
            return f"its output {_leaf(k, want)}has shape {got[k]} instead of {shape}"
    return None


def _leaf(name: str, want: dict) -> str:
    return "" if list(want) == [SINGLE] else f"{name!r} "


def _attempt(an: Analysis, model: nn.Module, example: torch.Tensor, groups: list[UnitGroup], pruned: dict,
             want: dict) -> tuple[nn.Module | None, str | None]:
    """(pruned copy, None) when pruning ``groups`` gives a model that runs, else (None, why)."""
    try:
        new = _prune_groups(an, model, groups, pruned)
    except TorchPruningFailed as exc:  # raised around Torch-Pruning's calls alone: the finding
        return None, f"pruning it raises {exc}"
    why = _runs(new, example, want)
    return (new, None) if why is None else (None, why)


def _out_shape(an: Analysis, model: nn.Module, example: torch.Tensor) -> dict[str, tuple]:
    """The shape of each output leaf of ``model`` on ``example``: the analysis trace's when it ran
    the model on an example of that shape, else one forward (kept in ``an``)."""
    key = tuple(example.shape)
    if key not in an.outputs:
        run = clone_model(model) if model.training else model
        try:
            with torch.no_grad():
                out = run(example)
        except FOREIGN_ERRORS as exc:  # the person's model's forward
            raise ModelError(f"the model does not run on the example batch ({type(exc).__name__}: "
                             f"{first_line(exc)[:200]})") from exc
        an.outputs[key] = leaf_shapes(out)
    if not an.outputs[key]:
        raise ModelError("structured pruning needs a model returning tensors (a tensor or a nest of them), "
                         "this one returns none")
    return an.outputs[key]


def _bisect(an: Analysis, model: nn.Module, example: torch.Tensor, groups: list[UnitGroup], sel: Selection,
            want: dict) -> tuple[nn.Module, list[tuple[str, str]]]:
    """The pruned copy, checked to run; groups whose pruning breaks the forward pass are left
    out (found by bisection, each half pruned on a fresh copy, only when the whole fails).
    Returns (model, [(group left out, why)])."""
    active = [g for g in groups if sel.pruned.get(g.name)]
    new, why = _attempt(an, model, example, groups, sel.pruned, want)
    if why is None:
        return new, []
    del new
    bad: list[tuple[str, str]] = []

    def find(part: list[UnitGroup], why: str | None = None) -> None:
        if why is None:
            why = _attempt(an, model, example, part, sel.pruned, want)[1]
        if why is None:
            return
        if len(part) == 1:
            bad.append((part[0].name, why))
            return
        half = len(part) // 2
        find(part[:half])
        find(part[half:])

    find(active, why)
    _leave_out(groups, sel, bad)
    new, still = _attempt(an, model, example, groups, sel.pruned, want)
    if still is not None:
        raise ModelError(f"the pruned model does not run ({still}), and leaving out single groups does not "
                         f"mend it; prune fewer layers (overrides) or another granularity")
    return new, bad


def _leave_out(groups: list[UnitGroup], sel: Selection, bad: list[tuple[str, str]]) -> None:
    names = {b for b, _ in bad}
    for g in groups:
        if g.name in names:
            sel.pruned[g.name] = []


def _widths_key(groups: list[UnitGroup], sel: Selection, example: torch.Tensor) -> tuple:
    """What decides whether a pruned copy runs: the example's shape and the units removed per group."""
    removed = tuple((g.name, len(sel.pruned[g.name])) for g in groups if sel.pruned.get(g.name))
    return tuple(example.shape), groups[0].granularity if groups else "", removed


def _prune_checked(an: Analysis, model: nn.Module, example: torch.Tensor, groups: list[UnitGroup], sel: Selection,
                   want: dict) -> tuple[nn.Module, list[str]]:
    """The pruned copy with the groups that break it left out (:func:`_bisect`), the check
    skipped for widths already checked on this source (``an.checked``). Returns (model, warnings)."""
    key = _widths_key(groups, sel, example)
    bad = an.checked.get(key)
    if bad is None:
        new, bad = _bisect(an, model, example, groups, sel, want)
        an.checked[key] = bad
    else:  # the same widths ran (with these groups left out): the same shapes run again
        _leave_out(groups, sel, bad)
        new = _prune_groups(an, model, groups, sel.pruned)
    warns = []
    for b, w in bad:
        why = w if w.startswith("pruning it raises") else f"pruning it breaks the forward pass: {w}"
        warns.append(f"{b}: left out ({why})")
    return new, warns


def remove_units(model: nn.Module, example: torch.Tensor, step, groups: list[UnitGroup],
                 scores: dict[str, torch.Tensor], skipped=(), an: Analysis | None = None,
                 ) -> tuple[nn.Module, Selection, list[str]]:
    """Remove the units ``step`` selects from a copy of ``model`` (not changed).

    Args:
        model: the source model.
        example: an example input batch: the pruned copy must run on it and keep its
            output shape (groups that break it are left out, found by bisection).
        step: a ``Prune`` step of a unit granularity (any object with its fields).
        groups: the unit groups of ``model`` at that granularity (``Analysis.groups``).
        scores: group name -> normalised unit scores (``all_unit_scores``).
        skipped: ``(group, reason)`` for groups Torch-Pruning cannot follow.
        an: the analysis of ``model`` (its graph is copied rather than traced again, and
            the widths checked are kept in it); None: one is made here, traced on ``example``.

    Returns:
        ``(pruned copy, selection, warnings about the groups left out)``.

    Raises:
        ModelError: the model does not run on ``example``, or no single group left out mends it.
    """
    an = Analysis(model, example) if an is None else an
    sel = units_to_remove(groups, scores, step)
    want = _out_shape(an, model, example)
    new, warns = _prune_checked(an, model, example, groups, sel, want)
    warns = [f"{layer}: left out ({reason})" for layer, reason in skipped] + warns
    return new, sel, warns


def _memory_checked(what: str, fn):
    """Run ``fn``; running out of memory becomes a ModelError saying what ran out. Anything
    else propagates as it is: the person's reasons are caught around the third-party calls
    themselves (Torch-Pruning's, the model's forward), a bug of ours stays a bug."""
    try:
        return fn()
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise ModelError(f"{what} ran out of memory") from exc


def structured_prune_step(step, model: nn.Module, ctx) -> tuple[nn.Module, StepReport]:
    """Build the model of a ``Prune`` step with granularity neuron / channel / head.

    The input model is not changed; the same step on the same model gives identical
    weights. Scores come from the analysis memoised for ``model`` in ``ctx``.

    Returns:
        ``(pruned model, report)``: per group its threshold (normalised score), units
        removed of units, the removed indices, and warnings (a layer kept at one unit; a
        group left out because Torch-Pruning cannot follow it or its pruning breaks the
        forward pass, with the reason). A group left out removes nothing.

    Raises:
        PrunescopeError: bad granularity, criterion or override; the model has no such
            units, cannot be traced or does not run; memory ran out (a ModelError).
    """
    check_args("structured pruning", {"granularity": Options(UNIT_GRANULARITIES)}, error=ModelError,
               granularity=step.granularity)

    gqa = []  # grouped-query modules among the groups: their units are not single heads
    found: list[UnitGroup] = []  # the groups the graph could follow

    def run():
        calib = calibration_for(step.criterion, ctx, step.seed)
        scores = all_unit_scores(model, step.criterion, step.granularity, ctx, seed=step.seed, calib=calib)
        an = analysis(model, ctx, seed=step.seed)
        groups = an.groups(step.granularity)
        found.extend(groups)
        gqa.extend(g.name for g in groups if g.by_hand)
        skipped = list(an.skipped.get(step.granularity, ()))
        return remove_units(model, example_input(ctx, step.seed), step, groups, scores, skipped, an=an)

    new, sel, warns = _memory_checked(f"structured pruning ({step.granularity})", run)
    units = {g: (len(p), len(sel.scores[g])) for g, p in sel.pruned.items()}
    report = StepReport("prune", thresholds=dict(sel.thresholds), threshold_unit=UNIT_NORMALISED,
                        global_threshold=sel.global_threshold, units=units, unit_name=step.granularity,
                        removed={g: tuple(p) for g, p in sel.pruned.items()}, warnings=warns + list(sel.warnings))
    report.summary = f"removed {report.pruned:,} of {report.total:,} {step.granularity}s"
    if gqa:
        report.summary += " (in grouped-query attention a unit is a key/value group or one query head of every group)"
    if warns:
        report.summary += f"; {len(warns)} group(s) left out (see warnings)"
    low = _low_reach(model, new, found, step.granularity) if report.pruned else None
    if low:
        report.warnings.append(low)
        report.summary += "; most of the model is out of this granularity's reach (see warnings)"
    return new, report


LOW_REACH = 0.25  # groups reaching layers with less than this share of the parameters: the step says why


def _low_reach(model: nn.Module, new: nn.Module, groups: list[UnitGroup], granularity: str) -> str | None:
    """A sentence when the layers the step's groups reach at all (producing or reading their
    units) hold under :data:`LOW_REACH` of ``model``'s parameters: that share, what the step
    removed, and why the rest was kept; else None."""
    total = sum(p.numel() for p in model.parameters())
    mods = dict(model.named_modules())
    reached = {m.name for g in groups for m in g.members}
    share = sum(p.numel() for n in reached if n in mods for p in mods[n].parameters(recurse=False)) / max(1, total)
    if share >= LOW_REACH:
        return None
    removed = 1 - sum(p.numel() for p in new.parameters()) / max(1, total)
    other = {"channel": "neuron (the hidden units of its MLPs)", "neuron": "channel"}.get(granularity, "neuron")
    return (f"removed {removed:.1%} of the parameters: the {len(groups)} {granularity} group(s) the dependency graph "
            f"can follow reach layers holding {share:.1%} of them; the other layers' {granularity}s are coupled across "
            f"the model in ways it cannot follow (a residual stream shared by every block, window or head reshapes) "
            f"or feed an output, and are kept. To shrink this model further try {other} granularity, or weight masks")


__all__ = ["remove_units", "structured_prune_step"]
