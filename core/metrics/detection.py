"""Fidelity of a detector against the base detector's boxes (output kind "detection").

A detector returns, per image, a variable number of boxes with a label and a score (torchvision's
detectors: a list of ``{"boxes": (k, 4), "labels": (k,), "scores": (k,)}``). They are kept as three
padded leaves (``core.ground.outputs.padded_detections``): ``boxes`` N x M x 4, ``scores`` N x M
and ``labels`` N x M, the M highest-scoring boxes of each image (``MAX_BOXES``), a box scored
below the model's score threshold or padding marked by the score -1, so batches join like any
dict of leaves.

Against the base's boxes of the same image, at the stated score threshold:

- **box recall**: the share of the base's boxes found again: a box of the same label with IoU >=
  :data:`IOU` (torchvision's ``box_iou``), each box matched at most once, the base's highest
  scores first; an image where the base has no box scores 1;
- **box precision**: the share of the current boxes that match a base box (1 when there is none);
- **1 - F1** of the two, the "output error" of a detector.

The headline per image is its box recall; ``changed`` (the harm automatic plans rank layers by)
is one minus it, as for the other outputs judged against the base.
"""
from __future__ import annotations

import torch

from core.ground.outputs import SCORE_THRESHOLD

IOU = 0.5  # a base box is found again by a box of its label overlapping it this much


def _matched(boxes, labels, base_boxes, base_labels) -> int:
    """Base boxes (in score order) matched by a box of the same label with IoU >= :data:`IOU`,
    each current box used once."""
    from torchvision.ops import box_iou

    if not len(boxes) or not len(base_boxes):
        return 0
    iou = box_iou(base_boxes, boxes)
    iou[base_labels[:, None] != labels[None, :]] = 0.0
    used = torch.zeros(len(boxes), dtype=torch.bool)
    found = 0
    for row in iou:  # the base's boxes, highest score first
        row = row.masked_fill(used, 0.0)
        j = int(row.argmax())
        if row[j] >= IOU:
            used[j] = True
            found += 1
    return found


def match_each(out: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per image (``(N,)`` float64): ``box_recall``, ``box_precision``, ``boxes`` (current, at the
    threshold) and ``base_boxes``; a box counts when scored at or above the outputs' threshold."""
    n = len(out["scores"])
    thr = float(base["score_threshold"][0]) if n else 0.0
    recall, precision = torch.ones(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    count, base_count = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        mine, theirs = out["scores"][i] >= thr, base["scores"][i] >= thr
        k, kb = int(mine.sum()), int(theirs.sum())
        found = _matched(out["boxes"][i][mine], out["labels"][i][mine], base["boxes"][i][theirs],
                         base["labels"][i][theirs])
        recall[i] = found / kb if kb else 1.0
        precision[i] = found / k if k else 1.0
        count[i], base_count[i] = k, kb
    return {"box_recall": recall, "box_precision": precision, "boxes": count, "base_boxes": base_count}


def error_each(m: dict[str, torch.Tensor]) -> torch.Tensor:
    """1 - F1 of box recall and precision per image (0: the base's boxes exactly, no others)."""
    r, p = m["box_recall"], m["box_precision"]
    return 1 - torch.where(r + p > 0, 2 * r * p / (r + p).clamp_min(1e-12), torch.zeros_like(r))


def average_precision(out: dict[str, torch.Tensor], boxes: torch.Tensor) -> dict[str, float]:
    """mAP@0.5:0.95 and mAP@0.5 (COCO's, by torchmetrics' ``MeanAveragePrecision`` on pycocotools) of
    the padded outputs ``out`` (every box kept, whatever its score) against labelled ``boxes``
    (N x M x 5: x1, y1, x2, y2, label; label -1 is padding), all images together."""
    from torchmetrics.detection import MeanAveragePrecision

    preds, targets = [], []
    for i in range(len(boxes)):
        keep, real = out["scores"][i] >= 0, boxes[i, :, 4] >= 0
        preds.append({"boxes": out["boxes"][i][keep], "scores": out["scores"][i][keep],
                      "labels": out["labels"][i][keep].long()})
        targets.append({"boxes": boxes[i, real, :4].float(), "labels": boxes[i, real, 4].long()})
    metric = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")  # COCO: the top 100 boxes of an image
    metric.warn_on_many_detections = False
    metric.update(preds, targets)
    got = metric.compute()
    fix = lambda v: max(0.0, float(v))  # torchmetrics says -1 where no box is labelled or predicted
    return {"map": fix(got["map"]), "map_50": fix(got["map_50"])}


def headline_name(score: float = SCORE_THRESHOLD) -> str:
    return f"box recall against the base (IoU >= {IOU}, same label, score >= {score:g})"


__all__ = ["IOU", "SCORE_THRESHOLD", "match_each", "error_each", "average_precision", "headline_name"]
