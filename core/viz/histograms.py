"""Binned histograms, computed where the tensors live; only counts leave the device.

Edges are fixed per layer (from the source weights), so bars stay comparable while a
threshold moves: a threshold is a line and a shaded region drawn over cached bins,
and moving it recomputes no histogram.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.ground.layers import prunable_layers


@dataclass(frozen=True)
class Histogram:
    """Counts of values over fixed, equal-width bins."""

    edges: np.ndarray  # (bins + 1,) ascending
    counts: np.ndarray  # (bins,) int64
    total: int  # values counted (== counts.sum())
    label: str = ""  # what was counted, e.g. "features.0.0 weight"

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def width(self) -> float:
        return float(self.edges[1] - self.edges[0])


def histogram(values: torch.Tensor, bins: int = 100, lo: float | None = None, hi: float | None = None,
              label: str = "") -> Histogram:
    """Histogram of ``values`` with ``bins`` equal bins over [lo, hi] (default: data range).

    Values outside the range are clipped into the end bins (never dropped).
    """
    v = values.detach().flatten().float()
    if lo is None or hi is None:
        a, b = torch.aminmax(v) if v.numel() else (torch.tensor(0.0), torch.tensor(1.0))
        lo = float(a) if lo is None else lo
        hi = float(b) if hi is None else hi
    if hi <= lo:
        hi = lo + 1e-8
    a, b = torch.aminmax(v) if v.numel() else (torch.tensor(lo), torch.tensor(hi))
    if float(a) < lo or float(b) > hi:  # clip into the end bins only when something is outside
        v = v.clamp(lo, hi)
    counts = torch.histc(v, bins=bins, min=lo, max=hi).to(torch.int64).cpu().numpy()
    edges = np.linspace(lo, hi, bins + 1)
    return Histogram(edges=edges, counts=counts, total=int(v.numel()), label=label)


def weight_histograms(model: nn.Module, bins: int = 100, edges: dict[str, tuple[float, float]] | None = None,
                      memo: dict | None = None) -> dict[str, Histogram]:
    """One histogram of the weights of every prunable layer.

    Args:
        edges: optional fixed ``(lo, hi)`` per layer; default symmetric ``±max|w|``.
        memo: the apply context's memo of ``model`` (``ctx.memo(model)``): the default
            histograms are then binned once per model (a page redrawn for a threshold
            move reads them back). Histograms are read-only.
    """
    key = ("weight_histograms", bins)
    if memo is not None and edges is None and key in memo:
        return dict(memo[key])
    out = {}
    with torch.no_grad():
        for name, m in prunable_layers(model).items():
            w = m.weight.detach()
            if edges and name in edges:
                lo, hi = edges[name]
            else:
                mn, mx = torch.aminmax(w) if w.numel() else (torch.tensor(-1.0), torch.tensor(1.0))
                a = max(-float(mn), float(mx))
                lo, hi = -a, a
            out[name] = histogram(w, bins, lo, hi, label=f"{name} weight")
    if memo is not None and edges is None:
        memo[key] = out
    return dict(out)
