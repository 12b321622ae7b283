"""Fidelity of a model whose output is several leaves or a dense map, against the base's.

Outputs of kind "nest" (a tuple, a dict, feature maps, several heads) and "dense" (a class map
N x C x H x W, a segmenter's ``out``) are kept as ``{leaf: tensor}`` (``outputs.py``). Each
judged leaf is compared with the base's same leaf, example by example, flattened:

- **cosine** between the two (1: the same direction) and **relative error**
  ``||out - base|| / ||base||``;
- for the class map of a "dense" output, the **pixel agreement**: the share of positions whose
  argmax class equals the base's.

The headline per example is the pixel agreement for "dense", the cosine averaged over the
judged leaves for "nest", and the box recall for "detection" (its figures: ``detection.py``);
``changed`` (the harm automatic plans rank layers by) is one minus it,
so a share of pixels (or of cosine) changed counts like a share of changed predictions.
"""
from __future__ import annotations

import torch

from core.metrics import detection
from core.metrics.fidelity import output_cosine_each, relative_error_each


def class_map(out: dict[str, torch.Tensor]) -> str | None:
    """The leaf that holds the class map of a "dense" output: ``out`` when there is one with
    a class dimension and spatial dimensions, else the first such leaf; None: none has."""
    maps = [k for k, t in out.items() if t.dim() >= 3]
    return "out" if "out" in maps else (maps[0] if maps else None)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(len(t), -1) if t.dim() != 2 else t


def pixel_agreement_each(out: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Per example (``(N,)`` float64): the share of positions whose argmax over dimension 1
    (classes) equals the base's."""
    same = out.argmax(1) == base.argmax(1)
    return same.reshape(len(same), -1).double().mean(1)


def leaf_each(out: dict[str, torch.Tensor], base: dict[str, torch.Tensor], output: str) -> dict[str, dict]:
    """Per judged leaf, per example: ``{leaf: {"cosine": (N,), "relative_error": (N,)[,
    "pixel_agreement": (N,)]}}`` (pixel agreement on the class map of a "dense" output; a
    detector's figures come from ``detection.match_each``)."""
    cmap = class_map(out) if output == "dense" else None
    figs = {}
    for k, t in out.items():
        b = base[k]
        f = {"cosine": output_cosine_each(_flat(t), _flat(b)),
             "relative_error": relative_error_each(_flat(t), _flat(b))}
        if k == cmap:
            f["pixel_agreement"] = pixel_agreement_each(t, b)
        figs[k] = f
    return figs


def headline_each(out: dict[str, torch.Tensor], base: dict[str, torch.Tensor], output: str) -> torch.Tensor:
    """Per example: the pixel agreement of a "dense" output's class map, the box recall of a
    "detection" output, else the cosine with the base's outputs averaged over the judged leaves."""
    if output == "detection":
        return detection.match_each(out, base)["box_recall"]
    cmap = class_map(out) if output == "dense" else None
    if cmap is not None:
        return pixel_agreement_each(out[cmap], base[cmap])
    return cosine_each(out, base)


def cosine_each(out: dict[str, torch.Tensor], base: dict[str, torch.Tensor], output: str = "nest") -> torch.Tensor:
    """Per example: the cosine with the base's same leaf, averaged over the leaves (a "detection"
    output: the F1 of its box recall and precision, 1 = the base's boxes exactly)."""
    if output == "detection":
        return 1 - detection.error_each(detection.match_each(out, base))
    return torch.stack([output_cosine_each(_flat(t), _flat(base[k])) for k, t in out.items()]).mean(0)


def error_each(out: dict[str, torch.Tensor], base: dict[str, torch.Tensor], output: str = "nest") -> torch.Tensor:
    """Per example: the relative error against the base's same leaf, averaged over the leaves (a
    "detection" output: 1 - F1 of its box recall and precision)."""
    if output == "detection":
        return detection.error_each(detection.match_each(out, base))
    return torch.stack([relative_error_each(_flat(t), _flat(base[k])) for k, t in out.items()]).mean(0)


def headline_name(output: str, leaves: list[str] | None) -> str:
    """What the headline of a "dense" / "nest" output measures, for labels and columns."""
    if output == "dense":
        return "pixel agreement with the base"
    if output == "detection":
        return "box recall against the base"
    names = leaves or []
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"output cosine with the base (mean over {len(names)} leaves{': ' + shown if names else ''})"


__all__ = ["class_map", "pixel_agreement_each", "leaf_each", "headline_each", "cosine_each", "error_each",
           "headline_name"]
