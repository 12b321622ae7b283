"""Figures of a sensitivity sweep: the layer x amount heatmap of accuracy drop, one curve
per layer, per-class accuracy of one layer, criteria compared by a global amount, and the
amounts an automatic plan chose."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from core.viz.style import BASE, CURRENT, PRUNED, layout

_DROP_SCALE = [[0, CURRENT], [0.5, "#ffffff"], [1, PRUNED]]  # gain (blue), none (white), drop (red)


def _amount_labels(amounts: Sequence[float]) -> list[str]:
    return [f"{100 * a:.0f}%" for a in amounts]


def sensitivity_heatmap(sens, title: str | None = "", quality: str = "accuracy") -> go.Figure:
    """Rows are layers (in model order), columns the amounts; a cell is the drop of the
    headline figure ``quality`` (accuracy, or an embedding's neighbour recall) in points
    (source minus pruned). Red is a drop, blue a gain; white is no change."""
    title = f"{quality[0].upper()}{quality[1:]} drop when one layer is pruned alone" if title == "" else title
    layers = list(sens.layers)
    z = [_padded(sens.drop(n), len(sens.amounts)) for n in layers]
    acc = [_padded([100 * p["accuracy"] for p in sens.layers[n]], len(sens.amounts)) for n in layers]
    m = max((abs(v) for r in z for v in r if v is not None), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=_amount_labels(sens.amounts), y=layers, zmin=-m, zmax=m, colorscale=_DROP_SCALE, customdata=acc,
        text=[[f"{v:.1f}" if v is not None and abs(v) >= 0.05 else "" for v in r] for r in z], texttemplate="%{text}",
        hovertemplate="%{y} at %{x}: " + quality + " %{customdata:.1f}% (drop %{z:.2f} points)<extra></extra>",
        colorbar=dict(title="drop, points", thickness=12)))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return layout(fig, title, f"amount pruned ({_unit(sens.granularity)} of each layer)", "layer",
                  height=max(280, 24 * len(layers) + 120))


def _padded(row: list, n: int) -> list:
    """A layer's row to ``n`` amounts: a sweep for an accuracy budget (``stop_harm``) ends a
    layer at its first amount past the bound; the amounts it did not run are gaps."""
    return list(row) + [None] * (n - len(row))


def _unit(granularity: str) -> str:
    return {"weight": "weights", "neuron": "neurons", "channel": "channels", "head": "heads"}.get(granularity, "units")


def sensitivity_curves(sens, title: str | None = "", highlight: str | None = None,
                       quality: str = "accuracy") -> go.Figure:
    """The headline figure ``quality`` (%) against the amount, one line per layer; the
    unpruned source as a line."""
    title = f"{quality[0].upper()}{quality[1:]} against the amount, one layer at a time" if title == "" else title
    fig = go.Figure()
    for n, pts in sens.layers.items():
        wide = highlight is None or n == highlight
        fig.add_scatter(x=[100 * p["amount"] for p in pts], y=[100 * p["accuracy"] for p in pts],
                        mode="lines+markers", name=n,
                        line=dict(width=3 if n == highlight else 1.5), opacity=1.0 if wide else 0.35,
                        hovertemplate=f"{n} at %{{x:.0f}}%: %{{y:.1f}}%<extra></extra>")
    fig.add_hline(y=100 * sens.source["accuracy"], line=dict(color=BASE, dash="dash"),
                  annotation_text="unpruned", annotation_position="bottom left")
    fig.update_xaxes(ticksuffix="%")
    fig.update_yaxes(ticksuffix="%", range=[0, 101])
    fig.update_layout(showlegend=len(sens.layers) <= 16)
    return layout(fig, title, f"{_unit(sens.granularity)} pruned in that layer", quality, height=380)


def class_heatmap(sens, layer: str, classes: Sequence[str],
                  title: str | None = None) -> go.Figure:
    """Per-class accuracy drop (points) of one layer over the amounts: which classes fall first."""
    src = sens.source["per_class_accuracy"]
    pts = sens.layers[layer]
    z = [_padded([100 * (src[c] - p["per_class_accuracy"][c]) for p in pts], len(sens.amounts))
         for c in range(len(classes))]
    m = max((abs(v) for r in z for v in r if v is not None), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=_amount_labels(sens.amounts), y=[str(c) for c in classes], zmin=-m, zmax=m, colorscale=_DROP_SCALE,
        text=[[f"{v:.0f}" if v is not None and abs(v) >= 0.5 else "" for v in r] for r in z], texttemplate="%{text}",
        hovertemplate="class %{y} at %{x}: drop %{z:.1f} points<extra></extra>",
        colorbar=dict(title="drop, points", thickness=12)))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return layout(fig, title or f"Per-class accuracy drop when {layer} is pruned alone",
                  f"amount pruned ({_unit(sens.granularity)} of {layer})", "class",
                  height=max(260, 24 * len(classes) + 110))


def criteria_curves_figure(curves, title: str | None = "", quality: str = "accuracy") -> go.Figure:
    """The headline figure ``quality`` (%) against the global amount, one line per criterion."""
    title = f"Criteria compared by outcome: {quality} after a global amount" if title == "" else title
    fig = go.Figure()
    xs = [100 * a for a in curves.amounts]
    for c, pts in curves.curves.items():
        fig.add_scatter(x=xs, y=[100 * p["accuracy"] for p in pts], mode="lines+markers", name=c,
                        hovertemplate=f"{c} at %{{x:.0f}}%: %{{y:.1f}}%<extra></extra>")
    if curves.source:
        fig.add_hline(y=100 * curves.source["accuracy"], line=dict(color=BASE, dash="dash"),
                      annotation_text="unpruned", annotation_position="bottom left")
    fig.update_xaxes(ticksuffix="%")
    fig.update_yaxes(ticksuffix="%", range=[0, 101])
    return layout(fig, title, f"{_unit(curves.granularity)} pruned, every layer (global amount)", quality,
                  height=360)


def amounts_figure(layers: Sequence[str], amounts: dict[str, float],
                   title: str | None = "Amount the automatic plan chose per layer") -> go.Figure:
    """Bars: the fraction of each layer's units the plan prunes (0 for layers it leaves)."""
    ys = [100 * amounts.get(n, 0.0) for n in layers]
    fig = go.Figure(go.Bar(x=list(layers), y=ys, marker_color=PRUNED,
                           hovertemplate="%{x}: %{y:.0f}% pruned<extra></extra>"))
    fig.update_yaxes(range=[0, 100], ticksuffix="%")
    fig.update_xaxes(type="category")
    return layout(fig, title, "layer", "pruned", height=280, fixed=True)


__all__ = ["sensitivity_heatmap", "sensitivity_curves", "class_heatmap", "criteria_curves_figure", "amounts_figure"]
