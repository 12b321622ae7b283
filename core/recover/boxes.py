"""What fine-tuning a detector learns from, and how it is measured (``training.py`` runs the loop).

A detector (output kind "detection": torchvision's R-CNNs, RetinaNet, FCOS, SSD) in train mode
takes box targets with the images and returns its own losses (classification, box regression,
objectness, ...); their sum is the loss. The targets are:

- ``loss="labels"``: the labelled boxes of the training split (a COCO-style set: ``y`` is N x M x 5,
  rows ``x1, y1, x2, y2, label``, padding labelled -1);
- ``loss="predictions"``: the base detector's own boxes scored at or above the model's score
  threshold (for a detector without labels, or to pull the pruned one back to what the base found).

Distillation of soft outputs has no meaning for a variable set of boxes and is refused with the
reason. Normalisation layers keep their statistics (BatchNorm in eval mode, as torchvision trains
detectors), since a few images a batch would ruin them. The figure measured before and after is
the box recall of the calibration batch's targets (labelled or the base's) at the threshold.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.errors import ModelError
from core.ground.outputs import SCORE_THRESHOLD, padded_detections
from core.metrics.detection import match_each

NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def label_targets(y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Targets torchvision's detectors train on, from labelled boxes ``y`` (N x M x 5, padding label -1)."""
    out = []
    for rows in y:
        keep = rows[:, 4] >= 0
        out.append({"boxes": rows[keep, :4].float(), "labels": rows[keep, 4].long()})
    return out


def base_targets(base: nn.Module, x: torch.Tensor, score: float) -> list[dict[str, torch.Tensor]]:
    """The base detector's boxes scored at least ``score`` on ``x``, as training targets."""
    with torch.no_grad():
        found = base(x)
    return [{"boxes": d["boxes"][d["scores"] >= score].detach(), "labels": d["labels"][d["scores"] >= score].detach()}
            for d in found]


def _norms_eval(m: nn.Module) -> None:
    for mod in m.modules():
        if isinstance(mod, NORMS):
            mod.eval()


def detection_objective(m: nn.Module, step, spec, labelled: bool, teacher: nn.Module | None,
                        xc: torch.Tensor, yc: torch.Tensor
                        ) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Callable[[], dict], str]:
    """(loss of one batch, the before / after figures on the calibration batch, what they measure)
    for fine-tuning detector ``m`` as ``step`` says (``teacher``: the base, for ``loss="predictions"``).

    Raises:
        ModelError: loss "distill" or "both" (no soft targets for a set of boxes), or "labels"
            for a detector without labelled boxes.
    """
    score = float(spec.extra.get("score_threshold", SCORE_THRESHOLD))
    if step.loss in ("distill", "both"):
        raise ModelError(f"finetune: {spec.name!r} is a detector: it learns from boxes, loss='labels' (the labelled "
                         f"boxes{'' if labelled else ', which this model has not'}) or 'predictions' (the base's "
                         f"boxes scored at least {score:g}); distilling soft outputs has no meaning for a set "
                         "of boxes")
    if step.loss == "labels" and not labelled:
        raise ModelError(f"finetune: {spec.name!r} has no labelled boxes; use loss='predictions' (the base's boxes)")
    if step.loss == "predictions" and teacher is None:
        raise ModelError("finetune: loss='predictions' needs the base model")  # our caller passes it

    def targets(x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return label_targets(y) if step.loss == "labels" else base_targets(teacher, x, score)

    fixed = targets(xc, yc)
    what = "labelled boxes" if step.loss == "labels" else "base's boxes"

    def batch_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = targets(x, y)
        m.train()  # a detector returns its losses only in train mode (Heal's mode "eval" too): norms stay eval
        _norms_eval(m)
        return sum(m(x, t).values())

    def measure() -> dict:
        was = m.training
        with torch.no_grad():
            m.train()
            _norms_eval(m)
            loss = float(sum(m(xc, fixed).values()))
            m.eval()
            got = padded_detections(m(xc), score=score)
        m.train(was)
        want = padded_detections([{**t, "scores": torch.ones(len(t["labels"]))} for t in fixed], score=score)
        recall = match_each(got, want)["box_recall"]
        return {"loss": loss, "accuracy": float(recall.mean()) if len(recall) else 1.0}

    return batch_loss, measure, f"box recall of the {what} at score {score:g}"


__all__ = ["detection_objective", "label_targets", "base_targets"]
