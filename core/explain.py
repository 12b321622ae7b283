"""What an edit changed: the examples whose prediction changed, the confusion matrices of
base and current and their difference, and where inside the network the current model
departs from the base (linear CKA of each layer's output, base against current).

All on the workspace's evaluation set; nothing here trains or edits a model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import PrunescopeError
from core.models import LABELLED_TASKS
from core.prune.masks import prunable_layers
from core.prune.structured.heads import find_heads
from core.prune.structured.select import find_group
from core.surgery.guides import linear_cka


MAX_CONFUSION_CLASSES = 1000  # a larger confusion matrix (a vocabulary's) is refused


def _float_input(x: torch.Tensor, what: str) -> None:
    """Refuse token ids (integer inputs): they have no gradient."""
    if not x.is_floating_point():
        raise PrunescopeError(f"{what} needs float inputs (images, features); this model reads {x.dtype} token ids, "
                              "which have no gradient")


@dataclass
class Changes:
    """Base against current on one subset of the evaluation set."""

    subset: str
    indices: list[int]  # positions in the test split of the subset's examples
    labels: list[int]  # true labels (for a fidelity model: the base's predictions)
    base_pred: list[int]
    base_conf: list[float]  # softmax probability of the base's prediction
    pred: list[int]
    conf: list[float]  # softmax probability of the current prediction
    conf_in_base_pred: list[float]  # the current model's probability of the base's prediction
    classes: list[str]

    def changed(self, limit: int | None = None, cls: int | None = None) -> list[dict]:
        """Examples whose prediction changed, the largest confidence drop first (the base's
        confidence in its prediction minus the current model's in that same class);
        ``cls`` keeps those whose label or either prediction is that class."""
        rows = []
        for i, (b, p) in enumerate(zip(self.base_pred, self.pred)):
            if b == p:
                continue
            if cls is not None and cls not in (self.labels[i], b, p):
                continue
            rows.append({"index": self.indices[i], "label": self.labels[i], "base_pred": b,
                         "base_conf": self.base_conf[i], "pred": p, "conf": self.conf[i],
                         "drop": self.base_conf[i] - self.conf_in_base_pred[i]})
        rows.sort(key=lambda r: (-r["drop"], r["index"]))
        return rows[:limit] if limit is not None else rows

    def confusion(self, which: str = "current") -> list[list[int]]:
        """Counts [true label][predicted class] of the base or the current model.

        Raises:
            PrunescopeError: more than ``MAX_CONFUSION_CLASSES`` classes (a language model's vocabulary).
        """
        k = len(self.classes)
        if k > MAX_CONFUSION_CLASSES:
            raise PrunescopeError(f"a confusion matrix of {k:,} classes (a language model's vocabulary) is too large; "
                                  f"it is made for at most {MAX_CONFUSION_CLASSES:,} classes")
        pred = self.pred if which == "current" else self.base_pred
        m = [[0] * k for _ in range(k)]
        for t, p in zip(self.labels, pred):
            m[t][p] += 1
        return m

    def confusion_delta(self) -> list[list[int]]:
        """Current minus base confusion counts (a fixed example moves off-diagonal to the
        diagonal; a broken one the other way)."""
        c, b = self.confusion("current"), self.confusion("base")
        return [[c[i][j] - b[i][j] for j in range(len(c))] for i in range(len(c))]


def changes(ws, subset: str = "quick") -> Changes:
    """Predictions of the base and the current model on ``subset`` ("quick" or "full")."""
    ev = ws.evaluator
    x, y = ws.evalset.subset(subset)
    with torch.inference_mode():
        out = ev.outputs(ws.model, subset).float()
        base_out = ev.base_outputs(subset).float()
    p, pb = F.softmax(out, 1), F.softmax(base_out, 1)
    pred, base_pred = p.argmax(1), pb.argmax(1)
    labels = y if ev.task in LABELLED_TASKS else base_pred
    idx = ws.evalset.quick_index if subset == "quick" else list(range(len(ws.evalset.y)))
    return Changes(subset=subset, indices=[int(i) for i in idx], labels=labels.tolist(), base_pred=base_pred.tolist(),
                   base_conf=pb.max(1).values.tolist(), pred=pred.tolist(), conf=p.max(1).values.tolist(),
                   conf_in_base_pred=p.gather(1, base_pred[:, None])[:, 0].tolist(),
                   classes=[str(c) for c in ws.evalset.classes])


def _layer_outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named module's output on ``x`` (one forward pass; hooks removed after)."""
    mods = dict(model.named_modules())
    got, handles = {}, []
    for n in names:
        def hook(_m, _a, o, n=n):
            if isinstance(o, torch.Tensor) and n not in got:
                got[n] = o.detach().flatten(1).float()
        handles.append(mods[n].register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return got


def divergence(ws, subset: str = "quick") -> list[dict]:
    """Linear CKA between the base's and the current model's output of every prunable
    layer present in both (same name), in the base's order: 1 where the current model
    computes what the base does (up to a rotation and scale), lower where it departs.
    A layer cut out of the current model is listed with ``cka`` None.

    Raises:
        PrunescopeError: the current model is not a PyTorch model (a quantised plan).
    """
    cur = ws.model
    if getattr(cur, "final", False):
        raise PrunescopeError("divergence needs the PyTorch modules of the current model; a quantised (onnxruntime) "
                              "model has none: look at the plan without its quantize step")
    x, _ = ws.evalset.subset(subset)
    names = list(prunable_layers(ws.base))
    present = set(dict(cur.named_modules()))
    base_acts = _layer_outputs(ws.base, names, x)
    cur_acts = _layer_outputs(cur, [n for n in names if n in present], x)
    rows = []
    for n in names:
        a, b = base_acts.get(n), cur_acts.get(n)
        rows.append({"layer": n, "cka": None if a is None or b is None else round(linear_cka(a, b), 6)})
    return rows


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
    return {"group": g.name, "granularity": granularity, "unit": unit, "n_units": g.n_units, "layers": layers}


def layer_order(model: nn.Module, example: torch.Tensor) -> list[dict]:
    """The model's parameterised leaf layers (convolutions, linear layers, norms, ...) in
    the order a forward pass runs them: ``[{"layer", "type"}]``; the model is only read."""
    order, handles = [], []
    for name, m in model.named_modules():
        if name and not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False)):
            handles.append(m.register_forward_pre_hook(
                lambda _m, _a, name=name, t=type(m).__name__: order.append({"layer": name, "type": t})))
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


def unit_activations(model: nn.Module, layer: str, unit: int, x: torch.Tensor, granularity: str) -> torch.Tensor:
    """One unit's activation per example: a channel's mean over positions, a neuron's value
    (mean over tokens for sequences), a head's mean |output| over its columns of the
    attention projection's input."""
    mods = dict(model.named_modules())
    if layer not in mods:
        raise PrunescopeError(f"no layer {layer!r} in the model")
    target, got = mods[layer], {}
    if granularity == "head":
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
        return a.flatten(1).mean(1)
    if a.dim() == 4:  # (B, C, H, W)
        return a[:, unit].mean((1, 2))
    if a.dim() == 3:  # (B, T, C)
        return a[..., unit].mean(1)
    return a[:, unit]


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


def unit_report(ws, layer: str, unit: int, granularity: str = "channel", *, subset: str = "quick",
                top: int = 12) -> dict:
    """A unit of the *base* model: its top-activating examples (for a channel, with the
    input region its largest activation depends on: ``field``, see :func:`receptive_box`),
    its activation over the subset, its normalised score under every criterion for this
    granularity, the coupled group, and whether the current plan removes it (known when one structured step of this
    granularity was applied to the base)."""
    from core.prune import CRITERIA
    from core.prune.structured.analysis import unit_scores

    group = coupled_group(ws.base, granularity, layer, unit, ws.ctx)
    x, _ = ws.evalset.subset(subset)
    acts = unit_activations(ws.base, group["group"] if granularity == "head" else layer, unit, x, granularity)
    order = torch.argsort(acts, descending=True, stable=True)[:top].tolist()
    idx = ws.evalset.quick_index.tolist() if subset == "quick" else list(range(len(ws.evalset.y)))
    scores = {}
    for name, crit in CRITERIA.items():
        if granularity in crit.granularities:
            try:
                scores[name] = float(unit_scores(ws.base, layer, name, granularity, ws.ctx)[unit])
            except PrunescopeError:
                scores[name] = None
    removed, by = None, None
    structured = [(i, s) for i, s in enumerate(ws.plan.steps) if getattr(s, "granularity", None) == granularity]
    if len(structured) == 1 and structured[0][0] == 0:
        i = structured[0][0]
        removed = unit in ws.reports[i].removed.get(group["group"], ())
        by = i + 1 if removed else None
    box = (lambda j: receptive_box(ws.base, layer, unit, x[j])) if granularity == "channel" else (lambda j: None)
    return {"layer": layer, "unit": unit, "granularity": granularity, "subset": subset,
            "top": [{"index": idx[j], "activation": float(acts[j]), "field": box(j)} for j in order],
            "activations": acts.tolist(), "scores": scores, "coupled": group,
            "removed": removed, "removed_by_step": by}


def input_gradient(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Saliency of one example: |d logit[target] / d input|, summed over channels, ``(H, W)``
    (or the input's shape without its channel axis). Only the input's gradient is computed:
    the model (possibly the shared base) is only read."""
    if getattr(model, "final", False):
        raise PrunescopeError("attribution needs gradients; a quantised (onnxruntime) model has none")
    _float_input(x, "an input-gradient map")
    xi = x.detach().clone()[None].requires_grad_(True)
    with torch.enable_grad():
        out = model(xi)
        (grad,) = torch.autograd.grad(out[0, int(target)], xi)
    g = grad[0].abs()
    return g.sum(0) if g.dim() >= 2 else g


def last_feature_map(model: nn.Module, x: torch.Tensor) -> str | None:
    """The last module (in execution order) whose output is a (N, C, H, W) feature map with
    more than one position (a global pool's 1 x 1 output is not one): where Grad-CAM looks. None for a model without one (an MLP, a ViT's token sequence)."""
    last, handles = [None], []
    for name, m in model.named_modules():
        if name and not any(True for _ in m.children()):
            handles.append(m.register_forward_hook(
                lambda _m, _a, o, name=name: last.__setitem__(0, name) if isinstance(o, torch.Tensor)
                and o.dim() == 4 and o.shape[2] * o.shape[3] > 1 else None))
    try:
        with torch.inference_mode():
            model(x[None])
    finally:
        for h in handles:
            h.remove()
    return last[0]


def grad_cam(model: nn.Module, x: torch.Tensor, target: int, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) of one example for class ``target``: the feature
    map of ``layer`` (default: the last one, :func:`last_feature_map`) weighted per channel
    by the mean gradient of the logit, summed, ReLU, resized to the input's (H, W).

    Raises:
        PrunescopeError: a quantised model, or a model with no (N, C, H, W) feature map.
    """
    if getattr(model, "final", False):
        raise PrunescopeError("attribution needs gradients; a quantised (onnxruntime) model has none")
    _float_input(x, "Grad-CAM")
    layer = layer or last_feature_map(model, x)
    if layer is None or x.dim() != 3:
        raise PrunescopeError("Grad-CAM needs a convolutional feature map (N, C, H, W); this model has none "
                              "(use the input gradient)")
    got = {}
    h = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _a, o: got.__setitem__("a", o))
    try:
        with torch.enable_grad():
            out = model(x.detach().clone()[None].requires_grad_(True))
            a = got["a"]
            (grad,) = torch.autograd.grad(out[0, int(target)], a)
    finally:
        h.remove()
    w = grad[0].mean((1, 2))  # per channel
    cam = torch.relu((w[:, None, None] * a[0].detach()).sum(0))
    cam = F.interpolate(cam[None, None], size=tuple(x.shape[1:]), mode="bilinear", align_corners=False)[0, 0]
    return cam


def attribution_pair(ws, index: int, method: str = "gradient") -> dict:
    """Maps of the base and the current model for example ``index`` of the test split,
    each for its own prediction: ``method`` "gradient" (input gradient) or "gradcam"
    (Grad-CAM on each model's last feature map)."""
    if method not in ("gradient", "gradcam"):
        raise PrunescopeError(f"method must be 'gradient' or 'gradcam', got {method!r}")
    fn = input_gradient if method == "gradient" else grad_cam
    x, y = ws.evalset.x[index], int(ws.evalset.y[index])
    with torch.inference_mode():
        pb = int(ws.base(x[None]).argmax(1))
        pc = int(ws.model(x[None]).argmax(1))
    return {"index": index, "label": y, "base_pred": pb, "pred": pc, "method": method,
            "base_map": fn(ws.base, x, pb), "map": fn(ws.model, x, pc)}


__all__ = ["MAX_CONFUSION_CLASSES", "Changes", "changes", "divergence", "coupled_group", "layer_order", "receptive_box",
           "unit_activations", "unit_report", "input_gradient", "grad_cam", "last_feature_map", "attribution_pair"]
