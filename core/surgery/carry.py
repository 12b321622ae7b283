"""What blocks pass along besides their tensor.

A block may return ``(tensor, *tail)`` that its model's forward hands the next block as the
arguments after the tensor (torchvision's MViT runs ``x, thw = block(x, thw)``). Such a
container is *carried*: ``choice.py`` may pick it as the default, the traces record each
block's tail, and a bridge stitched into it returns its tensor with the tail the next block
expects (``stitch.py``; ``Bridge.carry``).
"""
from __future__ import annotations

import torch


def first_tensor(o):
    """A block's output tensor: the first item of a ``(tensor, ...)`` tuple (transformers layers of
    some versions, MViT's blocks), else ``o`` itself."""
    return o[0] if isinstance(o, (tuple, list)) and o and isinstance(o[0], torch.Tensor) else o


def tail(o) -> tuple | None:
    """What a block returned after its tensor (``o[1:]`` of a ``(tensor, *tail)`` tuple); None for a
    tensor or any other output."""
    if isinstance(o, (tuple, list)) and o and isinstance(o[0], torch.Tensor):
        return tuple(o[1:])
    return None


def same(a, b) -> bool:
    """Whether two tails are equal item for item (tensors by value, the rest by ``==``)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
            and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):  # values with no plain truth: not the same
        return False


def carried(calls: list[tuple[tuple, object]]) -> bool:
    """Whether blocks called in order (``(args, output)`` each) form a carried chain: each returns
    ``(tensor, *tail)`` with a tail not empty, and the next is given that tensor and that tail."""
    tails = [tail(o) for _, o in calls]
    if not calls or not all(tails):
        return False
    for (_, o), (args, _) in zip(calls, calls[1:]):
        if not args or args[0] is not o[0] or not same(tuple(args[1:]), tuple(o[1:])):
            return False
    return True


__all__ = ["first_tensor", "tail", "same", "carried"]
