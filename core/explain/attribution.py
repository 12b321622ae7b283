"""Which input pixels a prediction rests on: input-gradient maps and Grad-CAM, for base
and current side by side."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import PrunescopeError
from core.ground.outputs import NEST_KINDS

if TYPE_CHECKING:
    from core.metrics import Evaluator


def _float_input(x: torch.Tensor, what: str) -> None:
    """Refuse token ids (integer inputs): they have no gradient."""
    if not x.is_floating_point():
        raise PrunescopeError(f"{what} needs float inputs (images, features); this model reads {x.dtype} token ids, "
                              "which have no gradient")



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
    more than one position (a global pool's 1 x 1 output is not one): where Grad-CAM looks.
    None for a model without one (an MLP, a ViT's token sequence)."""
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


def attribution_pair(model: nn.Module, evaluator: Evaluator, index: int, method: str = "gradient") -> dict:
    """Maps of the evaluator's base and of ``model`` (the current model) for example
    ``index`` of the evaluator's test split, each for its own prediction: ``method``
    "gradient" (input gradient) or "gradcam" (Grad-CAM on each model's last feature map).
    Both models are only read (only the input's gradient is computed).

    Raises:
        PrunescopeError: an unknown method; token inputs; a quantised model; no feature
            map for Grad-CAM.
    """
    if method not in ("gradient", "gradcam"):
        raise PrunescopeError(f"method must be 'gradient' or 'gradcam', got {method!r}")
    if getattr(evaluator, "output", "logits") in NEST_KINDS:
        raise PrunescopeError(f"attribution maps explain one predicted class; this model's output is "
                              f"{evaluator.output!r} (judged leaf by leaf against the base, on the Prune page)")
    fn = input_gradient if method == "gradient" else grad_cam
    base, evalset = evaluator.base, evaluator.evalset
    x, y = evalset.x[index], int(evalset.y[index])
    with torch.inference_mode():
        pb = int(base(x[None]).argmax(1))
        pc = int(model(x[None]).argmax(1))
    return {"index": index, "label": y, "base_pred": pb, "pred": pc, "method": method,
            "base_map": fn(base, x, pb), "map": fn(model, x, pc)}


__all__ = ["input_gradient", "last_feature_map", "grad_cam", "attribution_pair"]
