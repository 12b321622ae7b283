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
TITLE_BAND = 26  # px for a title line, below the toolbar's band
LEGEND_BAND = 26  # px for a horizontal legend, above the plot on the left
# Toolbar buttons no figure here needs (selection is by clicking points): a shorter toolbar.
MODEBAR_REMOVE = ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d"]
# A fixed chart (``layout(..., fixed=True)``) takes no drag, so it offers no zoom or pan.
FIXED_REMOVE = MODEBAR_REMOVE + ["zoom2d", "pan2d", "resetScale2d"]
# Attribution maps: sequential from black (nothing) to yellow. Plotly's Inferno starts at
# "#000004", which Streamlit's chart theme takes for a placeholder of its 4th categorical
# colour and paints pink: 0 would read as warm. No colour here may be "#000001".."#000010".
ATTRIBUTION_SCALE = [[0.0, "#000000"], [0.15, "#2b0a57"], [0.35, "#7c1d6f"], [0.55, "#c53c4f"],
                     [0.75, "#f3771a"], [1.0, "#fcffa4"]]


def _shows_legend(fig: go.Figure) -> bool:
    if fig.layout.showlegend is not None:
        return bool(fig.layout.showlegend)
    shown = [t for t in fig.data if t.showlegend is not False]
    return len(shown) > 1 or any(t.showlegend for t in fig.data)


def layout(fig: go.Figure, title: str | None, x: str, y: str, height: int = 320, *,
           fixed: bool = False) -> go.Figure:
    """The house layout. Nothing sits under the toolbar: the top band (``MODEBAR_BAND``)
    is the toolbar's alone, the title comes below it at the left, then the legend on its
    own line; the figure grows by the band so the plot keeps ``height``'s room. A colour
    bar's title stands to its right (on top it covers the highest tick label).

    Args:
        fixed: the chart only shows (hover, click) and takes no drag: no zoom or pan, fixed
            axes, and no zoom buttons; for charts whose amount is set by a control elsewhere.
    """
    legend = _shows_legend(fig)
    top = MODEBAR_BAND + (TITLE_BAND if title else 0) + (LEGEND_BAND if legend else 0) + 4
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left", xref="paper", y=1, yref="container", yanchor="top",
                   pad=dict(t=MODEBAR_BAND + 4), font=dict(size=14)) if title else None,
        height=height + MODEBAR_BAND, margin=dict(l=10, r=10, t=top, b=10), font=FONT,
        xaxis_title=x, yaxis_title=y, bargap=0.05,
        legend=dict(orientation="h", x=0, xanchor="left", y=1, yanchor="bottom"),
        modebar=dict(remove=FIXED_REMOVE if fixed else MODEBAR_REMOVE), template="plotly_white")
    fig.update_traces(colorbar_title_side="right", selector=lambda t: "colorbar" in t)
    if fixed:
        fig.update_layout(dragmode=False)
        fig.update_xaxes(fixedrange=True)
        fig.update_yaxes(fixedrange=True)
    return fig


__all__ = ["BASE", "CURRENT", "KEPT", "PRUNED", "THRESHOLD", "SELECTED", "FONT", "ATTRIBUTION_SCALE", "layout",
           "MODEBAR_BAND"]
