"""Figures of what an edit changed: the confusion difference and the CKA along depth."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from .style import CURRENT, PRUNED, layout


def confusion_delta_figure(delta: Sequence[Sequence[int]], classes: Sequence[str],
                           title: str | None = "Confusion: current minus base") -> go.Figure:
    """Counts moved by the edit: [true class][predicted class], current minus base. Blue on
    the diagonal and red off it are examples the edit broke; the opposite, fixed ones."""
    k = len(classes)
    z = [list(r) for r in delta]
    m = max((abs(v) for r in z for v in r), default=1) or 1
    fig = go.Figure(go.Heatmap(z=z, x=list(classes), y=list(classes), zmin=-m, zmax=m,
                               colorscale=[[0, CURRENT], [0.5, "#ffffff"], [1, PRUNED]],
                               text=[[str(v) if v else "" for v in r] for r in z], texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{z:+d}<extra></extra>",
                               colorbar=dict(title="Δ count", thickness=12)))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return layout(fig, title, "predicted class", "true class", height=max(300, 26 * k + 120))


def divergence_figure(rows: Sequence[dict], title: str | None = "Where the networks diverge (CKA per layer)"
                      ) -> go.Figure:
    """Linear CKA per layer along depth (1: the same representation up to rotation and
    scale); a layer cut out of the current model is a gap."""
    fig = go.Figure(go.Scatter(x=[r["layer"] for r in rows], y=[r["cka"] for r in rows], mode="lines+markers",
                               line=dict(color=CURRENT), connectgaps=False,
                               hovertemplate="%{x}: CKA %{y:.3f}<extra></extra>"))
    fig.update_yaxes(range=[0, 1.05])
    fig.update_xaxes(type="category")
    return layout(fig, title, "layer (in the base's order)", "linear CKA", height=300)


__all__ = ["confusion_delta_figure", "divergence_figure"]
