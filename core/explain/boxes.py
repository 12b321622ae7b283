"""Which images an edit changed, for a detector (output "detection"): the images whose boxes
moved most from the base's (lowest box recall, then lowest precision), with both models' boxes at
the score threshold, and the labelled boxes where the data has them (task "detection")."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.metrics.detection import match_each
from core.metrics.evaluator import Evaluator


@dataclass
class BoxChanges:
    """The ``k`` images of a subset whose boxes moved most from the base's, worst first."""

    subset: str
    n: int  # images in the subset
    index: list[int]  # positions in the evaluation set (EvalSet.x), per image shown
    recall: list[float]  # share of the base's boxes found again, per image shown
    precision: list[float]  # share of the current boxes that match a base box
    base_boxes: list[torch.Tensor]  # per image shown: (k, 5) x1, y1, x2, y2, label at the threshold
    current_boxes: list[torch.Tensor]
    labelled: list[torch.Tensor] | None  # per image shown: the labelled boxes (None without labels)
    changed: int  # images of the subset whose boxes differ from the base's (recall or precision below 1)
    score_threshold: float


def _kept(out: dict, i: int, thr: float) -> torch.Tensor:
    keep = out["scores"][i] >= thr
    return torch.cat([out["boxes"][i][keep], out["labels"][i][keep, None]], 1)


@torch.inference_mode()
def box_changes(model: nn.Module, evaluator: Evaluator, subset: str = "quick", k: int = 6) -> BoxChanges:
    """The ``k`` images of ``subset`` whose boxes agree least with the base's.

    Raises:
        ValueError: the evaluator's output is not a detector's (our caller checks)."""
    if evaluator.output != "detection":
        raise ValueError(f"box_changes needs a 'detection' output, got {evaluator.output!r}")
    out, base = evaluator.outputs(model, subset), evaluator.base_outputs(subset)
    m = match_each(out, base)
    worst = sorted(range(len(m["box_recall"])),
                   key=lambda i: (float(m["box_recall"][i]), float(m["box_precision"][i])))[:k]
    thr = float(base["score_threshold"][0]) if len(worst) else 0.0
    pos = evaluator.evalset.quick_index[worst] if subset == "quick" else torch.tensor(worst, dtype=torch.long)
    y = evaluator.evalset.subset(subset)[1]
    labelled = [y[i][y[i, :, 4] >= 0].cpu() for i in worst] if evaluator.task == "detection" else None
    changed = int(((m["box_recall"] < 1) | (m["box_precision"] < 1)).sum())
    return BoxChanges(subset, len(m["box_recall"]), pos.cpu().tolist(), [float(m["box_recall"][i]) for i in worst],
                      [float(m["box_precision"][i]) for i in worst], [_kept(base, i, thr) for i in worst],
                      [_kept(out, i, thr) for i in worst], labelled, changed, thr)


__all__ = ["BoxChanges", "box_changes"]
