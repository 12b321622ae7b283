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


MODEBAR_BAND = 32  # px at the top kept free for plotly's toolbar (it sits at the top right)
TITLE_BAND = 30  # px for a title line, at the top left beside the toolbar
LEGEND_BAND = 26  # px for a horizontal legend, above the plot on the left
# Toolbar buttons no figure here needs (selection is by clicking points): a shorter toolbar
# leaves more of the top line to the title.
MODEBAR_REMOVE = ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d"]


def _shows_legend(fig: go.Figure) -> bool:
    if fig.layout.showlegend is not None:
        return bool(fig.layout.showlegend)
    shown = [t for t in fig.data if t.showlegend is not False]
    return len(shown) > 1 or any(t.showlegend for t in fig.data)


def layout(fig: go.Figure, title: str | None, x: str, y: str, height: int = 320) -> go.Figure:
    """The house layout. Nothing overlaps the toolbar: the title sits on the top line at the
    left, the legend on its own line above the plot at the left, and the top margin holds
    both (at least the toolbar's height)."""
    legend = _shows_legend(fig)
    top = max(MODEBAR_BAND, (TITLE_BAND if title else 0) + (LEGEND_BAND if legend else 0) + 6)
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left", xref="paper", y=1, yref="container", yanchor="top",
                   pad=dict(t=8), font=dict(size=14)) if title else None,
        height=height, margin=dict(l=10, r=10, t=top, b=10), font=FONT,
        xaxis_title=x, yaxis_title=y, bargap=0.05,
        legend=dict(orientation="h", x=0, xanchor="left", y=1, yanchor="bottom"),
        modebar=dict(remove=MODEBAR_REMOVE), template="plotly_white")
    return fig


__all__ = ["BASE", "CURRENT", "KEPT", "PRUNED", "THRESHOLD", "SELECTED", "FONT", "layout", "MODEBAR_BAND"]
