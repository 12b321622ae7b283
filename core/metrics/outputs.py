"""A model's output as named leaves: any nest of tensors (a tensor, tuple, list, dict, a
``ModelOutput``-like object) flattened by torch's pytree into ``{name: tensor}``.

Names are the paths into the nest joined by dots: ``out`` and ``aux`` for a torchvision
segmenter's dict, ``0`` and ``1`` for a tuple, ``1.boxes`` deeper down; a plain tensor is the
one leaf ``output``. Only floating-point tensors with a batch dimension are leaves that can be
judged (an integer leaf, e.g. a detector's labels, is kept but marked not float). The order of
the leaves is the nest's own, so the same model gives the same names every time.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.utils._pytree as pytree

SINGLE = "output"  # the name of a model's one leaf when it returns a plain tensor


def _name(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):  # MappingKey, SequenceKey, GetAttrKey
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts) or SINGLE


def leaves(out) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of every tensor in the nest ``out``, in the nest's order (a plain
    tensor: ``{"output": out}``). Non-tensor leaves (None, ints, strings) are left out."""
    if isinstance(out, torch.Tensor):
        return {SINGLE: out}
    flat, _ = pytree.tree_flatten_with_path(out)
    return {_name(path): t for path, t in flat if isinstance(t, torch.Tensor)}


def is_nest(out) -> bool:
    """True when ``out`` is anything but one plain tensor."""
    return not isinstance(out, torch.Tensor)


def judgeable(named: dict[str, torch.Tensor]) -> list[str]:
    """The names of the leaves that can be judged against the base's: floating point, with a
    batch dimension."""
    return [k for k, t in named.items() if t.is_floating_point() and t.dim() >= 1]


def cat_leaves(parts: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The leaves of several batches joined along the batch dimension (same names in each)."""
    parts = list(parts)
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def take(named: dict[str, torch.Tensor], index) -> dict[str, torch.Tensor]:
    """The leaves of the examples ``index`` (a slice, indices or a mask on the batch dimension)."""
    return {k: t[index] for k, t in named.items()}


__all__ = ["SINGLE", "leaves", "is_nest", "judgeable", "cat_leaves", "take"]
