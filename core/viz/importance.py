"""Plotly figures for importance scores: histogram with threshold, criteria overlap.

Plain functions: data in, figure out (the app and notebooks draw the same pictures).
Colours and layout come from ``style.py``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from core.viz.style import KEPT, PRUNED, THRESHOLD, layout


def importance_histogram_figure(scores: Sequence[float] | np.ndarray, threshold: float | None,
                                pruned: Sequence[bool] | np.ndarray | None = None, *, bins: int = 40,
                                title: str | None = None, x_title: str = "score",
                                log: bool = False) -> go.Figure:
    """Histogram of one layer's scores: kept and pruned counts stacked, threshold drawn,
    the pruned side shaded.

    Args:
        scores: one score per unit (or per weight).
        threshold: drawn as a vertical line; units strictly below it are shaded (None: no line).
        pruned: which scores are pruned (default: ``scores < threshold``).
        bins: number of equal bins over the scores' range.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if pruned is None:
        pruned = s < threshold if threshold is not None else np.zeros(len(s), dtype=bool)
    p = np.asarray(pruned, dtype=bool).ravel()
    lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    kept_c, _ = np.histogram(s[~p], edges)
    pr_c, _ = np.histogram(s[p], edges)
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    fig = go.Figure()
    fig.add_bar(x=centers, y=kept_c, width=width, name=f"kept ({int((~p).sum())})", marker_color=KEPT,
                hovertemplate="%{x:.4g}: %{y} kept<extra></extra>")
    fig.add_bar(x=centers, y=pr_c, width=width, name=f"pruned ({int(p.sum())})", marker_color=PRUNED,
                hovertemplate="%{x:.4g}: %{y} pruned<extra></extra>")
    fig.update_layout(barmode="stack")
    if threshold is not None and math.isfinite(threshold):
        fig.add_vrect(x0=min(lo, threshold), x1=threshold, fillcolor=PRUNED, opacity=0.12, line_width=0,
                      layer="below")
        fig.add_vline(x=threshold, line_color=THRESHOLD, line_width=2, line_dash="dash",
                      annotation_text=f"threshold {threshold:.4g}", annotation_position="top")
    if log:
        fig.update_yaxes(type="log")
    return layout(fig, title, x_title, "count", fixed=True)


def jaccard_heatmap_figure(jaccard, title: str | None = None) -> go.Figure:
    """Criteria x criteria overlap (Jaccard) of the units each prunes; ``jaccard`` is a
    square DataFrame."""
    names = list(jaccard.index)
    z = np.asarray(jaccard.values, dtype=float)
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmin=0, zmax=1, colorscale="Blues",
                               text=np.round(z, 2), texttemplate="%{text}",
                               hovertemplate="%{y} vs %{x}: %{z:.2f}<extra></extra>",
                               colorbar=dict(title="Jaccard")))
    fig.update_yaxes(autorange="reversed")
    return layout(fig, title, "", "", height=max(260, 40 * len(names) + 80))


def criteria_grid_figure(grid, title: str | None = None) -> go.Figure:
    """Units x criteria: which units each criterion prunes (``grid``: boolean DataFrame,
    rows = units, columns = criteria)."""
    z = np.asarray(grid.values, dtype=float).T  # (criteria, units)
    names = list(grid.columns)
    fig = go.Figure(go.Heatmap(z=z, x=list(range(z.shape[1] if z.ndim == 2 else 0)), y=names, zmin=0, zmax=1,
                               colorscale=[[0, KEPT], [0.5, KEPT], [0.5, PRUNED], [1, PRUNED]],
                               showscale=False, xgap=1, ygap=1, showlegend=False,
                               hovertemplate="unit %{x}, %{y}: %{z}<extra>1 = pruned</extra>"))
    for name, color in (("kept", KEPT), ("pruned", PRUNED)):  # a legend for the two colours
        fig.add_scatter(x=[None], y=[None], mode="markers", name=name,
                        marker=dict(color=color, symbol="square", size=12), hoverinfo="skip")
    fig.update_yaxes(autorange="reversed")
    return layout(fig, title, "unit", "", height=max(220, 28 * len(names) + 90))


def ratio_bars_figure(macs_ratio: float, latency_ratio: float | None, title: str | None = None) -> go.Figure:
    """MACs ratio and measured latency ratio (base / current) side by side."""
    labels = ["MACs", "latency"]
    vals = [macs_ratio, latency_ratio if latency_ratio is not None else float("nan")]
    fig = go.Figure(go.Bar(x=labels, y=vals, marker_color=[KEPT, PRUNED],
                           text=[f"{v:.2f}×" if math.isfinite(v) else "–" for v in vals],
                           textposition="outside", hovertemplate="%{x}: %{y:.2f}× smaller/faster<extra></extra>"))
    fig.add_hline(y=1.0, line_color=THRESHOLD, line_dash="dot")
    return layout(fig, title, "", "base / current", height=260)
