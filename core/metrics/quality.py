"""Quality of a model's outputs as sums over examples (:class:`QualitySums`, :func:`quality_sums`):
the one computation of accuracy, loss, per-class accuracy, agreement and cosine, and of the
figures of other outputs (embeddings, dense maps, nests, detections), so the figures of several
shards of a subset add up to those of the whole subset."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.ground.outputs import NEST_KINDS, batch_size, cat_outputs
from core.metrics.detection import average_precision, match_each
from core.metrics.detection import error_each as detection_error_each
from core.metrics.fidelity import neighbour_recall, output_cosine_each, recall_k, relative_error_each
from core.metrics.nest import class_map, cosine_each, error_each, headline_each, leaf_each
from core.metrics.segmentation import confusion
from core.metrics.segmentation import figures as segmentation_figures
from core.sources.models import LABELLED_TASKS


@dataclass
class QualitySums:
    """Quality of a model's outputs as sums over examples, so the figures of several
    shards of a subset add up (``a + b``) to those of the whole subset. Neighbour recall is
    not a sum (an example's neighbours are among the whole subset): an embedding's sums keep
    its outputs and the base's, joined in shard order, and the recall is computed on the whole."""

    n: int
    correct: int
    loss_sum: float  # cross-entropy summed over examples
    agree: int  # predictions equal to the base's
    cos_sum: float  # cosine with the base's outputs, summed
    class_ok: list[int]  # correct predictions per class (index = class)
    class_n: list[int]  # examples per class
    err_sum: float = 0.0  # relative output error ||out - base|| / ||base||, summed
    output: str = "logits"  # "logits" | "embedding"
    emb: torch.Tensor | None = None  # embedding: this model's outputs (CPU, fp32), for neighbour recall
    base_emb: torch.Tensor | None = None  # embedding: the base's outputs on the same examples
    leaf_sums: dict[str, dict[str, float]] | None = None  # "dense" / "nest": per leaf, each figure summed
    confmat: torch.Tensor | None = None  # task "segmentation": label x predicted pixels (segmentation.py)
    # task "detection": (the padded outputs, the labelled boxes N x M x 5), joined in shard order: mAP is of the
    # whole subset's boxes together (detection.py), not a sum
    det: tuple[dict, torch.Tensor] | None = None

    def __add__(self, other: QualitySums) -> QualitySums:
        cat = (lambda a, b: None if a is None or b is None else torch.cat([a, b]))
        return QualitySums(self.n + other.n, self.correct + other.correct, self.loss_sum + other.loss_sum,
                           self.agree + other.agree, self.cos_sum + other.cos_sum,
                           [a + b for a, b in zip(self.class_ok, other.class_ok)],
                           [a + b for a, b in zip(self.class_n, other.class_n)], self.err_sum + other.err_sum,
                           self.output, cat(self.emb, other.emb), cat(self.base_emb, other.base_emb),
                           _add_leaf_sums(self.leaf_sums, other.leaf_sums),
                           None if self.confmat is None else self.confmat + other.confmat,
                           _add_det(self.det, other.det))

    def figures(self) -> dict:
        """accuracy, loss, per-class accuracy, agreement, output cosine, output error; for an
        embedding accuracy and agreement are the neighbour recall@k and loss the output error."""
        n = max(1, self.n)
        fig = {"accuracy": self.correct / n, "loss": self.loss_sum / n,
               "per_class_accuracy": [ok / max(1, c) for ok, c in zip(self.class_ok, self.class_n)],
               "agreement": self.agree / n, "output_cosine": self.cos_sum / n, "output": self.output,
               "neighbour_recall": None, "recall_k": None, "output_error": self.err_sum / n, "leaf_figures": None,
               "pixel_accuracy": None, "class_iou": None, "map50": None}
        if self.leaf_sums is not None:  # headline: pixel agreement (dense) or mean cosine; loss: output error
            fig.update(loss=self.err_sum / n, per_class_accuracy=[],
                       leaf_figures={k: {f: v / n for f, v in fs.items()} for k, fs in self.leaf_sums.items()})
        if self.confmat is not None:  # label masks: the headline is the mean IoU
            seg = segmentation_figures(self.confmat)
            fig.update(accuracy=seg["mean_iou"], pixel_accuracy=seg["pixel_accuracy"], class_iou=seg["class_iou"])
        if self.det is not None:  # labelled boxes: the headline is COCO's mAP
            ap = average_precision(*self.det)
            fig.update(accuracy=ap["map"], map50=ap["map_50"])
        if self.output == "embedding" and self.emb is not None:
            k = recall_k(len(self.emb))
            r = neighbour_recall(self.emb, self.base_emb, k)
            fig.update(accuracy=r, agreement=r, loss=self.err_sum / n, neighbour_recall=r, recall_k=k)
        return fig


def _add_det(a: tuple | None, b: tuple | None) -> tuple | None:
    """Two shards' (padded outputs, labelled boxes) joined; the boxes padded to the longer's M."""
    if a is None or b is None:
        return None
    m = max(a[1].shape[1], b[1].shape[1])
    pad = lambda y: torch.cat([y, torch.full((len(y), m - y.shape[1], 5), -1.0)], 1) if y.shape[1] < m else y
    return cat_outputs([a[0], b[0]]), torch.cat([pad(a[1]), pad(b[1])])


def _add_leaf_sums(a: dict | None, b: dict | None) -> dict | None:
    return None if a is None else {k: {f: v + b[k][f] for f, v in fs.items()} for k, fs in a.items()}


def quality_sums(out: torch.Tensor, base_out: torch.Tensor, y: torch.Tensor, task: str,
                 num_classes: int, output: str = "logits") -> QualitySums:
    """The quality sums of outputs ``out`` against the labels ``y`` (``task``
    "classification", or "language-model": ``y`` is the true next token) or the base's
    predictions (``"fidelity"``), and against the base's outputs ``base_out``: the one place
    these figures are computed. ``output`` "embedding": the outputs are features, judged by
    cosine and neighbour recall against the base's (their argmax figures are left unused);
    "dense" / "nest": dicts of leaves, judged leaf by leaf against the base's (``nest.py``)."""
    if output in NEST_KINDS:
        return _nest_sums(out, base_out, output, y if task in ("segmentation", "detection") else None, num_classes)
    pred, base_pred = out.argmax(1), base_out.argmax(1)
    target = y if task in LABELLED_TASKS else base_pred
    correct = pred == target
    return QualitySums(
        n=len(out), correct=int(correct.sum()),
        loss_sum=float(F.cross_entropy(out.float(), target, reduction="sum")),
        agree=int((pred == base_pred).sum()),
        cos_sum=float(output_cosine_each(out, base_out).sum()),
        class_ok=torch.bincount(target[correct], minlength=num_classes).tolist(),
        class_n=torch.bincount(target, minlength=num_classes).tolist(),
        err_sum=float(relative_error_each(out, base_out).sum()), output=output,
        emb=out.detach().float().cpu() if output == "embedding" else None,
        base_emb=base_out.detach().float().cpu() if output == "embedding" else None)


def _nest_sums(out: dict, base_out: dict, output: str, masks: torch.Tensor | None = None,
               num_classes: int = 0) -> QualitySums:
    """Leaf-by-leaf sums against the base; with label ``masks`` (task "segmentation") also the
    confusion matrix of the class map against them; with labelled boxes (task "detection") the
    outputs and boxes mAP is read from."""
    if output == "detection":  # the boxes matched once: recall (the headline), precision, 1 - F1
        m = match_each(out, base_out)
        err = float(detection_error_each(m).sum())
        head, cos, per_leaf = float(m["box_recall"].sum()), batch_size(out) - err, {
            "detections": {f: float(v.sum()) for f, v in m.items()}}
        return QualitySums(n=batch_size(out), correct=head, loss_sum=0.0, agree=head, cos_sum=cos, class_ok=[],
                           class_n=[], err_sum=err, output=output, leaf_sums=per_leaf,
                           det=None if masks is None else (out, masks.detach().float().cpu()))
    head = float(headline_each(out, base_out, output).sum())
    n = batch_size(out)
    per_leaf = {k: {f: float(v.sum()) for f, v in fs.items()} for k, fs in leaf_each(out, base_out, output).items()}
    return QualitySums(n=n, correct=head, loss_sum=0.0, agree=head,
                       cos_sum=float(cosine_each(out, base_out, output).sum()), class_ok=[], class_n=[],
                       err_sum=float(error_each(out, base_out, output).sum()), output=output,
                       leaf_sums=per_leaf,
                       confmat=None if masks is None else confusion(out[class_map(out)], masks, num_classes))


__all__ = ["QualitySums", "quality_sums"]
