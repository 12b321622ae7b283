"""Segmentation against label masks: pixel accuracy and mean IoU of a segmenter's class map.

A person's segmentation data gives a label per pixel, ``y`` of shape N x H x W (class indices
0..K-1; 255 marks pixels left out, as in Pascal VOC). The model's class map (``nest.class_map``:
N x C x H x W scores) is read by its argmax, and each shard of examples adds up one confusion
matrix (``torchmetrics``' ``multiclass_confusion_matrix``, rows the label, columns the
prediction, ignored pixels left out), so the figures of a subset are those of its pixels
together, whatever the batching (the VOC / Cityscapes convention, not a mean of per-image
scores):

- **pixel accuracy**: labelled pixels predicted right / labelled pixels;
- **IoU of a class**: TP / (TP + FP + FN); **mean IoU** over the classes that occur (in the
  labels or the predictions) among these pixels; a class that does neither has no IoU (None).
"""
from __future__ import annotations

import torch

from core.sources.datasets import IGNORE  # label of a pixel that is not judged (255)


def confusion(scores: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The confusion matrix (int64, on the CPU) of class map ``scores`` (N x C x H x W) against
    labels ``y`` (N x H x W): ``num_classes`` rows (the label) by ``num_classes + 1`` columns
    (the prediction; the last: a class at or past ``num_classes``, from a model with more classes
    than the data, always wrong). Pixels labelled :data:`IGNORE` are left out."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    pred = scores.argmax(1).clamp(max=num_classes)
    mat = multiclass_confusion_matrix(pred, y.to(pred.device).long(), num_classes + 1, ignore_index=IGNORE,
                                      validate_args=False)
    return mat[:num_classes].cpu().long()


def figures(mat: torch.Tensor) -> dict:
    """``{"pixel_accuracy", "mean_iou", "class_iou": [IoU or None per class], "labelled": pixels}``
    of a :func:`confusion` matrix."""
    m = mat.double()
    k = len(m)
    tp, labelled, predicted = m[:, :k].diag(), m.sum(1), m[:, :k].sum(0)
    union = labelled + predicted - tp
    iou = [float(tp[c] / union[c]) if union[c] > 0 else None for c in range(k)]
    present = [v for v in iou if v is not None]
    total = float(labelled.sum())
    return {"pixel_accuracy": float(tp.sum()) / total if total else 0.0,
            "mean_iou": sum(present) / len(present) if present else 0.0, "class_iou": iou, "labelled": int(total)}


__all__ = ["IGNORE", "confusion", "figures"]
