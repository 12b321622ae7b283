"""Which examples an edit changed, for a segmenter (a "dense" class map): the examples whose
class map moved most from the base's (lowest pixel agreement), with both maps, and the label
masks and each model's pixel accuracy on them where the data has masks (task "segmentation")."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.metrics.evaluator import Evaluator
from core.metrics.nest import class_map, pixel_agreement_each
from core.sources.datasets import IGNORE


@dataclass
class DenseChanges:
    """The ``k`` examples of a subset whose class map moved most, lowest agreement first."""

    subset: str
    n: int  # examples in the subset
    index: list[int]  # positions in the evaluation set (EvalSet.x), per example shown
    agreement: list[float]  # share of pixels whose class equals the base's, per example shown
    base_map: torch.Tensor  # (k, H, W) the base's argmax class
    current_map: torch.Tensor  # (k, H, W) the current model's
    masks: torch.Tensor | None  # (k, H, W) the labels (IGNORE: not judged), None without masks
    base_accuracy: list[float] | None  # pixel accuracy on the masks, per example (None without masks)
    current_accuracy: list[float] | None
    changed: int  # examples of the subset with any pixel's class changed
    leaf: str  # the output leaf read as the class map


def _pixel_accuracy(pred: torch.Tensor, y: torch.Tensor) -> list[float]:
    keep = y != IGNORE
    ok = ((pred == y) & keep).flatten(1).sum(1).double()
    return (ok / keep.flatten(1).sum(1).clamp_min(1)).tolist()


@torch.inference_mode()
def dense_changes(model: nn.Module, evaluator: Evaluator, subset: str = "quick", k: int = 6) -> DenseChanges:
    """The ``k`` examples of ``subset`` whose class map agrees least with the base's.

    Raises:
        ValueError: the evaluator's output is not a dense class map (our caller checks)."""
    if evaluator.output != "dense":
        raise ValueError(f"dense_changes needs a 'dense' output, got {evaluator.output!r}")
    out, base = evaluator.outputs(model, subset), evaluator.base_outputs(subset)
    leaf = class_map(out)
    agree = pixel_agreement_each(out[leaf], base[leaf])
    order = torch.argsort(agree, stable=True)[:k]
    pos = evaluator.evalset.quick_index[order] if subset == "quick" else order
    cur, ref = out[leaf][order].argmax(1).cpu(), base[leaf][order].argmax(1).cpu()
    y = evaluator.evalset.subset(subset)[1][order].cpu()
    masks = y if evaluator.task == "segmentation" else None
    return DenseChanges(subset, len(agree), pos.cpu().tolist(), agree[order].tolist(), ref, cur, masks,
                        None if masks is None else _pixel_accuracy(ref, masks),
                        None if masks is None else _pixel_accuracy(cur, masks), int((agree < 1).sum()), leaf)


__all__ = ["DenseChanges", "dense_changes"]
