"""A plan's report as one self-contained HTML page a person can send to a colleague: the model and
date, the recipe, metrics before / after, the graph diff (figure and table), the weight histograms
at their thresholds and, when profiled, the latency overlay. plotly.js is inlined once; the page
loads nothing from the network.

``plan_report_html`` takes plain data (metrics, a diff, histograms); ``workspace_report_html``
gathers it from a workspace (read by its attributes: viz imports no other layer), so the app and
the CLI write the same page.
"""
from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping

import plotly.graph_objects as go
import torch

from core.ground import formatting as fmt
from core.ground.layers import prunable_layers
from core.viz.figures import weight_histogram_figure
from core.viz.graphdiff import diff_rows, graph_diff_figure, latency_overlay_figure, status_counts
from core.viz.histograms import Histogram, histogram, weight_histograms

ABS_WEIGHT = "|w|"  # core.plan.report.UNIT_ABS_WEIGHT: a threshold on weight magnitude
MAX_LAYERS = 4  # histograms of the largest layers shown when a model has more than MAX_LAYERS + 2
STYLE = """body{font-family:Inter,system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#1f2328}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #d0d7de;padding:3px 6px;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}pre{background:#f6f8fa;padding:8px;
overflow:auto;font-size:12px}.note{color:#57606a;font-size:12px}.grid{display:grid;
grid-template-columns:1fr 1fr;gap:8px}"""


def _latency(m) -> str:
    lat = getattr(m, "latency", None)
    return f"{lat.median_ms:.3g} ms" if lat is not None else "not timed"


def metrics_table(base, current, quality: str = "accuracy") -> str:
    """Metrics before / after as an HTML table (``Metrics`` objects, read by attributes)."""
    rows = [
        (f"{quality} ({current.subset} subset, {current.n} examples)", fmt.pct(base.accuracy),
         fmt.pct(current.accuracy)),
        ("parameters", f"{base.params:,}", f"{current.params:,}"),
        ("non-zero parameters", f"{base.nonzero_params:,}", f"{current.nonzero_params:,}"),
        ("sparsity (zero share of prunable weights)", fmt.pct(base.sparsity), fmt.pct(current.sparsity)),
        ("MACs per example", f"{base.macs:,}", f"{current.macs:,}"),
        ("size (state dict as safetensors)", fmt.nbytes(base.size_bytes), fmt.nbytes(current.size_bytes)),
        ("latency (median per batch)", _latency(base), _latency(current)),
    ]
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
                   for a, b, c in rows)
    hows = [f"{side}: {m.latency.how()}" for side, m in (("base", base), ("current", current)) if m.latency]
    note = ("<p class='note'>Latency: " + html.escape("; ".join(hows)) + "</p>") if hows else ""
    return f"<table><tr><th>figure</th><th>base</th><th>current</th></tr>{body}</table>{note}"


def rows_table(rows: list[dict]) -> str:
    """A list of dicts (one per row, same keys) as an HTML table; numbers formatted."""
    if not rows:
        return "<p class='note'>No rows.</p>"

    def cell(k: str, v) -> str:
        if v is None:
            return "–"
        if isinstance(v, float) and k.startswith("sparsity"):
            return fmt.pct(v)
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, int):
            return f"{v:,}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{cell(k, v)}</td>" for k, v in r.items()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def plan_report_html(*, model: str, recipe: str, base, current, diff=None, histograms: Mapping[str, Histogram] = (),
                     thresholds: Mapping[str, float | None] | None = None, histogram_note: str = "",
                     quality: str = "accuracy", created: float | None = None) -> str:
    """The plan's report as one HTML page.

    Args:
        model: the model's name.
        recipe: the plan's JSON recipe (``Plan.to_json()``), shown as it is and kept in a
            ``<script type="application/json" id="recipe">`` block (it reads back unchanged).
        base, current: ``Metrics`` of the base and of the plan's model.
        diff: a ``GraphDiff`` (None: no graph section).
        histograms: weight histograms to draw, by layer name (a "(global)" entry for all layers).
        thresholds: the magnitude threshold drawn on each histogram (None or absent: no line).
        histogram_note: what the histograms show (which model, which step's thresholds).
        quality: what ``Metrics.accuracy`` is for this model (``Metrics.quality_name``).
        created: when (``time.time()``); default now.

    Returns:
        The page: plotly.js inlined once, no network source.
    """
    thresholds = thresholds or {}
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() if created is None else created))
    figs: list[tuple[str, go.Figure]] = []
    parts = [f"<h1>prunescope plan report · {html.escape(model)}</h1>",
             f"<p class='note'>Written {when}. The base is the model as loaded; current is the plan's result.</p>",
             "<h2>Metrics, base and current</h2>", metrics_table(base, current, quality)]
    if diff is not None:
        counts = ", ".join(f"{k} {v}" for k, v in status_counts(diff).items())
        parts += ["<h2>Graph diff, base → current</h2>",
                  f"<p class='note'>{len(diff.nodes)} modules: {html.escape(counts)}. Edges from "
                  f"{html.escape(diff.edges_from)}. Hover a module for its figures before → after.</p>", _slot("fig0")]
        figs.append(("fig0", graph_diff_figure(diff)))
        if diff.profiled:
            parts += ["<h2>Where the time went</h2>", _slot("fig1")]
            figs.append(("fig1", latency_overlay_figure(diff)))
        parts += ["<h2>Modules (changed first)</h2>", rows_table(diff_rows(diff))]
    if histograms:
        parts += ["<h2>Weight histograms at their thresholds</h2>",
                  f"<p class='note'>{html.escape(histogram_note)}</p>", "<div class='grid'>"]
        for i, (name, hist) in enumerate(histograms.items()):
            key = f"hist{i}"
            parts.append(_slot(key))
            figs.append((key, weight_histogram_figure(hist, thresholds.get(name), log=True, title=name)))
        parts.append("</div>")
    parts += ["<h2>Recipe (plan JSON)</h2>", f"<pre>{html.escape(recipe)}</pre>",
              f"<script type='application/json' id='recipe'>{_script_json(recipe)}</script>"]
    body = "\n".join(parts)
    for i, (key, fig) in enumerate(figs):
        body = body.replace(_slot(key), fig.to_html(include_plotlyjs=i == 0, full_html=False,
                                                         config={"displaylogo": False}), 1)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(model)} plan report</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _slot(key: str) -> str:
    """Where a figure goes in the page (an HTML comment: escaped text can never hold one)."""
    return f"<!--prunescope:{key}-->"


def _script_json(text: str) -> str:
    """JSON text safe inside a <script> element ("</" cannot close it)."""
    return text.replace("</", "<\\/")


def report_histograms(model: torch.nn.Module, thresholds: Mapping[str, float], global_threshold: float | None
                      ) -> tuple[dict[str, Histogram], dict[str, float | None]]:
    """The histograms a report shows: every prunable layer when there are few, else the
    ``MAX_LAYERS`` largest and one of all prunable weights together ("(global)")."""
    hists = weight_histograms(model)
    lines = {name: thresholds.get(name, global_threshold) for name in hists}
    if len(hists) <= MAX_LAYERS + 2:
        return hists, lines
    largest = sorted(hists, key=lambda n: -hists[n].total)[:MAX_LAYERS]
    with torch.no_grad():
        flat = torch.cat([m.weight.detach().flatten().float() for m in prunable_layers(model).values()])
    a = float(flat.abs().max()) if flat.numel() else 1.0
    out = {"(global)": histogram(flat, 100, -a, a, label="all prunable weights")}
    out.update({n: hists[n] for n in largest})
    return out, {"(global)": global_threshold, **{n: lines[n] for n in largest}}


def workspace_report_html(ws, diff=None, subset: str = "quick") -> str:
    """The report of a workspace's current plan (``ws``: a ``Workspace``). The histograms are
    those of the model the plan's last magnitude-threshold prune step was applied to, with that
    step's thresholds; without such a step, the current model's weights without lines."""
    base, current = ws.base_metrics(subset), ws.metrics(subset)
    steps = [i for i, r in enumerate(ws.reports) if r.threshold_unit == ABS_WEIGHT]
    if steps:
        i = steps[-1]
        r = ws.reports[i]
        hists, lines = report_histograms(ws.model_before(i), r.thresholds, r.global_threshold)
        note = (f"Weights of the model step {i + 1} pruned, with its thresholds on |w| (dashed): weights "
                "between the lines were set to zero. Counts on a log scale.")
    else:
        hists, lines = report_histograms(ws.float_model, {}, None)
        lines = dict.fromkeys(lines)
        note = "Weights of the current model; no step of this plan prunes by weight magnitude, so no threshold."
    return plan_report_html(model=ws.name, recipe=ws.plan.to_json(), base=base, current=current, diff=diff,
                            histograms=hists, thresholds=lines, histogram_note=note,
                            quality=current.quality_name(ws.spec.task))


def recipe_of(page: str) -> dict:
    """The recipe a report page holds, read back as JSON (what a test or a tool reads)."""
    start = page.index("<script type='application/json' id='recipe'>") + len(
        "<script type='application/json' id='recipe'>")
    return json.loads(page[start:page.index("</script>", start)].replace("<\\/", "</"))


__all__ = ["plan_report_html", "workspace_report_html", "report_histograms", "metrics_table", "rows_table",
           "recipe_of"]
