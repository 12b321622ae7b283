"""Colours and layout shared by every figure: one meaning per colour everywhere.

BASE vs CURRENT for model comparisons, KEPT vs PRUNED for weights and units.
"""
from __future__ import annotations

import plotly.graph_objects as go

BASE = "#9aa5b1"  # the unpruned base model
CURRENT = "#2f6fde"  # the current plan's model
KEPT = "#2f6fde"  # weights / units that stay
PRUNED = "#e4572e"  # weights / units removed
THRESHOLD = "#b8321a"  # threshold lines
SELECTED = "#f2a541"  # the selected layer / point
FONT = dict(family="Inter, system-ui, sans-serif", size=12)


def layout(fig: go.Figure, title: str | None, x: str, y: str, height: int = 320) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0, xanchor="left", font=dict(size=14)) if title else None,
                      height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10), font=FONT,
                      xaxis_title=x, yaxis_title=y, bargap=0.05, legend=dict(orientation="h", y=1.02, x=1,
                      xanchor="right", yanchor="bottom"), template="plotly_white")
    return fig


__all__ = ["BASE", "CURRENT", "KEPT", "PRUNED", "THRESHOLD", "SELECTED", "FONT", "layout"]
