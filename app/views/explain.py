"""Explain: which examples the plan's edits changed, how the confusion moved, and where
inside the network the current model departs from the base."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import formatting as fmt
from core.explain import attribution_pair, changes, divergence, unit_report
from core.prune.structured import prunable_units
from core.viz.explain import (activation_figure, attribution_figure, confusion_delta_figure, confusion_figure,
                              divergence_figure)

from app.components import run_action
from app.state import get_workspace, show_flashes

CARDS = 24  # changed examples shown at once


def cached(fn, ws, *args, **kwargs):
    """``fn(ws, *args, **kwargs)`` computed once per plan: a click elsewhere on the page
    (a class filter, another unit) does not run the models again. Keeps the last 16."""
    cache = st.session_state.setdefault("_explain_cache", {})
    key = (fn.__name__, ws.name, ws.plan.key(), args, tuple(sorted(kwargs.items())))
    if key not in cache:
        while len(cache) >= 16:
            cache.pop(next(iter(cache)))
        cache[key] = fn(ws, *args, **kwargs)
    return cache[key]


def _image(x) -> np.ndarray | None:
    """An example as an 8-bit picture (grey or RGB), enlarged, or None when it is not one."""
    a = x.detach().float().cpu().numpy()
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        return None
    a = (a - a.min()) / max(1e-8, float(a.max() - a.min()))
    a = (255 * a).astype(np.uint8)
    scale = max(1, 96 // a.shape[1])
    a = np.kron(a, np.ones((1, scale, scale), dtype=np.uint8))
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def gallery_ui(ws, ch) -> None:
    classes = ch.classes
    rows_all = ch.changed()
    c1, c2 = st.columns([1, 3])
    pick = c1.selectbox("Class", ["all"] + classes, key="explain_class",
                        help="Examples whose label or either prediction is this class.")
    cls = None if pick == "all" else classes.index(pick)
    rows = ch.changed(cls=cls)
    c2.markdown(f"**{len(rows_all)} of {len(ch.pred)}** predictions changed on the {ch.subset} subset"
                + (f"; {len(rows)} involve class {pick}" if cls is not None else "")
                + ". Largest confidence drop first (the base's confidence in its prediction minus the current "
                  "model's in that class).")
    if not rows:
        st.info("No prediction changed: the current model predicts what the base does on every example here.")
        return
    cols = st.columns(6)
    for i, r in enumerate(rows[:CARDS]):
        img = _image(ws.evalset.x[r["index"]])
        cap = (f"#{r['index']} · label {classes[r['label']]}\nbase {classes[r['base_pred']]} "
               f"({fmt.pct(r['base_conf'], 0)}) → {classes[r['pred']]} ({fmt.pct(r['conf'], 0)})")
        with cols[i % 6]:
            if img is not None:
                st.image(img, caption=cap, width=96)
            else:
                st.caption(cap)
    if len(rows) > CARDS:
        st.caption(f"{CARDS} of {len(rows)} shown; `prunescope explain --json` lists them all.")


def page() -> None:
    show_flashes()
    ws = get_workspace()
    st.markdown(f"### Explain · {ws.name}")
    st.caption(f"What the plan's {len(ws.plan.steps)} step(s) changed, base against current, on the evaluation set.")
    if not ws.plan.steps:
        st.info("The plan has no steps yet: the current model is the base. Prune or cut something first.")
        return
    subset = st.radio("Examples", ["quick", "full"], horizontal=True, key="explain_subset",
                      format_func=lambda s: f"quick subset ({len(ws.evalset.quick_index)})" if s == "quick"
                      else f"full test split ({len(ws.evalset.y)})")
    ch = run_action(cached, changes, ws, subset, now=True)
    if ch is None:
        return
    st.markdown("#### Changed predictions")
    gallery_ui(ws, ch)
    left, right = st.columns(2)
    with left:
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
    with right:
        rows = run_action(cached, divergence, ws, subset, now=True)
        if rows is not None:
            st.plotly_chart(divergence_figure(rows), width="stretch", key="explain_divergence")
            low = min((r for r in rows if r["cka"] is not None), key=lambda r: r["cka"], default=None)
            if low is not None:
                st.caption(f"Lowest CKA: {low['layer']} ({low['cka']:.3f}). Linear CKA of each layer's outputs, base "
                           "against current, on the same examples (1 = the same representation up to rotation and "
                           "scale; a cut layer is a gap).")
    attribution_ui(ws, ch)
    unit_ui(ws, subset)



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
    r = run_action(cached, unit_report, ws, layer, int(unit), gran, subset=subset, top=12, now=True)
    if r is None:
        return
    status = ("removed by step " + str(r["removed_by_step"]) if r["removed"] else
              "kept by the plan" if r["removed"] is False else
              "whether the plan removes it is known only for one structured step of this kind applied to the base")
    st.markdown(f"**{layer}, {gran} {unit}** of the base model: {status}.")
    cols = st.columns(6)
    for i, t in enumerate(r["top"]):
        img = _image(ws.evalset.x[t["index"]])
        cap = f"#{t['index']} · label {ws.evalset.classes[int(ws.evalset.y[t['index']])]} · {t['activation']:.3g}"
        with cols[i % 6]:
            if img is not None:
                st.image(img, caption=cap, width=96)
            else:
                st.caption(cap)
    left, right = st.columns(2)
    left.plotly_chart(activation_figure(r["activations"], title=f"Activation of {gran} {unit} over the {subset} "
                                        "subset"), width="stretch", key="explain_unit_hist")
    right.dataframe(pd.DataFrame([{"criterion": k, "score": v} for k, v in r["scores"].items()]), hide_index=True,
                    width="stretch", height=260, column_config={"score": st.column_config.NumberColumn(
                        format="%.3f", help="Normalised score: 1.0 = the layer's mean unit")})
    g = r["coupled"]
    st.markdown(f"**Removed with it** (Torch-Pruning's dependency graph, group {g['group']}): "
                f"{len(g['layers'])} layer(s).")
    st.dataframe(pd.DataFrame([{"layer": x["layer"], "type": x["type"],
                                "loses": {"out": "output channels", "in": "input channels"}.get(x["role"], "entries"),
                                "indices": ", ".join(map(str, x["indices"][:16])) + (" …" if len(x["indices"]) > 16
                                                                                    else "")}
                               for x in g["layers"]]), hide_index=True, width="stretch")


def _units(ws, granularity: str) -> dict[str, int]:
    cache = st.session_state.setdefault("_explain_units", {})
    key = (ws.name, granularity)
    if key not in cache:
        cache[key] = run_action(prunable_units, ws.base, granularity, ws.ctx, now=True) or {}
    return cache[key]


def attribution_ui(ws, ch) -> None:
    st.markdown("#### Where each model looks")
    rows = ch.changed()
    options = [r["index"] for r in rows] or ch.indices[:50]
    index = st.selectbox("Example (changed ones first)", options, key="explain_attr_index",
                         help="Input gradients of each model for its own prediction.")
    r = run_action(cached, attribution_pair, ws, int(index), now=True)
    if r is None:
        return
    img = ws.evalset.x[int(index)]
    if img.dim() != 3:
        st.caption("Attribution maps are drawn for images.")
        return
    cls = ch.classes
    st.plotly_chart(attribution_figure(img.float().mean(0).tolist(), r["base_map"].tolist(), r["map"].tolist(),
                                       [f"example #{index} (label {cls[r['label']]})",
                                        f"base → {cls[r['base_pred']]}", f"current → {cls[r['pred']]}"]),
                    width="stretch", key="explain_attr")


page()
