"""Importance criteria and structured pruning on the Prune page.

Sections the Prune page calls: the criterion and granularity selectors, the selected
layer's importance histogram and unit table, the criteria comparison, and the
structured metrics (shapes, MACs ratio next to the measured latency ratio).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from app.messages import run_action
from app.panels import LatencyPending
from app.session import get_workspace
from app.threshold_drag import scores_histogram_ui
from core.errors import PrunescopeError
from core.ground import formatting as fmt
from core.metrics import Metrics, shape_changes
from core.metrics.cost import speed_verdict, timed_beside
from core.prune import CRITERIA, Prune, get_criterion, prunable_layers, threshold_unit
from core.prune.criteria import criteria_for
from core.prune.structured import (
    compare_criteria,
    group_info,
    group_of,
    unit_scores,
)
from core.viz.importance import (
    criteria_grid_figure,
    jaccard_heatmap_figure,
    ratio_bars_figure,
)
from core.workspace import Workspace

GRANULARITY_LABELS = {"weight": "weight (masks)", "neuron": "neuron (removed)",
                      "channel": "channel (removed)", "head": "attention head (removed)"}


# --- pure helpers (tested without a browser) ---------------------------------------

def unit_layers(ws: Workspace, model, granularity: str) -> list[str] | None:
    """Layers of ``model`` holding units of ``granularity`` (None for weights: every layer)."""
    if granularity == "weight":
        return None
    try:
        return [p for g in group_info(model, granularity, ws.ctx) for p in g.producers]
    except PrunescopeError:
        return []


def unit_table(scores, pruned: set[int], group=None) -> pd.DataFrame:
    """One row per unit: index, score, pruned / kept; with ``group`` (a UnitGroup whose units
    are not read by index alone, e.g. grouped-query key/value groups) what each unit is."""
    s = np.asarray(scores, dtype=float)
    table = pd.DataFrame({"unit": np.arange(len(s)), "score": s,
                          "status": ["pruned" if i in pruned else "kept" for i in range(len(s))]})
    if group is not None and group.by_hand:
        table.insert(1, "what", [group.unit_name(i) for i in range(len(s))])
    return table


def _drawn(fn, *args, **kwargs):
    """``fn``'s result, or None with its error drawn here (bugs with their traceback)."""
    return run_action(fn, *args, now=True, **kwargs)


# --- UI -------------------------------------------------------------------------------

def criterion_ui(key: str = "prune") -> tuple[str, str]:
    """Granularity and criterion selectors (choices from the registry), with the
    criterion's one-line description. Returns ``(criterion, granularity)``."""
    ss = st.session_state
    ws = get_workspace()
    gkey, ckey = f"{key}_granularity", f"{key}_criterion"
    grans = ws.granularities()
    if ss.get(gkey) not in grans:
        ss[gkey] = "weight"
    c1, c2 = st.columns(2)
    gran = c1.selectbox("Granularity", grans, key=gkey, format_func=GRANULARITY_LABELS.get,
                        help="weight: masks (sparsity, not faster). neuron / channel / head: units removed "
                             "with everything coupled to them, so the model gets smaller and faster.")
    names = criteria_for(gran)
    if ss.get(ckey) not in names:
        ss[ckey] = "l1" if "l1" in names else names[0]
    crit = c2.selectbox("Criterion", names, key=ckey,
                        help="Importance criterion: units with the lowest scores are pruned first.")
    cls = CRITERIA.get(crit)
    note = " Uses the calibration batch (seeded)." if cls.needs_data else ""
    if gran != "weight":
        note += " Scores are divided by each layer's mean |score| (1.0 = an average unit)."
    st.caption(f"**{crit}**: {cls.description}{note}")
    return crit, gran


def importance_section_ui(ws: Workspace, layer: str, criterion: str, granularity: str,
                          index: int | None) -> None:
    """The selected layer's importance histogram (threshold drawn, pruned units shaded)
    and, for units, a sortable table of their scores and status.

    ``index`` is the plan step the controls edit (None: no such step yet). Scores are
    drawn from the model that step prunes; the threshold and the pruned units are read
    from the step's report, never recomputed.
    """
    src = _drawn(ws.model_before, index if index is not None else len(ws.plan.steps))
    if src is None:
        return
    report = ws.reports[index] if index is not None else None
    step = ws.plan.steps[index] if index is not None else None
    seed = step.seed if step is not None else 0
    if granularity == "weight":
        _weight_section(ws, src, layer, criterion, report, seed)
        return
    group = _drawn(group_of, src, granularity, layer, ws.ctx)
    if group is None:
        names = [g.name for g in (_drawn(group_info, src, granularity, ws.ctx) or [])]
        st.info(f"{layer} has no prunable {granularity}s. Layers with {granularity}s: "
                f"{', '.join(names) or 'none'}.")
        return
    scores = _drawn(unit_scores, src, group.name, criterion, granularity, ws.ctx, seed=seed)
    if scores is None:
        return
    pruned = set(report.removed.get(group.name, ())) if report else set()
    t = report.thresholds.get(group.name) if report else None
    st.markdown(f"**{criterion} scores of {group.name}** ({len(scores)} {granularity}s) · drag the line: "
                f"fraction of this layer's {granularity}s pruned")
    scores_histogram_ui(ws, layer, granularity, scores.numpy(), bins=min(40, max(5, len(scores))),
                        unit=threshold_unit(criterion, granularity), at=t,
                        x_title=f"{threshold_unit(criterion, granularity)} (1 = layer mean)")
    for w in (report.warnings if report else []):
        if w.startswith(group.name + ":"):
            st.warning(w)
    st.markdown(f"**{group.name}**" + (f" ({group.label})" if group.label else "")
                + f": {len(pruned)} of {len(scores)} {granularity}s pruned"
                + (f" · threshold {report.threshold_unit} < {t:.4g}" if t is not None and math.isfinite(t) else ""))
    if len(group.producers) > 1 and granularity != "head":
        st.caption("Coupled (pruned together): " + ", ".join(group.producers))
    picked = st.dataframe(unit_table(scores.numpy(), pruned, group), hide_index=True, width="stretch", height=240,
                          key="importance_table", on_select="rerun", selection_mode="single-row",
                          column_config={"score": st.column_config.NumberColumn(format="%.4f")})
    rows = picked.selection.rows if picked is not None else []
    if src is ws.base:  # the Explain page's unit view reads units of the base model
        explain_unit_ui(group.name, granularity, int(rows[0]) if rows else None)
    else:
        st.caption("Select a unit of the base model (the first step's scores) to explain it on the Explain page.")


def explain_unit_ui(layer: str, granularity: str, unit: int | None) -> None:
    """A button that opens the Explain page's unit view on the selected unit."""
    if unit is None:
        st.caption("Select a row to see what that unit responds to and what is removed with it (Explain page).")
        return
    if st.button(f"Explain {granularity} {unit} of {layer}", key="importance_explain", icon=":material/psychology:",
                 help="Its top-activating examples, activation distribution, scores under every criterion and the "
                      "coupled group, on the Explain page."):
        ss = st.session_state
        ss["explain_unit_gran"], ss["explain_unit_layer"], ss["explain_unit"] = granularity, layer, unit
        ss["_explain_focus_unit"] = True
        st.switch_page("views/explain.py")


def _weight_section(ws: Workspace, src, layer: str, criterion: str, report, seed: int) -> None:
    layers = prunable_layers(src)
    if layer not in layers:
        st.info(f"{layer} has no prunable weights in the current model.")
        return
    crit = get_criterion(criterion, seed=seed)
    calib = ws.ctx.calibration(seed) if crit.needs_data else None
    scores = _drawn(lambda: crit(src, {layer: layers[layer]}, "weight", calib)[layer])
    if scores is None:
        return
    t = report.thresholds.get(layer) if report is not None else None
    unit = threshold_unit(criterion, "weight")
    s = scores.detach().float().flatten().cpu().numpy()
    st.markdown(f"**{criterion} scores of the weights of {layer}** · drag the line: fraction of them pruned")
    scores_histogram_ui(ws, layer, "weight", s, unit=unit, x_title=unit, at=t)
    pruned, total = report.units.get(layer, (0, 0)) if report is not None else (0, 0)
    if t is not None and math.isfinite(t) and total:
        st.caption(f"Threshold {unit} < {t:.4g}: {fmt.pct(pruned / total)} of this layer's weights are zero "
                   "after this step.")


def compare_criteria_ui(ws: Workspace, layer: str, granularity: str) -> None:
    """Which units of ``layer`` each criterion prunes at the same ratio: Jaccard matrix
    and a units x criteria grid."""
    if granularity == "weight":
        st.caption("Comparing criteria works on units: choose neuron, channel or head granularity above.")
        return
    steps = ws.plan.steps
    last = steps and isinstance(steps[-1], Prune) and steps[-1].granularity == granularity
    src = _drawn(ws.model_before, len(steps) - 1 if last else len(steps))  # what the step prunes
    if src is None:
        return
    group = _drawn(group_of, src, granularity, layer, ws.ctx)
    if group is None:
        st.info(f"{layer} has no prunable {granularity}s.")
        return
    names = criteria_for(granularity)
    c1, c2 = st.columns([1, 3])
    ratio = c1.slider("Ratio", 0.05, 0.95, 0.5, 0.05, key="cmp_ratio",
                      help="Every criterion prunes this fraction of the layer's units.")
    ss = st.session_state
    if "cmp_criteria" not in ss or not set(ss["cmp_criteria"]) <= set(names):
        ss["cmp_criteria"] = [n for n in names if n in ("l1", "l1_out", "taylor", "apoz", "wanda", "random")][:6] \
            or names[:4]
    chosen = c2.multiselect("Criteria", names, key="cmp_criteria")
    if len(chosen) < 2:
        st.caption("Pick at least two criteria.")
        return
    with st.spinner("Scoring…"):
        out = _drawn(compare_criteria, src, group.name, chosen, ratio, granularity, ws.ctx)
    if out is None:
        return
    jac, grid = out
    a, b = st.columns([2, 3])
    a.plotly_chart(jaccard_heatmap_figure(jac, title="Overlap of pruned units (Jaccard)"), width="stretch",
                   key="cmp_jaccard")
    b.plotly_chart(criteria_grid_figure(grid, title=f"Units of {group.name} pruned by each criterion"),
                   width="stretch", key="cmp_grid")


def structured_metrics_ui(base: Metrics, m: Metrics, pending: LatencyPending | None = None) -> None:
    """New shapes, parameters and MACs, and the MACs ratio beside the measured latency
    ratio (a smaller model that is not faster is said to be so). With ``pending`` (latency
    not timed yet) the latency figures are redrawn in place once timed."""
    ws = get_workspace()
    st.markdown("##### Structured pruning: smaller and faster?")
    box = st.empty()
    rows = _drawn(shape_changes, ws.base, ws.float_model)
    changes = None if rows is None else pd.DataFrame(rows, columns=["layer", "type", "base", "now"])

    def draw(m: Metrics) -> None:
        with box.container():
            _structured_figures(base, m, changes)

    draw(m)
    if pending is not None:
        pending.add(draw)


def _structured_figures(base: Metrics, m: Metrics, changes: pd.DataFrame | None) -> None:
    macs_ratio = base.macs / m.macs if m.macs else float("nan")
    blat = m.base_latency or base.latency  # timed interleaved with the current model
    lat_ratio = verdict = None
    if timed_beside(blat, m.latency) and m.latency.median_ms > 0:  # a ratio only of one interleaved timing
        lat_ratio = blat.median_ms / m.latency.median_ms
        verdict = speed_verdict(blat, m.latency)
    c = st.columns(4)
    c[0].metric("Parameters", fmt.count(m.params), fmt.delta(m.params, base.params, "ratio"),
                delta_color="inverse", help=f"{m.params:,} of {base.params:,} parameters remain.")
    c[1].metric("MACs ratio", f"{macs_ratio:.2f}×", help="Base MACs / current MACs per example.")
    c[2].metric("Latency ratio", f"{lat_ratio:.2f}×" if lat_ratio else ("timing…" if m.latency is None else "–"),
                help="Base latency / current latency, both timed back to back and interleaved"
                     + (f": the base {fmt.ms(blat.median_ms, blat.iqr_ms)}, the current model "
                        f"{fmt.ms(m.latency.median_ms, m.latency.iqr_ms)}." if lat_ratio else "."))
    value, spread = fmt.ms_card(m.latency.median_ms, m.latency.iqr_ms) if m.latency else ("timing…", None)
    c[3].metric("Latency", value, spread, delta_color="off", delta_arrow="off",
                help=f"The current model: {m.latency.how()}." if m.latency else "Timed after the page is drawn, "
                     "interleaved with the base.")
    if not m.shapes_changed:
        st.caption("No unit removed yet: shapes equal the base model's.")
    elif verdict == "within noise":
        st.info(f"{macs_ratio:.2f}× fewer MACs; the measured latency ratio {lat_ratio:.2f}× is within the noise "
                f"of the two timings (IQR {fmt.spread(blat.spread)} and {fmt.spread(m.latency.spread)}): no speed "
                "conclusion.")
    elif verdict == "slower":
        st.warning(f"Smaller but not faster: {macs_ratio:.2f}× fewer MACs, measured latency "
                   f"{lat_ratio:.2f}× the base's speed on {m.latency.device}, beyond the noise of the timings.")
    timed = "timed" if m.latency else "timing"  # drawn twice in one run when timed after the page
    left, right = st.columns([2, 3])
    left.plotly_chart(ratio_bars_figure(macs_ratio, lat_ratio), width="stretch", key=f"structured_ratios_{timed}")
    if changes is not None and len(changes):
        right.dataframe(changes, hide_index=True, width="stretch", height=260, key=f"structured_shapes_{timed}")
    elif changes is not None:
        right.caption("No layer shape changed.")
