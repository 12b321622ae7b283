"""Training losses for a model whose output is a nest of tensors (``core.ground.outputs.leaves``:
a segmenter's ``out`` and ``aux``, several heads, feature maps).

Distillation is over the judged leaves (default: every judgeable one), each against the base's
same leaf, and the terms are averaged:

- output kind ``"dense"`` (class maps, N x C x H x W): KL divergence of the per-pixel class
  distributions (softmax over C at a temperature, scaled by T squared), for every judged leaf with a
  class dimension; a leaf of one dimension falls back to the feature loss;
- any other nest (``"nest"``: features, several heads): the squared error relative to the base
  leaf's mean square plus the mean cosine distance, per example (:func:`embedding_loss` on the
  flattened leaf: a softmax over features would mean nothing).

The label loss takes the headline leaf (``out``, else the first judgeable): the pixel cross-entropy
ignoring label 255 for a class map against N x H x W masks (task "segmentation"), else the
cross-entropy of class scores.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.ground.outputs import judgeable, leaves

IGNORE_INDEX = 255  # the label of pixels a segmentation mask leaves out


def judged_leaves(out, judged=None) -> dict[str, torch.Tensor]:
    """The leaves of ``out`` (a tensor, a nest, or a dict of leaves) that are judged: ``judged`` (names)
    when given, else every judgeable one."""
    named = leaves(out)
    names = list(judged) if judged else judgeable(named)
    return {k: named[k] for k in names if k in named}


def headline_leaf(out) -> torch.Tensor:
    """The leaf labels and predicted classes are read from: ``out``, else the first judgeable leaf."""
    named = leaves(out)
    return named["out"] if "out" in named else named[judgeable(named)[0]]


def _kl_map(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(base || student) of the class distributions over dim 1, averaged over examples and pixels."""
    tt = float(temperature)
    ls, lt = F.log_softmax(s.float() / tt, 1), F.log_softmax(t.float() / tt, 1)
    return (lt.exp() * (lt - ls)).sum(1).mean() * tt * tt


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence of the softened distributions, scaled by T² (Hinton et al., 2015)."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), log_target=True,
                    reduction="batchmean") * t * t


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Distillation of an embedding (features, not class scores): the mean cosine distance to
    the base's embedding plus the squared error relative to the base's mean square (a
    softmax over features would mean nothing)."""
    t = teacher.float()
    return ((1 - F.cosine_similarity(student, t, dim=1)).mean()
            + F.mse_loss(student, t) / t.pow(2).mean().clamp_min(1e-12))


def _feature(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return embedding_loss(s.float().flatten(1), t.float().flatten(1))


def nest_distill_loss(student, teacher, temperature: float, judged=None, dense: bool = False) -> torch.Tensor:
    """Distillation of ``student``'s judged leaves from ``teacher``'s (tensors, nests or dicts of
    leaves): per-pixel KL for class maps when ``dense``, else the relative feature loss; the mean
    over the leaves."""
    s, t = judged_leaves(student, judged), leaves(teacher)
    terms = [_kl_map(v, t[k], temperature) if dense and v.dim() >= 2 else _feature(v, t[k]) for k, v in s.items()]
    return torch.stack(terms).mean()


def label_loss(out, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the headline leaf against labels ``y``: per pixel (ignoring 255) for a class
    map (N, C, H, W) against masks (N, H, W), else per example for class scores (N, K)."""
    h = headline_leaf(out).float()
    if h.dim() > 2:
        return F.cross_entropy(h, y.long(), ignore_index=IGNORE_INDEX)
    return F.cross_entropy(h, y)


def nest_loss(kind: str, alpha: float, temperature: float, out, y, t_out, labelled: bool, judged=None,
              dense: bool = False) -> torch.Tensor:
    """A ``Finetune`` step's loss ``kind`` ("labels", "predictions", "distill", "both" weighted by
    ``alpha``) on a nest of outputs: :func:`label_loss` and :func:`nest_distill_loss`."""
    if kind == "labels":
        return label_loss(out, y)
    if kind == "predictions":  # the base's predicted classes (per pixel for a class map)
        return label_loss(out, headline_leaf(t_out).argmax(1))
    kd = nest_distill_loss(out, t_out, temperature, judged, dense)
    return kd if kind == "distill" or not labelled else alpha * kd + (1 - alpha) * label_loss(out, y)


def float_out(out):
    """A tensor output in float32; a nest as it is (its losses take each leaf in float32)."""
    return out.float() if isinstance(out, torch.Tensor) else out


def nest_figures(out, t_out, y, labelled: bool, judged=None, dense: bool = False) -> dict:
    """Loss and headline figure on the calibration batch, with what the figure measures: the label
    loss and the headline leaf's accuracy (per pixel, 255 left out) when there is no base output to
    compare with, else :func:`nest_figure` (loss: labels when labelled, else the distillation at T=1)."""
    loss = float(label_loss(out, y)) if labelled else float(nest_distill_loss(out, t_out, 1.0, judged, dense))
    if t_out is None:
        h = headline_leaf(out).argmax(1)
        keep = y != IGNORE_INDEX if y.dim() > 1 else torch.ones_like(y, dtype=torch.bool)
        return {"loss": loss, "accuracy": float((h == y)[keep].float().mean()), "measure": "accuracy"}
    what, value = nest_figure(out, t_out, judged, dense)
    return {"loss": loss, "accuracy": value, "measure": what}


def nest_figure(out, t_out, judged=None, dense: bool = False) -> tuple[str, float]:
    """(what it measures, value) of ``out`` against the base's ``t_out``: the pixel agreement of the
    headline class map's argmax when ``dense``, else the mean output cosine over the judged leaves."""
    if dense:
        return "pixel agreement with the base", float((headline_leaf(out).argmax(1)
                                                       == headline_leaf(t_out).argmax(1)).float().mean())
    s, t = judged_leaves(out, judged), leaves(t_out)
    cos = [F.cosine_similarity(v.float().flatten(1), t[k].float().flatten(1), dim=1).mean() for k, v in s.items()]
    return f"output cosine with the base (mean over {len(s)} leaves: {', '.join(s)})", float(torch.stack(cos).mean())


def calibration_figures(m: nn.Module, xc: torch.Tensor, yc: torch.Tensor, teacher, labelled: bool,
                         embedding: bool, nest: tuple | None = None) -> dict:
    """Loss and headline figure of ``m`` on the calibration batch ("accuracy"; for an
    embedding the mean output cosine with the base, for a nest ``losses.nest_figure``, as
    ``info["measure"]`` says)."""
    m.eval()
    with torch.no_grad():
        out = float_out(m(xc))
        if nest is not None:
            return nest_figures(out, float_out(teacher(xc)) if teacher is not None else None, yc, labelled, *nest)
        if embedding:
            t_out = teacher(xc).float()
            return {"loss": float(embedding_loss(out, t_out)),
                    "accuracy": float(F.cosine_similarity(out, t_out, dim=1).mean())}
        target = yc if labelled else teacher(xc).argmax(1)
    return {"loss": float(F.cross_entropy(out, target)),
            "accuracy": float((out.argmax(1) == target).float().mean())}


__all__ = ["IGNORE_INDEX", "distill_loss", "embedding_loss", "judged_leaves", "headline_leaf", "nest_distill_loss",
           "label_loss", "nest_loss", "float_out", "nest_figures", "nest_figure",
           "calibration_figures"]
