"""The graph diff of base against current as figures: one merged graph coloured by status, a
table of its nodes, and the latency overlay ("where the time went").

A diff is read by its attributes (``core.explain.graphdiff.GraphDiff``: ``nodes`` of
``DiffNode`` with ``before`` / ``after`` ``NodeFigures``, ``edges``, ``profiled``,
``profile_note``); viz imports no other layer, so any object of that shape is drawn.

Layout: nodes follow the execution order (``order``) and are grouped by ``container``. A
*segment* is a run of nodes, consecutive in execution order, with one container; each segment
is a column (its container named above it, leaf modules down it in order), the columns run
left to right in execution order and wrap into rows of at most ``columns`` columns, so a
ResNet's blocks and a ViT's long chain of layers both stay on one screen.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable

import plotly.graph_objects as go

from core.ground import formatting as fmt
from core.viz.style import BASE, CURRENT, FONT, MODEBAR_BAND, layout

STATUS_ORDER = ("removed", "added", "narrowed", "masked", "kept")  # changed first, in tables and legends
STATUS_STYLE = {  # status -> (fill colour, marker symbol, what it means in the legend's hover)
    "kept": ("#9aa5b1", "circle", "unchanged"),
    "narrowed": ("#2f6fde", "circle", "fewer units: widths before -> after"),
    "masked": ("#f2a541", "circle", "same shape, some weights zeroed"),
    "removed": ("#e4572e", "square-x-open", "cut out of the model"),
    "added": ("#2ca25f", "diamond", "new in the current model (bridge, pasted block)"),
}
ROW_PX = 26  # px per leaf module down a column
COLUMN_GAP = 1.0  # x units between columns


def _segments(nodes: list) -> list[tuple[str, list]]:
    """Runs of nodes, in execution order, that share one container: (container, nodes)."""
    segs: list[tuple[str, list]] = []
    for n in sorted(nodes, key=lambda n: (n.order, n.name)):
        if segs and segs[-1][0] == n.container:
            segs[-1][1].append(n)
        else:
            segs.append((n.container, [n]))
    return segs


def node_positions(nodes: list, columns: int = 10) -> tuple[dict[str, tuple[float, float]], list[dict]]:
    """Where each node is drawn, and the column bands.

    Returns:
        ``(positions, bands)``: ``positions[name] = (x, y)`` (y grows downwards: it is drawn on
        a reversed axis); each band ``{"container", "x", "y0", "y1"}`` is one segment's column.
    """
    segs = _segments(nodes)
    pos: dict[str, tuple[float, float]] = {}
    bands: list[dict] = []
    top = 0.0
    for start in range(0, len(segs), columns):
        row = segs[start:start + columns]
        depth = max(len(members) for _, members in row)
        for j, (container, members) in enumerate(row):
            x = j * COLUMN_GAP
            for k, n in enumerate(members):
                pos[n.name] = (x - 0.3, top + 1 + k)  # at the column's left: its label has the column's width
            bands.append({"container": container, "x": x, "y0": top + 0.4, "y1": top + len(members) + 0.6})
        top += depth + 1.6
    return pos, bands


def _num(v: float | int | None, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, int):
        return fmt.count(v) + unit
    return f"{v:.3g}{unit}"


def _pair(before, after, attr: str, unit: str = "") -> str:
    a = getattr(before, attr) if before is not None else None
    b = getattr(after, attr) if after is not None else None
    return f"{_num(a, unit)} -> {_num(b, unit)}"


def hover_text(n) -> str:
    """A node's figures before -> after, as hover HTML."""
    b, a = n.before, n.after
    lines = [f"<b>{n.name or '(model)'}</b> · {n.kind}", f"status: <b>{n.status}</b>"
             + (f" (step {', '.join(str(s + 1) for s in n.steps)})" if n.steps else "")]
    lines.append(f"parameters: {_pair(b, a, 'params')}")
    lines.append(f"MACs / example: {_pair(b, a, 'macs')}")
    for dim, (w0, w1) in n.widths.items():
        lines.append(f"{dim}: {w0} -> {w1}")
    if not n.widths:
        shape = (a or b).shape if (a or b) is not None else {}
        if shape:
            lines.append("shape: " + ", ".join(f"{k} {v}" for k, v in shape.items()))
    sb = f"{100 * b.sparsity:.1f}%" if b is not None else "–"
    sa = f"{100 * a.sparsity:.1f}%" if a is not None else "–"
    lines.append(f"sparsity (zero params): {sb} -> {sa}")
    if (b is not None and b.latency_ms is not None) or (a is not None and a.latency_ms is not None):
        lines.append(f"time / batch: {_pair(b, a, 'latency_ms', ' ms')}")
        sh = [f"{100 * f.latency_share:.1f}%" if f is not None and f.latency_share is not None else "–" for f in (b, a)]
        lines.append(f"share of module time: {sh[0]} -> {sh[1]}")
    if n.removed_importance is not None:
        lines.append(f"importance of what was removed (mean score): {n.removed_importance:.3g}")
    if getattr(n, "note", ""):
        lines.append(n.note)
    return "<br>".join(lines)


def _parents(path: str) -> list[str]:
    """``path`` and every container above it ("a.b.c", "a.b", "a")."""
    parts = path.split(".") if path else []
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def leaf_nodes(diff) -> list:
    """The nodes drawn as markers: leaf modules (a container removed or added as a whole is a node
    of the diff too, drawn as the outline of its leaves' columns)."""
    return [n for n in diff.nodes if not getattr(n, "is_container", False)]


def _label(n, width: int = 14) -> str:
    """The text beside a marker: its last name part and its kind ("conv1 Conv2d")."""
    text = f"{n.name.rsplit('.', 1)[-1] or '(model)'} {n.kind}"
    return text if len(text) <= width else text[:width - 1] + "…"


def _size(n, biggest: int) -> float:
    p = max((f.params for f in (n.before, n.after) if f is not None), default=0)
    return 9 + 9 * math.log10(1 + p) / math.log10(2 + biggest)


def graph_diff_figure(diff, *, selected: str | None = None, columns: int = 10, labels: bool = True,
                      title: str | None = None) -> go.Figure:
    """One merged graph of base and current: a marker per module coloured by its status.

    Args:
        diff: a ``GraphDiff`` (read by attributes).
        selected: a node name to ring.
        columns: segment columns per row before the flow wraps.
        labels: write each module's last name part beside it.

    Returns:
        A figure whose markers carry their node name as ``customdata`` (for ``on_select``);
        one trace per status, named with its count.
    """
    nodes = leaf_nodes(diff)
    whole = {n.name: n.status for n in diff.nodes if getattr(n, "is_container", False)}
    pos, bands = node_positions(nodes, columns)
    fig = go.Figure()
    ex, ey = [], []
    for src, dst in diff.edges:
        if src in pos and dst in pos:
            (x0, y0), (x1, y1) = pos[src], pos[dst]
            ex += [x0, x1, None]
            ey += [y0, y1, None]
    fig.add_scatter(x=ex, y=ey, mode="lines", line=dict(color="#c9d1d9", width=1), hoverinfo="skip",
                    showlegend=False, name="data flow")
    for band in bands:
        # a container removed or added as a whole outlines its columns in its status colour
        status = next((whole[c] for c in _parents(band["container"]) if c in whole), None)
        edge = dict(width=2, dash="dot", color=STATUS_STYLE[status][0]) if status else dict(width=0)
        fig.add_shape(type="rect", x0=band["x"] - 0.45, x1=band["x"] + 0.45, y0=band["y0"], y1=band["y1"],
                      line=edge, fillcolor="#f3f5f8", layer="below")
        name = band["container"] or "(top)"
        fig.add_annotation(x=band["x"], y=band["y0"], text=name if len(name) <= 18 else "…" + name[-17:],
                           showarrow=False, yanchor="bottom", font=dict(size=9, color="#57606a"),
                           hovertext=band["container"] or "the model's top level")
    biggest = max((f.params for n in nodes for f in (n.before, n.after) if f is not None), default=1)
    counts = status_counts(diff)
    for status in STATUS_ORDER:
        members = [n for n in nodes if n.status == status]
        colour, symbol, meaning = STATUS_STYLE[status]
        open_marker = symbol.endswith("-open")
        fig.add_scatter(
            x=[pos[n.name][0] for n in members], y=[pos[n.name][1] for n in members],
            mode="markers+text" if labels else "markers", name=f"{status} ({counts[status]})",
            text=[_label(n, 12 if len(bands) >= 8 else 20) for n in members] if labels else None,
            textposition="middle right",
            textfont=dict(size=9, color="#3a434d"), customdata=[n.name for n in members],
            hovertext=[hover_text(n) for n in members], hoverinfo="text", legendgrouptitle=None,
            marker=dict(color=colour, symbol=symbol, size=[_size(n, biggest) for n in members],
                        line=dict(width=[3 if n.name == selected else (2 if open_marker else 0.5)
                                         for n in members],
                                  color=["#111" if n.name == selected else (colour if open_marker else "#fff")
                                         for n in members])),
            legendrank=STATUS_ORDER.index(status), meta=meaning)
    depth = max((y for _, y in pos.values()), default=1) + 1
    fig.update_yaxes(visible=False, range=[depth, -0.4])  # reversed: the flow runs down; room for band names
    fig.update_xaxes(visible=False, range=[-0.6, min(columns, max(len(bands), 1)) * COLUMN_GAP - 0.2])
    fig.update_layout(clickmode="event+select", hoverlabel=dict(align="left", font=FONT),
                      legend_title_text=None)
    head = title if title is not None else f"{diff.model}: base -> current ({len(nodes)} leaf modules)"
    return layout(fig, head, "", "", height=int(max(240, depth * ROW_PX)))


def latency_overlay_figure(diff, top: int = 15) -> go.Figure:
    """Where the time went: per module, its profiled time per batch in the base and in the
    current model, paired horizontal bars, the ``top`` modules by the larger of the two, the
    slowest on top. The title says how the time was measured (``diff.profile_note``).

    Raises:
        ValueError: the diff was not profiled (no times to draw).
    """
    if not diff.profiled:
        raise ValueError(f"latency_overlay_figure needs a profiled diff (graph_diff(profile=True)); "
                         f"this one was not: {diff.profile_note}")

    def ms(f) -> float:
        return f.latency_ms if f is not None and f.latency_ms is not None else 0.0

    timed = [n for n in diff.nodes if ms(n.before) > 0 or ms(n.after) > 0]
    timed.sort(key=lambda n: (-max(ms(n.before), ms(n.after)), n.order))
    shown = list(reversed(timed[:top]))  # plotly draws the first category at the bottom
    names = [f"{n.name} ({n.status})" for n in shown]
    fig = go.Figure()
    # current first: plotly stacks a group's bars upwards, so base sits above current; the legend is reversed
    for side, colour, label in (("after", CURRENT, "current"), ("before", BASE, "base")):
        vals = [ms(getattr(n, side)) for n in shown]
        fig.add_bar(y=names, x=vals, orientation="h", name=label, marker_color=colour,
                    hovertemplate="%{y}: %{x:.3g} ms per batch<extra>" + label + "</extra>")
    fig.update_layout(barmode="group", bargap=0.25, legend_traceorder="reversed")
    fig.update_yaxes(automargin=True, tickfont=dict(size=10))
    fig.update_xaxes(ticksuffix=" ms")
    note = textwrap.wrap(diff.profile_note, 130) or [""]
    title = (f"Where the time went: the {len(shown)} slowest modules, base vs current<br>"
             + "<br>".join(f"<span style='font-size:11px'>{line}</span>" for line in note))
    out = layout(fig, title, "time per batch (ms, module alone)", "", height=max(220, 34 * len(shown)))
    out.update_layout(margin=dict(t=out.layout.margin.t + 15 * len(note)), title_pad_t=MODEBAR_BAND + 2)
    return out


def diff_rows(diff, statuses: Iterable[str] | None = None) -> list[dict]:
    """One row per node for a table: changed nodes first (removed, added, narrowed, masked,
    kept), then execution order. ``statuses`` keeps only those statuses."""
    keep = set(statuses) if statuses is not None else None
    rows = []
    for n in sorted(diff.nodes, key=lambda n: (STATUS_ORDER.index(n.status), n.order, n.name)):
        if keep is not None and n.status not in keep:
            continue
        b, a = n.before, n.after
        rows.append({
            "module": n.name, "kind": n.kind, "status": n.status,
            "steps": ", ".join(str(s + 1) for s in n.steps),
            "params before": b.params if b else None, "params after": a.params if a else None,
            "MACs before": b.macs if b else None, "MACs after": a.macs if a else None,
            "widths": "; ".join(f"{k} {w0}->{w1}" for k, (w0, w1) in n.widths.items()),
            "sparsity before": b.sparsity if b else None, "sparsity after": a.sparsity if a else None,
            "ms before": b.latency_ms if b else None, "ms after": a.latency_ms if a else None,
            "removed importance": n.removed_importance,
        })
    return rows


def status_counts(diff) -> dict[str, int]:
    """Leaf modules per status, every status named (0 when none), in ``STATUS_ORDER``."""
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for n in leaf_nodes(diff):
        counts[n.status] += 1
    return counts


__all__ = ["graph_diff_figure", "leaf_nodes", "latency_overlay_figure", "diff_rows", "status_counts", "node_positions",
           "hover_text", "STATUS_STYLE", "STATUS_ORDER"]
