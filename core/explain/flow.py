"""Which examples an edit changed, for an optical-flow model (RAFT opened by name: an example is
two images stacked, N x 2 x C x H x W, its output the flow ``{"flow": N x 2 x H x W}`` in pixels):
the examples whose flow moved most from the base's, by the mean end-point error between the two
(the length of the difference of the flow vectors, averaged over the pixels), with both flows."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.metrics.evaluator import Evaluator


@dataclass
class FlowChanges:
    """The ``k`` examples of a subset whose flow moved most, largest end-point error first."""

    subset: str
    n: int  # examples in the subset
    index: list[int]  # positions in the evaluation set (EvalSet.x), per example shown
    epe: list[float]  # mean end-point error against the base's flow (pixels), per example shown
    base_speed: list[float]  # mean length of the base's flow vectors (pixels), per example shown: the scale
    base_flow: torch.Tensor  # (k, 2, H, W) the base's flow
    current_flow: torch.Tensor  # (k, 2, H, W) the current model's
    mean_epe: float  # over the whole subset (pixels)
    changed: int  # examples of the subset whose flow differs from the base's anywhere
    leaf: str  # the output leaf read as the flow


def flow_leaf(evaluator: Evaluator) -> str | None:
    """The output leaf that is a flow of the input pairs (per example 2 x H x W, the H x W of the
    pair's images N x 2 x C x H x W); None for any other model. Reads the base's quick-subset
    outputs (the evaluator keeps them)."""
    x = evaluator.evalset.x
    if evaluator.output != "nest" or x.dim() != 5 or x.shape[1] != 2:
        return None
    hw = tuple(x.shape[-2:])
    hits = [k for k, t in evaluator.base_outputs("quick").items()
            if t.dim() == 4 and t.shape[1] == 2 and tuple(t.shape[2:]) == hw]
    return hits[0] if hits else None


@torch.inference_mode()
def flow_changes(model: nn.Module, evaluator: Evaluator, subset: str = "quick", k: int = 6) -> FlowChanges:
    """The ``k`` examples of ``subset`` whose flow moved most from the base's.

    Raises:
        ValueError: the model's output has no flow of its input pairs (our caller checks)."""
    leaf = flow_leaf(evaluator)
    if leaf is None:
        raise ValueError("flow_changes needs a model of image pairs returning a 2 x H x W flow")
    out, base = evaluator.outputs(model, subset)[leaf], evaluator.base_outputs(subset)[leaf]
    epe = (out - base).norm(dim=1).flatten(1).mean(1)
    order = torch.argsort(epe, descending=True, stable=True)[:k]
    pos = evaluator.evalset.quick_index[order] if subset == "quick" else order
    speed = base[order].norm(dim=1).flatten(1).mean(1)
    return FlowChanges(subset, len(epe), pos.cpu().tolist(), epe[order].tolist(), speed.tolist(),
                       base[order].cpu(), out[order].cpu(), float(epe.mean()) if len(epe) else 0.0,
                       int((epe > 0).sum()), leaf)


__all__ = ["FlowChanges", "flow_changes", "flow_leaf"]
