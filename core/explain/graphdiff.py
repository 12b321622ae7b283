"""The graph diff of base against current: every module of the two models matched by path and
labelled kept, narrowed, masked, removed or added, with its parameters, MACs, sparsity, widths
and (optionally) its profiled latency on each side. The decisions are read from the plan's step
reports (what a step removed, which bridge it fitted), never recomputed."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from core.explain.diff_figures import exec_order, fx_edges, is_leaf, merged_order, own_macs, own_params, shape_of
from core.explain.diff_profile import profile_pair
from core.explain.diff_steps import Touches, read_touches, surgery_steps

STATUSES = ("kept", "narrowed", "masked", "removed", "added")


@dataclass(frozen=True)
class NodeFigures:
    """One side of a node: the base's or the current model's figures for one module."""
    params: int                # parameters of the module itself (not its children)
    macs: int                  # MACs per example of the module itself
    sparsity: float            # zero parameters / parameters (0.0 for a module without parameters)
    shape: dict[str, int]      # widths per dimension, e.g. {"in_channels": 32, "out_channels": 64}
    latency_ms: float | None = None       # profiled time of the module per batch, ms (None: not profiled)
    latency_share: float | None = None    # its share of the profiled forward's leaf-module time


@dataclass(frozen=True)
class DiffNode:
    """One module of the diff."""
    name: str                  # module path in the base; for added modules their path in the current model
    kind: str                  # class name ("Conv2d", "Linear", "Bridge", ...)
    status: str                # one of STATUSES
    before: NodeFigures | None     # None when added
    after: NodeFigures | None      # None when removed
    widths: dict[str, tuple[int, int]]    # narrowed dimensions: name -> (before, after); {} otherwise
    removed_importance: float | None      # mean criterion score of the removed units; None if n/a
    steps: tuple[int, ...]     # indices of the plan's steps that touched it
    container: str             # parent path ("features.1"; "" at the top)
    order: int                 # position in execution order of a forward (for layout)
    weights_changed: bool = False         # same shapes, other values than the base's (finetuned, reconstructed, healed)
    is_container: bool = False            # a container removed or added as a whole (its leaves are nodes too)
    quantized: bool = False    # the current module is a quantised wrapper of the base's module
    note: str = ""             # a short word on why it has its status ("cut by step 1", "bridge of step 2", ...)


@dataclass
class GraphDiff:
    """The diff of a plan's result against its base.

    ``edges`` join node names in the direction data flows: from a ``torch.fx`` trace of the
    current model where it traces (``edges_from == "fx"``), else consecutive leaf modules in the
    order a forward runs them (``edges_from == "order"``)."""
    model: str
    plan_key: str
    nodes: list[DiffNode]
    edges: list[tuple[str, str]]   # data flow between node names
    edges_from: str                # "fx" or "order"
    totals: dict                   # {"before": {"params", "macs", "latency_ms"}, "after": {...}}
    profiled: bool                 # latency columns filled (torch.profiler, same batch and threads)
    profile_note: str              # how latency was measured (batch, threads, device, runs) or why not
    steps: list[dict] = field(default_factory=list)   # [{"index", "kind", "label"}] of the plan's steps

    def counts(self) -> dict[str, int]:
        """Status -> number of nodes, every status present (0 when none)."""
        out = dict.fromkeys(STATUSES, 0)
        for n in self.nodes:
            out[n.status] += 1
        return out

    def node(self, name: str) -> DiffNode:
        """The node called ``name`` (KeyError when absent)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def to_dict(self) -> dict:
        """JSON-ready: ``{"model", "plan", "counts", "nodes": [...], "edges", "edges_from", "totals",
        "profiled", "profile_note", "steps"}``; widths become ``[before, after]`` lists."""
        nodes = []
        for n in self.nodes:
            d = asdict(n)
            d["widths"] = {k: list(v) for k, v in n.widths.items()}
            d["steps"] = list(n.steps)
            nodes.append(d)
        return {"model": self.model, "plan": self.plan_key, "counts": self.counts(), "nodes": nodes,
                "edges": [list(e) for e in self.edges], "edges_from": self.edges_from, "totals": self.totals,
                "profiled": self.profiled, "profile_note": self.profile_note, "steps": list(self.steps)}


# which modules an int8 quantisation covers, by its mode (core.recover.quantize: static quantises
# Conv, Gemm and MatMul; dynamic MatMul and Gemm)
_QUANTISED = {"static": (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear), "dynamic": (nn.Linear,)}


def _figures(m: nn.Module, macs: dict[str, int], name: str) -> NodeFigures:
    n, z = own_params(m)
    return NodeFigures(params=n, macs=int(macs.get(name, 0)), sparsity=z / n if n else 0.0, shape=shape_of(m))


def _with_latency(f: NodeFigures | None, ms: dict[str, float] | None, name: str) -> NodeFigures | None:
    if f is None or ms is None or name not in ms:
        return f
    total = sum(ms.values())
    return NodeFigures(f.params, f.macs, f.sparsity, f.shape, latency_ms=ms[name],
                       latency_share=ms[name] / total if total > 0 else 0.0)


def _status(b: nn.Module | None, a: nn.Module | None, fb: NodeFigures | None, fa: NodeFigures | None
            ) -> tuple[str, dict[str, tuple[int, int]], bool]:
    """``(status, narrowed widths, weights changed)`` of one module path."""
    if a is None:
        return "removed", {}, False
    if b is None:
        return "added", {}, False
    widths = {k: (fb.shape[k], fa.shape[k]) for k in fb.shape if k in fa.shape and fb.shape[k] != fa.shape[k]}
    if widths or fb.params != fa.params:
        return "narrowed", widths, False
    pb, pa = dict(b.named_parameters(recurse=False)), dict(a.named_parameters(recurse=False))
    # surviving weights only: a weight a prune zeroed is the mask's doing, not a changed value
    changed = any(bool(((pa[k] != pb[k]) & (pa[k] != 0)).any()) for k in pb if k in pa)
    if fa.sparsity > fb.sparsity:
        return "masked", {}, changed
    return "kept", {}, changed


def _paths(base: nn.Module, cur: nn.Module) -> tuple[dict, dict, list[str]]:
    """Both models' modules by path, and the paths that are nodes: every leaf of either, and
    each container only one model has whose parent both have (removed or added as a whole)."""
    bm = {n: m for n, m in base.named_modules() if n}
    cm = {n: m for n, m in cur.named_modules() if n}
    names = []
    for mods, other in ((bm, cm), (cm, bm)):
        for n, m in mods.items():
            parent = n.rpartition(".")[0]
            whole = n not in other and not is_leaf(m) and (not parent or parent in other)
            if (is_leaf(m) or whole) and n not in names:
                names.append(n)
    return bm, cm, names


def _edges(base: nn.Module, cur: nn.Module, names: set[str], removed: set[str], order: dict[str, int],
           leaves: list[str]) -> tuple[list[tuple[str, str]], str]:
    """Data flow from fx traces (the current model's, plus the base's edges that touch a
    removed module), else consecutive leaf modules in execution order."""
    got = fx_edges(cur)
    if got is not None and removed:
        from_base = fx_edges(base)
        got = None if from_base is None else got + [e for e in from_base if e[0] in removed or e[1] in removed]
    if got is not None:
        return [e for e in dict.fromkeys(got) if e[0] in names and e[1] in names], "fx"
    seq = sorted((n for n in leaves if n in order), key=order.get)
    return list(zip(seq, seq[1:])), "order"


def _steps_of(name: str, status: str, changed: bool, quantized: bool, t: Touches, plan) -> tuple[int, ...]:
    s = set(t.steps.get(name, ()))
    if status == "narrowed" and not s:  # a coupled layer no report names: the structured prunes
        s = {i for i, st in enumerate(plan.steps) if st.op == "prune" and getattr(st, "granularity", "") != "weight"}
    if changed:
        s.update(t.trained)
    if quantized and t.quantize is not None:
        s.add(t.quantize)
    return tuple(sorted(s))


def _profiled(base, cur, current, example, profile: bool, batch: int, runs: int):
    if not profile:
        return None, None, "not profiled (ask for profile=True / --profile)"
    if getattr(current, "final", False):
        return None, None, ("not profiled: the current model is an int8 onnxruntime model, whose modules "
                            "cannot be timed one by one")
    return profile_pair(base, cur, example, batch, runs)


def graph_diff(base: nn.Module, current: nn.Module, plan, reports, example: torch.Tensor, *, profile: bool = False,
               batch: int = 32, memo: dict | None = None, model_before: Callable[[int], nn.Module] | None = None,
               ctx=None, runs: int = 5) -> GraphDiff:
    """The diff of ``current`` (``plan`` applied to ``base``, with its step ``reports``) against ``base``.

    Modules are matched by path: surgery keeps the names of the blocks it keeps, so a path in
    both models is the same module (kept, narrowed or masked), a path only in the base was cut
    (removed) and one only in the current model was inserted (added: bridges, pasted blocks,
    adapters). A plan ending in a quantize step is diffed through the float model it quantised
    (``current.reference``): its modules keep the status the float steps gave them, and those
    the int8 quantisation covers (by its mode: static Conv and Linear, dynamic Linear) get
    ``quantized=True`` and the quantize step in ``steps``.

    Args:
        base, current: the two models (only read; hooks are removed afterwards).
        plan, reports: the plan and one StepReport per step.
        example: an input batch on the models' device (its first example is used).
        profile: also time each leaf module of both models (``diff_profile.profile_pair``).
        batch, runs: the profiled batch size and number of interleaved runs.
        memo: a dict to keep the result in, per plan and profile flag.
        model_before, ctx: the model each step was applied to and the apply context (as
            ``Workspace.model_before`` / ``.ctx``): a structured prune's coupled layers and the
            scores of what it removed; without them ``removed_importance`` is None.

    Returns:
        A :class:`GraphDiff`; MACs per example, parameters of each module itself.
    """
    key = ("graph_diff", plan.key(), bool(profile), batch)
    if memo is not None and key in memo:
        return memo[key]
    cur = current.reference if getattr(current, "final", False) else current
    x = example[:1]
    bm, cm, names = _paths(base, cur)
    macs_b, macs_c = own_macs(base, x), own_macs(cur, x)
    t = read_touches(plan, reports, list(bm) + [n for n in cm if n not in bm], model_before, ctx)
    bridges = {n: (m.in_shape, m.out_shape, m.is_identity) for n, m in cm.items()
               if n not in bm and type(m).__name__ == "Bridge"}
    surgery_steps(plan, reports, ctx, [n for n in names if n not in cm], [n for n in names if n not in bm], bridges, t)
    order = merged_order(exec_order(base, x), exec_order(cur, x))
    ms_b, ms_c, note = _profiled(base, cur, current, example, profile, batch, runs)
    mode = getattr(current, "note", "").split(" ", 1)[0]
    qkinds = _QUANTISED.get(mode, ()) if t.quantize is not None else ()
    nodes = []
    for n in names:
        b, a = bm.get(n), cm.get(n)
        fb = _figures(b, macs_b, n) if b is not None else None
        fa = _figures(a, macs_c, n) if a is not None else None
        status, widths, changed = _status(b, a, fb, fa)
        quantized = a is not None and isinstance(a, qkinds)
        nodes.append(DiffNode(
            name=n, kind=type(a if a is not None else b).__name__, status=status,
            before=_with_latency(fb, ms_b, n), after=_with_latency(fa, ms_c, n), widths=widths,
            removed_importance=t.importance.get(n), steps=_steps_of(n, status, changed, quantized, t, plan),
            container=n.rpartition(".")[0], order=order.get(n, len(order)), quantized=quantized,
            weights_changed=changed, is_container=not is_leaf(a if a is not None else b)))
    nodes.sort(key=lambda d: (d.order, d.name))
    leaves = [d.name for d in nodes if not d.is_container]
    edges, edges_from = _edges(base, cur, set(names), {d.name for d in nodes if d.status == "removed"}, order, leaves)
    from core.metrics.cost import count_macs

    totals = {side: {"params": sum(p.numel() for p in m.parameters()), "macs": count_macs(m, x),
                     "latency_ms": sum(ms.values()) if ms is not None else None}
              for side, m, ms in (("before", base, ms_b), ("after", cur, ms_c))}
    out = GraphDiff(model=plan.model, plan_key=plan.key(), nodes=nodes, edges=edges, edges_from=edges_from,
                    totals=totals, profiled=ms_b is not None, profile_note=note,
                    steps=[{"index": i, "kind": s.op, "label": s.describe()} for i, s in enumerate(plan.steps)])
    if memo is not None:
        memo[key] = out
    return out


__all__ = ["STATUSES", "NodeFigures", "DiffNode", "GraphDiff", "graph_diff"]
