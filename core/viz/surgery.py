"""Plotly figures for layer surgery: data in, figure out (app and notebooks alike).

Colours follow ``style.py``: KEPT for blocks that stay, PRUNED for cut blocks,
SELECTED for new (pasted) blocks, BASE for adapters and the base model's figures.
"""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from core.viz.style import BASE, CURRENT, FONT, KEPT, PRUNED, SELECTED, layout


def _shape(s) -> str:
    return "×".join(str(int(v)) for v in s)


BOX_HALF_HEIGHT = 0.42  # of a block's box, in row units (rows are 1 apart)
LABEL_CHARS = 8  # at most, so a label written upwards stays inside its box's height


def block_label(name: str) -> str:
    """What a box shows of a block path: its last part, cut to :data:`LABEL_CHARS` (the
    whole path is in the hover)."""
    leaf = name.rpartition(".")[2] or name
    return leaf if len(leaf) <= LABEL_CHARS else leaf[:LABEL_CHARS - 1] + "…"


def block_sequence_figure(before: Sequence[dict], after: Sequence[dict],
                          title: str | None = "Blocks: base (top) and current (bottom)") -> go.Figure:
    """Two rows of boxes: the base model's blocks and the current model's blocks.

    A base block missing from the current model is drawn as cut; a current block that
    is not in the base is new (pasted) or an adapter. Blocks are matched by name (kept
    blocks keep their names through surgery). Each label is written upwards inside its
    own box (at most :data:`LABEL_CHARS` characters), so a long name never spills over
    the next box; adapters' narrow boxes carry no label.

    Args:
        before, after: dicts with ``name``, ``out_shape``, ``params`` and ``adapter``
            (``core.surgery.Block.to_dict()``).
    """
    base_names = {b["name"] for b in before}
    after_names = {b["name"] for b in after}
    fig = go.Figure()
    rows = [(1.0, before, "base"), (0.0, after, "current")]
    for y, blocks, row in rows:
        for i, b in enumerate(blocks):
            if row == "base":
                status = "kept" if b["name"] in after_names else "cut"
            elif b.get("adapter"):
                status = "adapter"
            else:
                status = "kept" if b["name"] in base_names else "new"
            color = {"kept": KEPT, "cut": PRUNED, "new": SELECTED, "adapter": BASE}[status]
            w = 0.35 if status == "adapter" else 0.9
            x0 = i
            fig.add_shape(type="rect", x0=x0 - w / 2, x1=x0 + w / 2, y0=y - BOX_HALF_HEIGHT, y1=y + BOX_HALF_HEIGHT,
                          line=dict(color=color, width=2, dash="dot" if status == "cut" else "solid"),
                          fillcolor=color, opacity=0.25 if status == "cut" else 0.85)
            fig.add_trace(go.Scatter(  # the hover of the whole box
                x=[x0], y=[y], mode="markers", marker=dict(size=18, opacity=0, symbol="square"),
                hovertext=[f"{b['name']} ({status})<br>out {_shape(b['out_shape'])}<br>{b['params']:,} params"],
                hoverinfo="text", showlegend=False))
            if status != "adapter":  # an adapter's colour says what it is; its narrow box has no room
                fig.add_annotation(x=x0, y=y, text=block_label(b["name"]), textangle=-90, showarrow=False,
                                   font=dict(color="#111", size=11))
    for status, color in (("kept", KEPT), ("cut", PRUNED), ("new", SELECTED), ("adapter", BASE)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker=dict(size=12, color=color,
                                 symbol="square"), name=status))
    n = max(len(before), len(after), 1)
    fig.update_xaxes(visible=False, range=[-0.7, n - 0.3])
    fig.update_yaxes(tickvals=[1, 0], ticktext=["base", "current"], range=[-0.55, 1.55], showgrid=False,
                     zeroline=False)
    layout(fig, title, "", "", height=300)
    return fig


def cka_heatmap(names: Sequence[str], cka: Sequence[Sequence[float]],
                title: str | None = "Similarity of block outputs (linear CKA)") -> go.Figure:
    """Heatmap of pairwise linear CKA between block outputs (1 = same representation)."""
    short = [n.rpartition(".")[2] or n for n in names]
    fig = go.Figure(go.Heatmap(z=[list(r) for r in cka], x=short, y=short, zmin=0, zmax=1,
                               colorscale=[[0, "#ffffff"], [1, CURRENT]], colorbar=dict(title="CKA"),
                               hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
                               text=[[f"{v:.2f}" for v in r] for r in cka], texttemplate="%{text}"))
    fig.update_yaxes(autorange="reversed")
    return layout(fig, title, "block", "block", height=300)


def influence_figure(names: Sequence[str], influence: Sequence[float | None],
                     title: str | None = "Block influence (1 − cos(input, output))") -> go.Figure:
    """One bar per block; blocks that change the shape have no influence (shown empty)."""
    short = [n.rpartition(".")[2] or n for n in names]
    vals = [v if v is not None else 0.0 for v in influence]
    text = [f"{v:.3f}" if v is not None else "shape change" for v in influence]
    fig = go.Figure(go.Bar(x=short, y=vals, text=text, textposition="outside", marker_color=CURRENT,
                           customdata=list(names), hovertemplate="%{customdata}: %{text}<extra></extra>"))
    return layout(fig, title, "block", "influence", height=260)


def drop_one_figure(names: Sequence[str], drop_one: Sequence[float | None], accuracy: float,
                    suggested: Sequence[str] = (),
                    title: str | None = "Accuracy when each block alone is cut") -> go.Figure:
    """Bars of drop-one accuracy, a line at the current accuracy; suggested blocks highlighted."""
    short = [n.rpartition(".")[2] or n for n in names]
    vals = [100 * v if v is not None else 0.0 for v in drop_one]
    colors = [SELECTED if n in suggested else (PRUNED if v is None else KEPT) for n, v in zip(names, drop_one)]
    text = [f"{100 * v:.1f}%" if v is not None else "cannot cut" for v in drop_one]
    fig = go.Figure(go.Bar(x=short, y=vals, marker_color=colors, text=text, textposition="outside",
                           cliponaxis=False, customdata=list(names),
                           hovertemplate="%{customdata}: %{text}<extra></extra>", name="drop-one"))
    fig.add_hline(y=100 * accuracy, line=dict(color=BASE, dash="dash"),
                  annotation_text=f"now {100 * accuracy:.1f}%", annotation_position="bottom left")
    fig.update_yaxes(range=[0, 118], tickvals=[0, 25, 50, 75, 100])  # room above 100% for the value labels
    return layout(fig, title, "block", "accuracy (%)", height=260)


def heal_figure(losses: Sequence[float], before: dict, after: dict,
                title: str | None = "Heal: training loss") -> go.Figure:
    """Training loss per step, with the calibration loss before and after as markers."""
    fig = go.Figure(go.Scatter(x=list(range(1, len(losses) + 1)), y=list(losses), mode="lines",
                               line=dict(color=CURRENT), name="batch loss"))
    n = max(1, len(losses))
    fig.add_trace(go.Scatter(x=[0, n], y=[before["loss"], after["loss"]], mode="markers+text",
                             marker=dict(color=[BASE, CURRENT], size=10),
                             text=[f"before {100 * before['accuracy']:.1f}%", f"after {100 * after['accuracy']:.1f}%"],
                             textposition=["top right", "top left"], cliponaxis=False, name="calibration loss"))
    top = max(list(losses) + [before["loss"], after["loss"]]) if losses else max(before["loss"], after["loss"])
    fig.update_yaxes(range=[0, 1.25 * top if top > 0 else 1])  # room for the labels above the markers
    fig.update_xaxes(range=[-0.04 * n, 1.04 * n])  # the "before" marker and label stand clear of the y axis
    return layout(fig, title, "step", "loss", height=240)


__all__ = ["block_sequence_figure", "cka_heatmap", "influence_figure", "drop_one_figure", "heal_figure", "FONT"]
