"""Plotly figures shared by the app and notebooks: data in, figure out.

Colours and layout come from ``style.py``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from core.viz.histograms import Histogram
from core.viz.style import BASE, CURRENT, KEPT, PRUNED, SELECTED, THRESHOLD, layout


def overview_figure(layers: Sequence[str], sparsity: Sequence[float], params: Sequence[int],
                    selected: str | None = None, title: str | None = "Sparsity per layer") -> go.Figure:
    """One bar per prunable layer: its sparsity; parameters in the hover; click selects.

    Each bar carries its layer name as ``customdata`` for ``on_select``.
    """
    pruned = [100 * s for s in sparsity]
    kept = [100 - p for p in pruned]
    line = [3 if n == selected else 0 for n in layers]
    hover = "<b>%{x}</b><br>sparsity %{customdata[1]:.1f}%<br>parameters %{customdata[2]:,}<extra></extra>"
    data = [[n, p, int(q)] for n, p, q in zip(layers, pruned, params)]
    fig = go.Figure()
    # Stacked to 100% so every layer has a full-height bar to click, even when unpruned.
    fig.add_bar(x=list(layers), y=pruned, name="pruned", marker_color=PRUNED, customdata=data,
                hovertemplate=hover, marker_line=dict(width=line, color=SELECTED))
    fig.add_bar(x=list(layers), y=kept, name="kept", marker_color=KEPT, opacity=0.35, customdata=data,
                hovertemplate=hover, marker_line=dict(width=line, color=SELECTED))
    fig.update_yaxes(range=[0, 100], ticksuffix="%")
    fig.update_layout(barmode="stack", clickmode="event+select")
    short = tick_names(layers)
    fig.update_xaxes(tickmode="array", tickvals=list(layers), ticktext=short, automargin=True)
    # long names are drawn slanted: room below the bars for them, so the bars keep their height
    extra = 0 if len(layers) * max(map(len, short), default=0) * 7 < 420 else 6 * max(map(len, short), default=0)
    return layout(fig, title, "layer (click to select)", "weights", height=280 + extra, fixed=True)


def tick_names(names: Sequence[str], width: int = 18) -> list[str]:
    """Axis labels short enough to read: the dotted prefix all names share is dropped
    ("hf.encoder.layer."; two parts of each name are kept at least), and a name still longer
    than ``width`` keeps its start and end ("0.atten…self.query"); the full name stays in the
    hover. Names that would then collide are kept whole."""
    if all(len(n) <= width for n in names):
        return list(names)
    parts = [n.split(".") for n in names]
    common = 0
    while parts and all(len(p) > common + 2 and p[common] == parts[0][common] for p in parts):
        common += 1
    rest = [".".join(p[common:]) for p in parts]
    head = (width - 1) // 2
    short = [n if len(n) <= width else n[:head] + "…" + n[-(width - 1 - head):] for n in rest]
    return short if len(set(short)) == len(set(names)) else list(names)


def weight_histogram_figure(hist: Histogram, threshold: float | None, *, log: bool = False,
                            title: str | None = None, symmetric: bool = True) -> go.Figure:
    """Bars of a binned weight histogram, pruned bins in PRUNED, the threshold drawn.

    Args:
        hist: the cached histogram (fixed edges).
        threshold: magnitude threshold; weights with |w| < threshold are pruned.
        symmetric: draw the threshold at ±threshold (weights); False for score histograms.
    """
    c = hist.centers
    t = threshold if threshold is not None and np.isfinite(threshold) else (np.inf if threshold == np.inf else None)
    if t is None:
        pruned = np.zeros_like(c, dtype=bool)
    else:
        pruned = (np.abs(c) < t) if symmetric else (c < t)
    fig = go.Figure()
    for mask, name, color in ((~pruned, "kept", KEPT), (pruned, "pruned", PRUNED)):
        fig.add_bar(x=c[mask], y=hist.counts[mask], width=hist.width, name=name, marker_color=color,
                    hovertemplate="%{x:.4g}: %{y:,} weights<extra>" + name + "</extra>")
    lo, hi = float(hist.edges[0]), float(hist.edges[-1])
    if t is not None and t > 0:
        tt = min(t, max(abs(lo), abs(hi)))
        x0 = -tt if symmetric else lo
        fig.add_vrect(x0=max(x0, lo), x1=min(tt, hi), fillcolor=PRUNED, opacity=0.08, line_width=0)
        for x in ((-tt, tt) if symmetric else (tt,)):
            if lo <= x <= hi:
                fig.add_vline(x=x, line_color=THRESHOLD, line_dash="dash", line_width=2)
    fig.update_layout(barmode="overlay")
    if log:
        fig.update_yaxes(type="log")
    return layout(fig, title, hist.label or "value", "count (log)" if log else "count", fixed=True)


def per_class_figure(classes: Sequence[str], base: Sequence[float | None], current: Sequence[float | None],
                     title: str | None = "Per-class accuracy", names: tuple[str, str] = ("base", "current"),
                     what: str = "accuracy") -> go.Figure:
    """Grouped bars: base (or any "before") against current ``what`` (a share: accuracy, IoU)
    for each class; None: the class has no figure (no bar)."""
    fig = go.Figure()
    pct = (lambda vs: [None if v is None else 100 * v for v in vs])
    fig.add_bar(x=list(classes), y=pct(base), name=names[0], marker_color=BASE,
                hovertemplate=f"class %{{x}}: {what} %{{y:.1f}}%<extra>{names[0]}</extra>")
    fig.add_bar(x=list(classes), y=pct(current), name=names[1], marker_color=CURRENT,
                hovertemplate=f"class %{{x}}: {what} %{{y:.1f}}%<extra>{names[1]}</extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 100], ticksuffix="%")
    fig.update_xaxes(type="category")
    return layout(fig, title, "class", what, height=260)


def pareto_front(x: Sequence[float], y: Sequence[float]) -> list[int]:
    """Indices of points not dominated (smaller x and larger y are better), by x."""
    order = sorted(range(len(x)), key=lambda i: (x[i], -y[i]))
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return front


def pareto_figure(x: Sequence[float], y: Sequence[float], labels: Sequence[str], *, x_title: str,
                  y_title: str = "accuracy", current: int | None = None,
                  title: str | None = None, marked: Sequence[bool] | None = None,
                  marked_name: str = "not comparable", x_format: str = ".3~s") -> go.Figure:
    """Scatter of evaluated plans with the Pareto front; point index in ``customdata``.

    Args:
        marked: per point, True to draw it hollow under ``marked_name`` in the legend and leave
            it off the front (a figure that is not comparable with the others: a noisy timing).
        x_format: the x axis' tick format (d3), e.g. ".2f" for a ratio.
    """
    marked = list(marked) if marked is not None else [False] * len(x)
    fig = go.Figure()
    hover = "%{text}<br>" + x_title + " %{x:,.4g}<br>accuracy %{y:.1f}%<extra></extra>"
    for hollow in (False, True):
        idx = [i for i in range(len(x)) if marked[i] == hollow]
        if hollow and not idx:
            continue
        fig.add_scatter(x=[x[i] for i in idx], y=[100 * y[i] for i in idx], mode="markers",
                        name=marked_name if hollow else "plans", customdata=idx, text=[labels[i] for i in idx],
                        marker=dict(color=CURRENT, size=9, opacity=0.8, symbol="circle-open" if hollow else "circle",
                                    line=dict(width=2) if hollow else None), hovertemplate=hover)
    kept = [i for i in range(len(x)) if not marked[i]]
    front = [kept[j] for j in pareto_front([x[i] for i in kept], [y[i] for i in kept])]
    if front:
        fig.add_scatter(x=[x[i] for i in front], y=[100 * y[i] for i in front], mode="lines",
                        name="Pareto front", line=dict(color=PRUNED, dash="dot"), hoverinfo="skip")
    if current is not None and 0 <= current < len(x):
        fig.add_scatter(x=[x[current]], y=[100 * y[current]], mode="markers", name="current",
                        marker=dict(color=SELECTED, size=14, symbol="star"), hoverinfo="skip")
    fig.update_yaxes(ticksuffix="%")
    fig.update_xaxes(tickformat=x_format)  # ".3~s": 56.6k, not 56.5535k
    return layout(fig, title, x_title, y_title, height=340)
