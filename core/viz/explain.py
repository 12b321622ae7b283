"""Figures of what an edit changed: the confusion difference and the CKA along depth."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from core.viz.style import ATTRIBUTION_SCALE, CURRENT, PRUNED, SELECTED, layout


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


def confusion_figure(counts: Sequence[Sequence[int]], classes: Sequence[str],
                     title: str | None = "Confusion") -> go.Figure:
    """Counts [true class][predicted class] of one model."""
    z = [list(r) for r in counts]
    fig = go.Figure(go.Heatmap(z=z, x=list(classes), y=list(classes), colorscale="Blues",
                               text=[[str(v) if v else "" for v in r] for r in z], texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
                               colorbar=dict(title="count", thickness=12)))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return layout(fig, title, "predicted class", "true class", height=max(300, 26 * len(classes) + 120))


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




def attribution_figure(image, base_map, current_map, titles: Sequence[str],
                       title: str | None = "Input gradients: where each model looks") -> go.Figure:
    """The example and the two saliency maps side by side (each scaled to its own maximum)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=list(titles), horizontal_spacing=0.04)
    fig.add_trace(go.Heatmap(z=image, colorscale="gray", showscale=False, hoverinfo="skip"), 1, 1)
    for col, m in ((2, base_map), (3, current_map)):
        top = max(float(max(map(max, m))), 1e-12)
        fig.add_trace(go.Heatmap(z=[[v / top for v in row] for row in m], colorscale=ATTRIBUTION_SCALE, zmin=0, zmax=1,
                                 showscale=col == 3, hovertemplate="%{z:.2f}<extra></extra>",
                                 colorbar=dict(title="share of max", thickness=10)), 1, col)
    for col in (1, 2, 3):
        fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor=f"x{col if col > 1 else ''}",
                         row=1, col=col)
        fig.update_xaxes(showticklabels=False, row=1, col=col)
    return layout(fig, title, "", "", height=300)


def activation_figure(values: Sequence[float], title: str | None = "Activation over the examples") -> go.Figure:
    """Histogram of one unit's activation over the evaluation subset."""
    fig = go.Figure(go.Histogram(x=list(values), nbinsx=40, marker_color=CURRENT))
    return layout(fig, title, "activation", "examples", height=260, fixed=True)


UNCHANGED = "#d5d9de"  # a layer the unit's removal leaves alone
# What a layer of a coupled group loses, by kind: (legend label, colour).
LOSSES = {"out": ("loses output channels", PRUNED), "in": ("loses input channels", SELECTED),
          "entries": ("norm / other: loses per-channel entries", CURRENT)}
LOSES = {"out": "output channels", "in": "input channels", "entries": "entries"}  # in a sentence: "loses ..."


def what_it_loses(member: dict) -> str:
    """"out", "in" or "entries": what one member of a coupled group (``layer``, ``type``,
    ``role``) loses. A norm's "out" role is its per-channel entries (scale, shift and
    running statistics), not output channels of its own."""
    if member["role"] == "in":
        return "in"
    if member["role"] == "out" and "Norm" not in member.get("type", ""):
        return "out"
    return "entries"


def coupled_group_figure(layers: Sequence[dict], group: dict, title: str | None = None) -> go.Figure:
    """The model's layers in execution order, top to bottom; the layers Torch-Pruning's
    dependency graph changes with the unit are coloured by what they lose (``LOSSES``:
    output channels red, input channels orange, a norm's or other per-channel entries
    blue) and labelled with the indices, the rest grey. The legend names exactly the
    colours drawn."""
    kinds = {r["layer"]: (r, what_it_loses(r)) for r in group["layers"]}
    ys = list(range(len(layers)))
    cols, texts = [], []
    for r in layers:
        g, kind = kinds.get(r["layer"], (None, None))
        cols.append(LOSSES[kind][1] if g else UNCHANGED)
        idx = ", ".join(map(str, g["indices"][:8])) + (" …" if len(g["indices"]) > 8 else "") if g else ""
        texts.append(f"<b>{r['layer']}</b> ({r['type']})" + (f" · loses {LOSES[kind]} {idx}" if g else ""))
    fig = go.Figure()
    fig.add_scatter(x=[0] * len(ys), y=ys, mode="lines", line=dict(color=UNCHANGED, width=2), hoverinfo="skip",
                    showlegend=False)
    fig.add_scatter(x=[0] * len(ys), y=ys, mode="markers+text", text=texts, textposition="middle right",
                    marker=dict(symbol="square", size=14, color=cols, line=dict(color="#6b7280", width=1)),
                    hovertext=texts, hoverinfo="text", showlegend=False)
    drawn = [LOSSES[k] for k in LOSSES if LOSSES[k][1] in cols]
    drawn += [("unchanged", UNCHANGED)] if UNCHANGED in cols else []
    for name, colour in drawn:
        fig.add_scatter(x=[None], y=[None], mode="markers", name=name,
                        marker=dict(symbol="square", size=12, color=colour, line=dict(color="#6b7280", width=1)))
    fig.update_yaxes(autorange="reversed", visible=False)
    fig.update_xaxes(visible=False, range=[-0.05, 1])
    fig.update_layout(showlegend=True)
    n = len(group["layers"])
    return layout(fig, title or f"Removed with {group['granularity']} {group['unit']} of {group['group']}: "
                                f"{n} layer(s) change", "", "", height=max(220, 22 * len(layers) + 90), fixed=True)


__all__ = ["coupled_group_figure", "what_it_loses", "LOSSES", "LOSES", "confusion_figure", "confusion_delta_figure",
           "divergence_figure", "attribution_figure", "activation_figure"]
