"""Explain: which examples the plan's edits changed, how the confusion moved, and where
inside the network the current model departs from the base."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.explain_ui import boxes_gallery_ui, cached, cards_ui, dense_gallery_ui, flow_gallery_ui, gallery_ui
from app.messages import run_action, show_flashes
from app.session import get_workspace
from core.explain import MAX_CONFUSION_CLASSES, flow_leaf, layer_order
from core.ground.outputs import NEST_KINDS
from core.prune.structured import prunable_units
from core.viz.explain import (
    LOSES,
    activation_figure,
    attribution_figure,
    confusion_delta_figure,
    confusion_figure,
    coupled_group_figure,
    divergence_figure,
    what_it_loses,
)
from core.workspace import Workspace


def page() -> None:
    show_flashes()
    ws = get_workspace()
    st.markdown(f"### Explain · {ws.name}")
    st.caption(f"What the plan's {len(ws.plan.steps)} step(s) changed, base against current, on the evaluation set.")
    if not ws.plan.steps:
        st.info("The plan has no steps yet: the current model is the base, so nothing changed. Prune or cut "
                "something first; a unit of the base can be explained already.")
        unit_ui(ws, "quick")
        return
    if st.session_state.pop("_explain_focus_unit", False):  # opened from a unit table: the unit first
        unit_ui(ws, "quick")
        st.divider()
    subset = st.radio("Examples", ["quick", "full"], horizontal=True, key="explain_subset",
                      format_func=lambda s: f"quick subset ({len(ws.evalset.quick_index)})" if s == "quick"
                      else f"full test split ({len(ws.evalset.y)})")
    if ws.evaluator.output in NEST_KINDS:  # no predicted class per example to list or attribute
        dense = ws.evaluator.output == "dense"
        flow = run_action(flow_leaf, ws.evaluator, now=True) if ws.evaluator.output == "nest" else None
        kind = {"dense": "a dense class map", "detection": "boxes per image"}.get(
            ws.evaluator.output, f"an optical flow (`{flow}`) of each image pair" if flow else "a nest of tensors")
        how = ("by the base's boxes it finds again (the box figures are on the Prune page)"
               if ws.evaluator.output == "detection" else
               "leaf by leaf against the base (the per-leaf figures are on the Prune page)")
        shown = ("The examples whose class map changed most are below; the confusion matrix and attribution maps"
                 if dense else "The images whose boxes changed most are below; the confusion matrix and attribution "
                 "maps" if ws.evaluator.output == "detection" else
                 "The examples whose flow changed most are below; the confusion matrix and attribution maps" if flow
                 else "Changed examples, the confusion matrix and attribution maps")
        st.info(f"This model's output is {kind}, judged {how}. {shown}" +
                " explain one predicted class per example, so they are not shown; how each layer's representation "
                "moved and what a unit responds to are below.")
        if ws.evaluator.output == "detection":  # a detector: its boxes, base against current
            bc = run_action(cached, Workspace.box_changes, ws, subset, now=True)
            if bc is not None:
                boxes_gallery_ui(ws, bc)
        if ws.evaluator.output == "dense":  # a segmenter: its class maps, base against current
            dc = run_action(cached, Workspace.dense_changes, ws, subset, now=True)
            if dc is not None:
                dense_gallery_ui(ws, dc)
        if flow:  # optical flow: the pair and its flows, base against current
            fc = run_action(cached, Workspace.flow_changes, ws, subset, now=True)
            if fc is not None:
                flow_gallery_ui(ws, fc)
        _divergence_ui(ws, subset)
        unit_ui(ws, subset)
        return
    ch = run_action(cached, Workspace.changes, ws, subset, now=True)
    if ch is None:
        return
    embedding = ch.output == "embedding"  # features: no predictions, labels or confusion to show
    st.markdown("#### Examples whose embedding moved most" if embedding else "#### Changed predictions")
    gallery_ui(ws, ch)
    left, right = st.columns(2)
    if embedding:
        left.caption("No confusion matrix: this model's output is an embedding, not class scores; the examples "
                     "above moved most from the base's embedding (lowest cosine).")
    elif len(ch.classes) > MAX_CONFUSION_CLASSES:
        left.caption(f"No confusion matrix: {len(ch.classes):,} classes (a language model's vocabulary) are more "
                     f"than the {MAX_CONFUSION_CLASSES:,} one can show; the changed predictions above are the "
                     "examples it would count.")
    else:
        _confusion_ui(left, ch)
    with right:
        _divergence_ui(ws, subset)
    attribution_ui(ws, ch)
    unit_ui(ws, subset)


def _divergence_ui(ws, subset: str) -> None:
    """Linear CKA of each layer's outputs, base against current."""
    rows = run_action(cached, Workspace.divergence, ws, subset, now=True)
    if rows is not None:
        st.plotly_chart(divergence_figure(rows), width="stretch", key="explain_divergence")
        low = min((r for r in rows if r["cka"] is not None), key=lambda r: r["cka"], default=None)
        if low is not None:
            st.caption(f"Lowest CKA: {low['layer']} ({low['cka']:.3f}). Linear CKA of each layer's outputs, base "
                       "against current, on the same examples (1 = the same representation up to rotation and "
                       "scale; a cut layer, or one whose output is not one row per example, is a gap).")



def _confusion_ui(col, ch) -> None:
    with col:
        which = st.radio("Confusion", ["difference", "base", "current"], horizontal=True, key="explain_confusion_of",
                         help="Counts of [true class, predicted class]: the base's, the current model's, or "
                              "current minus base.")
        if which == "difference":
            fig = confusion_delta_figure(ch.confusion_delta(), ch.classes)
        else:
            fig = confusion_figure(ch.confusion(which), ch.classes, title=f"Confusion of the {which} model")
        st.plotly_chart(fig, width="stretch", key=f"explain_confusion_{which}")
        if which == "difference":
            st.caption("Counts of [true class, predicted class], current minus base: blue on the diagonal and red "
                       "off it are examples the edit broke; red on the diagonal and blue off it, examples it fixed.")


def unit_ui(ws, subset: str) -> None:
    """One unit of the base model: what it responds to, how every criterion scores it, what
    goes with it, and whether the plan removes it."""
    st.markdown("#### What a unit responds to")
    grans = [g for g in ("channel", "neuron", "head") if _units(ws, g)]
    if not grans:
        st.info("This model has no prunable units.")
        return
    c = st.columns(3)
    gran = c[0].selectbox("Granularity", grans, key="explain_unit_gran")
    units = _units(ws, gran)
    layer = c[1].selectbox("Layer", list(units), key="explain_unit_layer")
    n = units[layer]
    ss = st.session_state
    if int(ss.get("explain_unit", 0)) >= n:
        ss["explain_unit"] = 0
    unit = c[2].number_input(f"Unit (0 to {n - 1})", 0, n - 1, key="explain_unit", step=1)
    r = run_action(cached, Workspace.unit_report, ws, layer, int(unit), gran, subset=subset, top=12, now=True)
    if r is None:
        return
    note = _left_out_note(run_action(cached, _output_layer, ws, now=True), units, r["coupled"], gran)
    if note:
        st.caption(note)
    status = ("removed by step " + str(r["removed_by_step"]) if r["removed"] else
              "kept by the plan" if r["removed"] is False else
              "whether the plan removes it is known only for one structured step of this kind applied to the base")
    what = r["coupled"].get("unit_name") or f"{gran} {unit}"
    label = f" ({r['coupled']['label']})" if r["coupled"].get("label") else ""
    st.markdown(f"**{layer}{label}, {what}** of the base model: {status}.")
    if gran == "channel":
        st.caption("Top-activating examples; the red box is the input region the channel's largest activation "
                   "depends on (its receptive field there, from the input gradient of that one activation).")
    classes = ws.evalset.classes
    # an embedding's "classes" are its dimensions, a mask is a label per pixel: no one label per example
    labelled = ws.evaluator.output != "embedding" and ws.evalset.y.dim() == 1

    def card(t: dict) -> str:
        label = f" · label {classes[int(ws.evalset.y[t['index']])]}" if labelled else ""
        return f"#{t['index']}{label} · activation {t['activation']:.3g}"

    cards_ui(ws, [(t["index"], card(t), t.get("field")) for t in r["top"]])
    left, right = st.columns(2)
    left.plotly_chart(activation_figure(r["activations"], title=f"Activation of {what} over the {subset} "
                                        "subset"), width="stretch", key="explain_unit_hist")
    right.dataframe(pd.DataFrame([{"criterion": k, "score": v} for k, v in r["scores"].items()]), hide_index=True,
                    width="stretch", height=260, column_config={"score": st.column_config.NumberColumn(
                        format="%.3f", help="Normalised score: 1.0 = the layer's mean unit")})
    g = r["coupled"]
    st.markdown(f"**Removed with it** ({g['found_by']}, group {g['group']}): "
                f"{len(g['layers'])} layer(s).")
    order = run_action(cached, _layer_order, ws, now=True)
    if order:
        st.plotly_chart(coupled_group_figure(order, g), width="stretch", key="explain_unit_group")
    with st.expander("The same as a table"):
        _group_table(g)


def _layer_order(ws):
    return layer_order(ws.base, ws.evalset.quick()[0])


def _left_out_note(out_layer: str | None, units: dict[str, int], group: dict, gran: str) -> str | None:
    """Why the Layer list lacks the output layer (None when it does not): its outputs are the
    model's and never removed, though it may lose input channels with another layer's unit."""
    if not out_layer or out_layer in units:
        return None
    note = (f"The Layer list leaves out {out_layer}, the output layer: its outputs are the model's outputs and are "
            f"never removed, and a layer's last {gran} is never removed either (it would empty the layer).")
    if any(m["layer"] == out_layer for m in group["layers"]):
        note += f" {out_layer} is drawn below because it loses input channels with this unit."
    return note


def _output_layer(ws):
    from core.prune.structured.analysis import analysis

    return analysis(ws.base, ws.ctx).output_layer


def _group_table(g) -> None:
    st.dataframe(pd.DataFrame([{"layer": x["layer"], "type": x["type"],
                                "loses": LOSES[what_it_loses(x)],
                                "indices": ", ".join(map(str, x["indices"][:16])) + (" …" if len(x["indices"]) > 16
                                                                                    else "")}
                               for x in g["layers"]]), hide_index=True, width="stretch")


def _units(ws, granularity: str) -> dict[str, int]:
    """The base's prunable units of ``granularity`` per layer, kept in the apply context's
    memo of the base (an error is drawn here and not kept)."""
    memo, key = ws.ctx.memo(ws.base), ("explain_units", granularity)
    if key not in memo:
        got = run_action(prunable_units, ws.base, granularity, ws.ctx, now=True)
        if got is None:
            return {}
        memo[key] = got
    return memo[key]


def attribution_ui(ws, ch) -> None:
    st.markdown("#### Where each model looks")
    if not ws.evalset.x.is_floating_point():
        st.caption("Attribution maps follow the gradient of the output with respect to the input; this model reads "
                   "token ids, which have none, so there is no map to draw. The changed examples above show what "
                   "moved.")
        return
    rows = ch.changed()
    options = [r["index"] for r in rows] or ch.indices[:50]
    c1, c2 = st.columns([2, 1])
    index = c1.selectbox("Example (changed ones first)", options, key="explain_attr_index",
                         help="Each model's map for its own prediction.")
    maps = ["gradient"] + (["gradcam"] if run_action(cached, _has_feature_map, ws, now=True) else [])
    method = c2.radio("Map", maps, key="explain_attr_method", horizontal=True,
                      format_func={"gradient": "input gradient", "gradcam": "Grad-CAM"}.get,
                      help="Input gradient: |d logit / d pixel|. Grad-CAM: the last feature map weighted by the "
                           "mean gradient of each channel (convolutional models only).")
    r = run_action(cached, Workspace.attribution_pair, ws, int(index), method, now=True)
    if r is None:
        return
    img = ws.evalset.x[int(index)]
    if img.dim() != 3:
        st.caption("Attribution maps are drawn for images.")
        return
    cls = ch.classes
    name = {"gradient": "Input gradients", "gradcam": "Grad-CAM"}[method]
    st.plotly_chart(attribution_figure(img.float().mean(0).tolist(), r["base_map"].tolist(), r["map"].tolist(),
                                       [f"example #{index} (label {cls[r['label']]})",
                                        f"base → {cls[r['base_pred']]}", f"current → {cls[r['pred']]}"],
                                       title=f"{name}: where each model looks"),
                    width="stretch", key="explain_attr")


def _has_feature_map(ws) -> bool:
    from core.explain import last_feature_map

    return ws.evalset.x.dim() == 4 and last_feature_map(ws.base, ws.evalset.x[0]) is not None


page()
