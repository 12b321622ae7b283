"""Which of a plan's steps touched a module, and how important what they removed was, read
from the steps and their reports (never recomputed): a weight prune's report names its layers,
a structured prune's names its unit groups and the indices it removed, a cut names its blocks,
a paste names its copy, and every bridge a surgery step inserted is one of its report's seams."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

SURGERY_OPS = ("cut", "paste", "compose")


@dataclass
class Touches:
    """What the steps say about the modules: module path -> step indices, and the mean
    normalised criterion score of the units removed from a module's groups."""
    steps: dict[str, set[int]] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)
    trained: list[int] = field(default_factory=list)   # steps that change surviving weights (finetune, heal, ...)
    quantize: int | None = None                         # index of the plan's quantize step

    def add(self, name: str, i: int) -> None:
        self.steps.setdefault(name, set()).add(i)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _structured(i: int, step, report, names: list[str], t: Touches, model_before, ctx) -> None:
    """A structured prune: its groups' coupled layers (from the analysis of the model it was
    applied to, when ``model_before`` and ``ctx`` are given; else the layers under each group's
    name) and the mean normalised score of the removed units per layer."""
    removed = {g: idx for g, idx in report.removed.items() if idx}
    if model_before is None or ctx is None:
        for g in removed:
            for n in names:
                if _under(n, g):
                    t.add(n, i)
        return
    from core.prune.structured.analysis import all_unit_scores, group_info

    model = model_before(i)
    groups = {g.name: g for g in group_info(model, step.granularity, ctx)}
    scores = all_unit_scores(model, step.criterion, step.granularity, ctx, seed=step.seed)
    acc: dict[str, list[float]] = {}
    for g, idx in removed.items():
        vals = [float(scores[g][j]) for j in idx] if g in scores else []
        members = {m.name for m in groups[g].members} if g in groups else {n for n in names if _under(n, g)}
        for n in members | {g}:
            t.add(n, i)
            acc.setdefault(n, []).extend(vals)
    for n, vals in acc.items():
        if vals:
            t.importance[n] = sum(vals) / len(vals)


def read_touches(plan, reports, names: list[str], model_before: Callable[[int], nn.Module] | None = None,
                 ctx=None) -> Touches:
    """The steps that touched each module, from the plan's steps and their reports.

    Args:
        plan: the plan; reports: one StepReport per step.
        names: every module path of the base and of the current model.
        model_before: ``index -> the model step index was applied to`` (the workspace's
            ``model_before``): with ``ctx`` it gives a structured prune's coupled layers and the
            scores of the removed units; without, a group's own layers only and no scores.
    """
    t = Touches()
    for i, (step, report) in enumerate(zip(plan.steps, reports)):
        if report.op == "quantize":
            t.quantize = i
        elif report.removed:
            _structured(i, step, report, names, t, model_before, ctx)
        elif report.op not in SURGERY_OPS and report.units:
            for layer, (pruned, _total) in report.units.items():
                if pruned:
                    t.add(layer, i)
        if getattr(type(step), "trains", False) or report.op in ("reconstruct", "heal"):
            t.trained.append(i)
    return t


def _container_of(step, ctx) -> str | None:
    """The container a surgery step rebuilt (None: the model's default, not known here)."""
    if step.op == "cut":
        return step.container
    if step.op == "paste":
        if step.into is not None:
            return step.into
        return step.block.rpartition(".")[0] if step.source == "self" else None
    return step.into


def _bridge_seams(plan, reports, bridges: dict[str, tuple], t: Touches) -> set[str]:
    """Each bridge to the first unclaimed seam (in step order) of the same shapes and kind."""
    seams = [(i, s) for i, rep in enumerate(reports) if rep.op in SURGERY_OPS for s in rep.seams]
    claimed, done = set(), set()
    for name, (si, so, identity) in bridges.items():
        for k, (i, s) in enumerate(seams):
            if k not in claimed and (tuple(s.in_shape), tuple(s.out_shape)) == (si, so) and \
                    (s.bridge == "identity") == identity:
                claimed.add(k)
                t.add(name, i)
                done.add(name)
                break
    return done


def surgery_steps(plan, reports, ctx, removed: list[str], added: list[str], bridges: dict[str, tuple],
                  t: Touches) -> None:
    """Add the surgery step of every removed or added module to ``t``: a cut's blocks, a
    paste's copy (``<leaf>_copy`` or ``<source>_<leaf>``), a bridge the seam of the same shapes
    (``bridges``: path -> (in shape, out shape, identity)), else every surgery step on its
    container (a compose rebuilds a whole container)."""
    done = _bridge_seams(plan, reports, bridges, t)
    for n in removed + added:
        if n in done or any(_under(n, b) for b in done):
            t.steps.setdefault(n, set()).update(*(t.steps[b] for b in done if _under(n, b)))
            continue
        hit = False
        for i, step in enumerate(plan.steps):
            if step.op == "cut" and n in removed and any(_under(n, b) for b in step.blocks):
                t.add(n, i)
                hit = True
            elif step.op == "paste" and n in added:
                cont = _container_of(step, ctx)
                leaf = step.block.rpartition(".")[2]
                copy = f"{leaf}_copy" if step.source == "self" else f"{step.source}_{leaf}"
                if (cont is not None and _under(n, f"{cont}.{copy}" if cont else copy)) or \
                        (cont is None and f".{copy}." in f".{n}."):
                    t.add(n, i)
                    hit = True
        if not hit:
            for i, step in enumerate(plan.steps):
                if step.op in SURGERY_OPS and ((cont := _container_of(step, ctx)) is None or not cont
                                               or _under(n, cont)):
                    t.add(n, i)


__all__ = ["Touches", "read_touches", "surgery_steps", "SURGERY_OPS"]
