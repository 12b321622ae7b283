"""Prune: drag thresholds over histograms and watch the metrics move."""
from __future__ import annotations

import dataclasses
import math

import streamlit as st

from app import hf_constraint_ui, importance_ui, oneshot_ui, threshold_drag, widget_echo  # stale values: widget_echo
from app.explain_ui import changes_panel_ui
from app.messages import run_action, show_flashes
from app.panels import (
    current_metrics,
    full_eval_ui,
    latency_ui,
    metrics_panel_ui,
    per_class_ui,
    plan_ui,
    refine_ui,
)
from app.recover_ui import recover_ui
from app.session import ROUNDED, get_workspace, round_to
from core.ground import formatting as fmt
from core.metrics import layer_sparsity
from core.plan import StepReport
from core.prune import LayerOverride, Prune, threshold_unit
from core.prune.structured import group_of
from core.viz.figures import overview_figure, weight_histogram_figure
from core.viz.histograms import weight_histograms
from core.workspace import Workspace

# --- pure helpers (tested without a browser) ---------------------------------------

def active_step(ws: Workspace, granularity: str) -> tuple[int | None, Prune | None]:
    """The step the controls edit: the plan's last step when it is a Prune of
    ``granularity`` (else none, and moving a control adds one). Its criterion is kept equal
    to the chosen one by :func:`follow_criterion`."""
    steps = ws.plan.steps
    if steps and isinstance(steps[-1], Prune) and steps[-1].granularity == granularity:
        return len(steps) - 1, steps[-1]
    return None, None


def replace_active_step(ws: Workspace, index: int | None, step: Prune | None, adjust: str | None = None) -> None:
    """Replace the active step (or append one); a step with nothing to do is removed.

    ``adjust`` names the control moved: one uninterrupted adjustment is one history entry.
    """
    if step is None:
        if index is not None:
            ws.remove_step(index, adjust=adjust)
        return
    if index is None:
        ws.add_step(step, adjust=adjust)
    else:
        ws.replace_step(index, step, adjust=adjust)


def active_report(ws: Workspace, index: int | None) -> StepReport | None:
    """What the active step decided (thresholds per layer in their unit), or None."""
    return ws.reports[index] if index is not None else None


# --- UI -------------------------------------------------------------------------------

def follow_criterion(ws: Workspace, criterion: str, granularity: str) -> None:
    """Picking another criterion while a step is edited switches that step to it at once
    (``Prune.with_criterion``: a threshold becomes the fraction it pruned), so the slider,
    the histograms and the model always show the plan."""
    index, step = active_step(ws, granularity)
    if step is not None and step.criterion != criterion:
        run_action(lambda: ws.replace_step(index, step.with_criterion(criterion, ws.reports[index])), now=True)


def target_ui(ws: Workspace, criterion: str, granularity: str) -> None:
    """Which step the controls edit, and the explicit way to prune further with a new step
    on top (drawn below the global control, so it never moves the control being dragged)."""
    index, last = active_step(ws, granularity)
    c1, c2 = st.columns([3, 1])
    if last is None:
        n = len(ws.plan.steps)
        c1.caption(f"Moving a control adds a new step{f' on top of the plan’s {n} step(s)' if n else ''}.")
        return
    c1.caption(f"The controls edit step {index + 1}: {last.describe()}. To keep it and prune further, "
               "add a new step on top.")
    c2.button("Add a step on top", key="prune_add_step", width="stretch",
              help="A new prune step (pruning nothing yet) after the last one; the controls then edit it.",
              on_click=run_action, args=(ws.add_step, Prune(criterion=criterion, granularity=granularity,
                                                            round_to=round_to(granularity),
                                                            sparsity=0.0, seed=last.seed)))


def round_to_ui(ws: Workspace, granularity: str) -> None:
    """Kept widths rounded to a multiple (8 by default): real kernels are fastest on round widths."""
    if granularity not in ROUNDED:
        return
    ss = st.session_state
    ss.setdefault("prune_round_to", 8)

    def on_change():
        if widget_echo.is_echo(ss, "prune_round_to"):  # the browser's value from before the plan moved
            return
        idx, cur = active_step(ws, granularity)
        if cur is not None:
            v = int(ss["prune_round_to"])
            run_action(ws.replace_step, idx, dataclasses.replace(cur, round_to=v if v > 1 else None))

    st.number_input(f"Keep {granularity}s in multiples of", 1, 256, key="prune_round_to", step=1, on_change=on_change,
                    help="Each layer keeps the multiple of this nearest to what the amount asks (at least one "
                         "multiple); 1 turns rounding off. Round widths stay fast on real kernels.")
    widget_echo.drawn(ss, "prune_round_to")


def _sync_widgets(ws: Workspace, step: Prune | None, granularity: str) -> None:
    """Put the edited step's values into the widgets when the plan or what the controls
    edit changed (undo, another criterion or granularity), or when Streamlit dropped the
    widgets' values (it does for widgets of a page the person left)."""
    ss = st.session_state
    key = (ws.name, ws.plan.key(), granularity)
    if ss.get("_prune_synced") == key and "global_sparsity" in ss and "global_mode" in ss:
        return
    ss["_prune_synced"] = key
    if step is not None and granularity in ROUNDED:
        widget_echo.wrote(ss, "prune_round_to", step.round_to or 1)
    if step is not None and step.threshold is not None and granularity == "weight":
        ss["global_mode"] = "threshold"
        widget_echo.wrote(ss, "global_threshold", float(step.threshold))
    else:  # the browser may send its old value back before it gets this one (widget_echo)
        widget_echo.wrote(ss, "global_sparsity",
                          float(step.sparsity) if step is not None and step.sparsity is not None else 0.0)
        if granularity != "weight":
            ss["global_mode"] = "sparsity"


def apply_global(ws: Workspace, criterion: str, granularity: str) -> None:
    """Put the global control's value (its slider or its handle) into the active step."""
    ss = st.session_state
    idx, cur = active_step(ws, granularity)
    layers = cur.layers if cur else ()
    if ss["global_mode"] == "sparsity":
        s = float(ss["global_sparsity"])
        new = Prune(criterion=criterion, granularity=granularity, sparsity=s, layers=layers,
                    round_to=cur.round_to if cur else round_to(granularity),
                    seed=cur.seed if cur else 0) if (s > 0 or layers) else None
    else:
        t = float(ss["global_threshold"])
        new = Prune(criterion=criterion, granularity=granularity, threshold=t, layers=layers,
                    seed=cur.seed if cur else 0) if (t > 0 or layers) else None
    if new != cur:  # the same step (a value Streamlit put back): the plan stays as it is
        run_action(replace_active_step, ws, idx, new, f"global_{ss['global_mode']}")
    ss["_prune_synced"] = (ws.name, ws.plan.key(), granularity)


def global_control_ui(ws: Workspace, criterion: str, granularity: str, wmax: float) -> None:
    """Global amount: a target sparsity, or a threshold in the criterion's unit (magnitude |w|
    for l1 weights, the only threshold mode with a fixed scale)."""
    ss = st.session_state
    index, step = active_step(ws, granularity)
    modes = ["sparsity", "threshold"] if (granularity == "weight" and criterion == "l1") else ["sparsity"]
    if ss.get("global_mode") not in modes:
        ss["global_mode"] = modes[0]

    def on_change():
        if not widget_echo.is_echo(ss, f"global_{ss['global_mode']}"):  # not the value shown before the plan moved
            apply_global(ws, criterion, granularity)

    c1, c2 = st.columns([1, 3])
    c1.radio("Set by", modes, key="global_mode", horizontal=True,
             help="Target a fraction of units to prune, or a threshold in the score's units.")
    unit = {"weight": "weights", "neuron": "neurons", "channel": "channels", "head": "heads"}[granularity]
    # value=: what Streamlit falls back to when a client sends a value outside the range;
    # the plan's own value, so such a value leaves the plan as it was (the widget's default,
    # 0, would remove the prune step)
    if ss["global_mode"] == "sparsity":
        now = float(step.sparsity) if step is not None and step.sparsity is not None else 0.0
        c2.slider(f"Global sparsity (fraction of {unit} pruned)", 0.0, 0.99, value=min(now, 0.99), step=0.01,
                  key="global_sparsity", on_change=on_change, format="%.2f",
                  help="Applies to every prunable layer without an override. Arrow keys move it by 0.01.")
        widget_echo.drawn(ss, "global_sparsity")
    else:
        ss.setdefault("global_threshold", 0.0)
        ss["global_threshold"] = min(float(ss["global_threshold"]), wmax)
        unit = threshold_unit(criterion, granularity)
        now = float(step.threshold) if step is not None and step.threshold is not None else 0.0
        c2.slider(f"Global threshold in {unit} (weights below it are pruned)", 0.0, wmax, value=min(now, wmax),
                  step=wmax / 200, key="global_threshold", on_change=on_change, format="%.4f")
        widget_echo.drawn(ss, "global_threshold")


def drags(criterion: str, granularity: str) -> bool:
    """Whether the histograms take a drag: weight magnitudes (l1 weights), whose |w| bins
    map a handle to a threshold and to the fraction pruned."""
    return granularity == "weight" and criterion == "l1"


def take_drags(ws: Workspace, criterion: str, granularity: str) -> tuple[int | None, Prune | None]:
    """Apply a handle released on a histogram since the last run, as its slider would (the
    slider's key gets the value first: one value both show). Returns the active step."""
    ss = st.session_state
    mode, layer = ss.get("global_mode"), ss.get("layer")
    v = threshold_drag.take("drag_global", f"{ws.name}:{mode}")
    if v is not None and drags(criterion, granularity) and mode is not None:
        widget_echo.wrote(ss, f"global_{mode}", v)
        apply_global(ws, criterion, granularity)
    v = threshold_drag.take("drag_layer", threshold_drag.layer_ident(ws.name, granularity, layer))
    if v is not None and layer is not None:  # the weights' or the scores' handle of the selected layer
        widget_echo.wrote(ss, f"ov_{ws.name}_{layer}", v)
        apply_override(ws, layer, criterion, granularity)
    return active_step(ws, granularity)


def layer_share(ws: Workspace, layer: str, granularity: str, index: int | None,
                report: StepReport | None) -> float:
    """The fraction of ``layer``'s units of ``granularity`` (its weights, or the units of the
    group it produces) that the active step prunes, read from the step's report; 0 without one."""
    if report is None:
        return 0.0
    key = layer
    if granularity != "weight" and layer not in report.units:
        group = group_of(ws.model_before(index), granularity, layer, ws.ctx)
        key = group.name if group is not None else layer
    pruned, total = report.units.get(key, (0, 0))
    return pruned / total if total else 0.0


def apply_override(ws: Workspace, layer: str, criterion: str, granularity: str) -> None:
    """Put the layer's override (its slider or its handle) into the active step."""
    ss = st.session_state
    wkey = f"ov_{ws.name}_{layer}"
    idx, cur = active_step(ws, granularity)
    v = float(ss[wkey])
    if cur is None:
        new = Prune(criterion=criterion, granularity=granularity, layers=(LayerOverride(layer, sparsity=v),),
                    round_to=round_to(granularity))
    else:
        new = cur.with_override(layer, sparsity=v)
    run_action(replace_active_step, ws, idx, new, wkey)
    ss[f"{wkey}_plan"] = (ws.plan.key(), granularity)


def layer_override_ui(ws: Workspace, layer: str, criterion: str, granularity: str,
                      report: StepReport | None) -> None:
    """Per-layer sparsity override for the selected layer, with a way to clear it. Without an
    override the slider shows the fraction the global amount prunes in this layer (moving it
    sets an override from there)."""
    ss = st.session_state
    index, step = active_step(ws, granularity)
    ov = step.override_for(layer) if step else None
    wkey = f"ov_{ws.name}_{layer}"
    synced = (ws.plan.key(), granularity)  # the plan or what the controls edit changed: show what applies
    if ss.get(f"{wkey}_plan") != synced:
        ss[f"{wkey}_plan"] = synced
        applies = ov.sparsity if ov and ov.sparsity is not None else layer_share(ws, layer, granularity, index, report)
        widget_echo.wrote(ss, wkey, min(round(float(applies), 2), 0.99))  # rewritten as the global amount moves

    def on_change():
        if not widget_echo.is_echo(ss, wkey):  # the browser's value from before the plan moved: not a move
            apply_override(ws, layer, criterion, granularity)

    def clear():
        idx, cur = active_step(ws, granularity)
        if cur is None:
            return
        rest = [o for o in cur.layers if o.layer != layer]
        nothing_left = cur.sparsity is None and cur.threshold is None and not rest
        new = None if nothing_left else cur.with_override(layer)
        run_action(replace_active_step, ws, idx, new)

    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")  # room for the button's whole label
    unit = "weights" if granularity == "weight" else f"{granularity}s"
    label = (f"Override for {layer}: fraction of {unit} pruned (active)" if ov else
             f"Fraction of {unit} pruned in {layer} by the global amount (move to override)")
    c1.slider(label, 0.0, 0.99, step=0.01, key=wkey, on_change=on_change, format="%.2f",
              help="A per-layer sparsity replaces the global amount for this layer only. Without one, the "
                   "slider shows what the global amount prunes here; moving it sets an override from there.")
    widget_echo.drawn(ss, wkey)
    c2.button("Clear override", key=f"clear_{wkey}", on_click=clear, disabled=ov is None,
              width="stretch")
    st.caption("Or drag the line on this layer's histogram (its weights for l1, else its scores; focus the handle "
               "for arrow keys and Page Up / Down) to set the override. Click an overview bar to pick its layer.")
    t = report.thresholds.get(layer) if report else None
    if t is not None and math.isfinite(t):
        st.caption(f"Threshold in this layer: {report.threshold_unit} < {t:.4g}")


def layer_picker_ui(names: list[str], preferred: list[str] | None = None, granularity: str = "") -> str:
    """The selected layer. When the granularity changes and the selected layer has none of
    its units, the first layer that has some is selected (a layer picked by hand stays)."""
    ss = st.session_state
    regranulated = ss.get("_layer_granularity") != granularity
    ss["_layer_granularity"] = granularity
    if ss.get("layer") not in names or (regranulated and preferred and ss["layer"] not in preferred):
        ss["layer"] = next((n for n in names if preferred and n in preferred), names[0])
    return st.selectbox("Layer", names, key="layer", help="Or click a bar in the overview.")


def weights_histogram_ui(ws: Workspace, layer: str, h, report: StepReport | None, criterion: str,
                         granularity: str) -> None:
    """The selected layer's weights: with a handle for l1 weights (its override), else with the
    step's |w| threshold drawn (the handle of other criteria and granularities is on the scores)."""
    t1, t2 = st.columns(2)
    log = t1.toggle("Log count", key="hist_log")
    snap = t2.toggle("Snap to bin edges", key="hist_snap",
                     help="A dragged threshold handle stops only on the edges of the histogram's bins.")
    if h is not None and drags(criterion, granularity):
        threshold_drag.layer_histogram_ui(ws, layer, h, log=log, snap=snap,
                                          at=report.thresholds.get(layer) if report else None)
    elif h is not None:
        t = report.thresholds.get(layer) if report and report.threshold_unit == "|w|" else None
        st.plotly_chart(weight_histogram_figure(h, t, log=log, title=f"Weights of {layer}"),
                        width="stretch", key="hist")


@st.fragment
def prune_live_ui() -> None:
    """The live part of the page: controls, charts and metrics (reruns on its own)."""
    show_flashes()
    ws = get_workspace()
    criterion, granularity = importance_ui.criterion_ui("prune")
    follow_criterion(ws, criterion, granularity)
    index, step = active_step(ws, granularity)
    _sync_widgets(ws, step, granularity)
    index, step = take_drags(ws, criterion, granularity)  # a handle released on a histogram
    before = index if index is not None else len(ws.plan.steps)
    src = ws.model_before(before)  # the model the active step prunes
    report = active_report(ws, index)
    hists = weight_histograms(src, bins=100, memo=ws.ctx.memo(src))
    wmax = max((float(max(abs(h.edges[0]), abs(h.edges[-1]))) for h in hists.values()), default=1.0)
    global_control_ui(ws, criterion, granularity, wmax)
    if drags(criterion, granularity):
        threshold_drag.global_histogram_ui(ws, src, wmax, report.global_threshold if report else None)
    round_to_ui(ws, granularity)
    hf_constraint_ui.loadable_toggle_ui(ws, index, step, report)
    target_ui(ws, criterion, granularity)

    m, base = current_metrics(ws, provisional=True)  # a slow model: a first readout on the glimpse
    pending = metrics_panel_ui(ws, m, base)
    m, base = refine_ui(ws, m, base, pending)  # then the quick figures, drawn in its place

    table = layer_sparsity(ws.base, ws.float_model, ws.ctx.memo(ws.float_model))
    names, sp, params = table.names, table.sparsity, table.params
    if report is not None:
        t_global = report.global_threshold
        if granularity == "weight" and t_global is not None and math.isfinite(t_global):
            st.caption(f"Global threshold: {report.threshold_unit} < {t_global:.4g} → sparsity "
                       f"{fmt.pct(m.sparsity)} of prunable weights. {report.summary}.")
        elif report.summary:
            st.caption(f"This step: {report.summary}.")

    left, right = st.columns([1, 1])
    with left:
        layer = layer_picker_ui(names, importance_ui.unit_layers(ws, src, granularity), granularity)
        def on_click():
            pts = st.session_state["overview"]["selection"]["points"]
            if pts:
                cd = pts[0].get("customdata")
                name = cd[0] if isinstance(cd, (list, tuple)) else (cd or pts[0].get("x"))
                if name in names:
                    st.session_state["layer"] = name

        st.plotly_chart(overview_figure(names, sp, params, selected=layer), width="stretch",
                        key="overview", on_select=on_click, selection_mode="points")
        layer_override_ui(ws, layer, criterion, granularity, report)
    with right:
        h = hists.get(layer)
        weights_histogram_ui(ws, layer, h, report, criterion, granularity)
        if h is not None:
            i = names.index(layer)
            pruned = int(round(sp[i] * params[i]))
            st.markdown(f"**{layer}**: {fmt.count(pruned)} of {fmt.count(params[i])} weights pruned "
                        f"(**{fmt.pct(sp[i])}**)")
        if (granularity != "weight" or criterion != "l1"):
            importance_ui.importance_section_ui(ws, layer, criterion, granularity, index)

    per_class_ui(ws, m, base)
    changes_panel_ui(ws, "prune")
    if granularity != "weight":
        importance_ui.structured_metrics_ui(base, m, pending)
    with st.expander("Recover accuracy: fine-tune or distil", key="prune_recover_open", on_change="rerun"):
        recover_ui(ws, "prune", criterion, granularity)
    oneshot_ui.oneshot_panel_ui(ws)  # magnitude, Wanda and reconstruction at one sparsity, side by side
    with st.expander("Plan", expanded=True):
        plan_ui(ws, "prune")
    full_eval_ui(ws, "prune")
    with st.expander("Compare criteria on this layer"):
        importance_ui.compare_criteria_ui(ws, layer, granularity)
    latency_ui(ws, pending)


def page() -> None:
    ws = get_workspace()
    st.markdown(f"### Prune · {ws.name}")
    prune_live_ui()


page()
