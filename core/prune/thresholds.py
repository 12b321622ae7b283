"""The one "threshold between the k-th and (k+1)-th smallest score" helper.

Scores are float32; a Python float threshold is compared after rounding to float32, so
thresholds are chosen among float32 values: strictly above the k-th value and at most
the (k+1)-th, so exactly k scores (ties aside) are strictly below.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def threshold_above(vk: float, nxt: float | None) -> float:
    """A float32-representable threshold ``t`` with ``vk < t`` (and ``t <= nxt`` when given)."""
    up = float(np.nextafter(np.float32(vk), np.float32(np.inf)))
    if nxt is None or nxt <= vk:
        return up
    mid = float(np.float32((vk + nxt) / 2))
    return mid if vk < mid <= nxt else up


def threshold_for_k(sorted_vals: torch.Tensor, k: int) -> float:
    """The threshold below which exactly the ``k`` smallest of ``sorted_vals`` (ascending) lie.

    Returns ``-inf`` for ``k <= 0`` and ``+inf`` for ``k >= len``.
    """
    n = len(sorted_vals)
    if k <= 0:
        return -math.inf
    if k >= n:
        return math.inf
    return threshold_above(float(sorted_vals[k - 1]), float(sorted_vals[k]))


__all__ = ["threshold_above", "threshold_for_k"]
