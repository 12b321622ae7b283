"""Hugging Face models on the Prune and Export pages: the "Loadable by transformers" toggle, the
``hf`` folder export's checkbox, its refusal with the nearest loadable plan, and its download."""
from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import streamlit as st

from app.messages import flash, run_action
from core.ground import formatting as fmt
from core.io.hf_export import HF_DESCRIPTION, HF_FORMAT
from core.io.hf_pad import NOTHING_PADDED, PAD_MARK
from core.io.hf_shapes import (
    LOADABLE_ROUND,
    NotLoadableError,
    loadable_config,
    loadable_layers,
    loadable_plan,
    uniform_amount,
)
from core.prune import LayerOverride
from core.prune.structured import group_info


def is_hf(ws) -> bool:
    """The workspace's model is a transformers model loaded from a folder."""
    return type(getattr(ws.base, "hf", None)).__module__.split(".")[0] == "transformers"


def _amount(step, report, layers: list[str], prev: float | None) -> float:
    """The one amount for every block: what the person just moved (the global amount, else a
    block's override that differs from ``prev``, the amount before), else the share the step removed."""
    if prev is None or (step.sparsity is not None and step.sparsity != prev):
        return step.sparsity if step.sparsity is not None else uniform_amount(step, report, layers)
    moved = [o.sparsity for o in step.layers if o.layer in layers and o.sparsity not in (None, prev)]
    return moved[-1] if moved else prev


def constrained_step(ws, index: int, step, report, prev: float | None = None):
    """The active step as one a transformers config can say, or None when nothing of its
    granularity is: one amount (``prev``: the amount before the person's edit; :func:`_amount`)
    as the global amount and as an override on the one layer per block that loses units, a zero
    override on every other group of the granularity (the hidden width stays), MLP widths in
    multiples of 8. The global slider, the per-layer sliders and the report read it as it is."""
    model = ws.model_before(index)
    layers = loadable_layers(model, step.granularity)
    if not layers:
        return None
    amount = round(float(_amount(step, report, layers, prev)), 6)
    others = [g.name for g in group_info(model, step.granularity, ws.ctx) if not set(g.producers) & set(layers)]
    width = model.get_submodule(layers[0]).out_features if step.granularity == "neuron" else 0
    return dataclasses.replace(step, sparsity=amount, threshold=None,
                               layers=tuple([LayerOverride(n, amount) for n in layers]
                                            + [LayerOverride(n, 0.0) for n in others]),
                               round_to=LOADABLE_ROUND if width and width % LOADABLE_ROUND == 0 else None)


def _turned(ws) -> None:
    """The toggle moved; turned off, the person's own step comes back if nothing but the toggle
    (and the controls under it) changed the plan since, else the page says what it keeps."""
    ss = st.session_state
    made = ss.pop("_hf_loadable_made", None)
    if ss.get("prune_hf_loadable"):
        return
    if made and made[0] == ws.name and made[1] == ws.plan.key():
        run_action(ws.replace_step, made[2], made[3], success=f"Loadable by transformers is off: step {made[2] + 1} "
                   f"is yours again ({made[3].describe()}).")
    elif made is None:
        flash("info", "Loadable by transformers is off; it changed nothing, so the plan is as you made it.")
    else:
        flash("info", "Loadable by transformers is off; the plan is kept as it is (changed since the toggle last "
                      "changed it): undo steps back through its changes.")


def _not_loadable(ws) -> list[str]:
    try:
        loadable_config(ws.model.hf)
    except NotLoadableError as exc:
        return exc.reasons
    return []


def loadable_toggle_ui(ws, index: int | None, step, report) -> None:
    """A toggle (Hugging Face models only). Turned on, a structured prune step whose model a
    config cannot say becomes :func:`constrained_step`, and from then on every edit of it by the
    controls is put back in that form (a moved amount applies to every block); a step loadable as
    it is stays. Turned off, the person's step comes back (:func:`_turned`)."""
    if not is_hf(ws):
        return
    ss = st.session_state
    on = st.toggle("Loadable by transformers", key="prune_hf_loadable", on_change=_turned, args=(ws,),
                   help="Keep the plan exportable as a folder transformers loads on its own: the same amount from "
                        "every block (the config holds one width for all layers), MLP widths in multiples of 8, and "
                        "no removed heads where the architecture cannot say them (BERT, GPT-2).")
    if not on or index is None or step is None or step.granularity == "weight":
        return
    made = ss.get("_hf_loadable_made")
    held = bool(made) and made[0] == ws.name and made[2] == index  # a step the toggle made: kept in form
    reasons = _not_loadable(ws)
    new = constrained_step(ws, index, step, report, made[4] if held else None) if held or reasons else step
    if new == step:
        st.caption(f"Loadable by transformers: every block loses {fmt.pct(step.sparsity)} of its {step.granularity}s; "
                   "moving the global slider or one block's slider sets it for every block." if held else
                   "Loadable by transformers as it is: the config can say every shape.")
        if reasons:
            st.warning("Other steps keep the model from loading: " + "; ".join(reasons) +
                       ". The Export page offers the nearest loadable plan.")
    elif new is None:
        st.warning(f"Removed {step.granularity}s cannot be loaded by transformers for this architecture; turn the "
                   "toggle off to keep this step, choose another granularity, or export with 'Pad with zeros' "
                   "(the Export page writes removed heads back as zeros).")
    elif run_action(ws.replace_step, index, new, now=True) is not None:
        ss["_hf_loadable_made"] = (ws.name, ws.plan.key(), index, made[3] if held else step, new.sparsity)
        st.rerun()


def hf_format_ui(ws) -> list[str]:
    """The ``hf`` folder format's checkbox and, under it, its zero-padding option (Hugging Face
    models only). Returns ``["hf"]`` when chosen."""
    if not is_hf(ws):
        return []
    if not st.checkbox("hf (folder)", value=False, key="export_hf", help=HF_DESCRIPTION):
        return []
    st.checkbox("Pad with zeros where the config cannot say the pruned shapes", value=False, key="export_hf_pad",
                help="Removed heads (BERT, GPT-2; per-layer counts in Llama) and MLP neurons (widths that differ "
                     "per layer) are written back as zeros up to shapes the config can say, where they were when "
                     "the plan's reports say so. The outputs stay exactly the pruned model's; the folder is "
                     "larger. Removed hidden width (BERT, GPT-2) cannot be padded.")
    return [HF_FORMAT]


def hf_export_options(ws) -> dict:
    """What ``export_all`` needs for the ``hf`` format: ``pad`` (the checkbox) and the plan's reports."""
    return {"pad": bool(st.session_state.get("export_hf_pad")) and is_hf(ws), "reports": ws.reports}


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.iterdir()):
            z.write(p, f"{folder.name}/{p.name}")
    return buf.getvalue()


def hf_result_ui(ws, results) -> None:
    """The folder's download (a zip, made when clicked), or, when refused, the nearest loadable plan to apply."""
    r = next((r for r in results if r.format == HF_FORMAT), None)
    if r is None:
        return
    padded = [p for p in (r.note or "").split("; ") if PAD_MARK in p or p == NOTHING_PADDED]
    if padded:
        st.info("hf folder: " + padded[0])
    if r.path and Path(r.path).is_dir():
        folder = Path(r.path)
        st.download_button("hf folder (.zip)", data=lambda: _zip(folder), file_name=f"{folder.name}.zip",
                           key="dl_hf_zip", on_click="ignore", icon=":material/download:",
                           help="config.json, model.safetensors, tokenizer files and the recipe; "
                                "transformers' from_pretrained reads the unpacked folder")
        return
    if not r.error or "NotLoadableError" not in r.error:
        return
    plan, notes = loadable_plan(ws.plan, ws.model_before, ws.reports)
    st.info("The nearest plan transformers can load: " + "; ".join(notes or ["no step changes"])
            + ("" if "zero-padding cannot" in r.error else
               ". Or tick 'Pad with zeros' under hf (folder) and export again: same outputs, a larger folder."))
    if notes and st.button("Apply the loadable plan", key="export_hf_apply", icon=":material/auto_fix_high:",
                           help="Makes it the current plan (one undo takes it back); then export again."):
        if run_action(ws.set_plan, plan, success="Applied the loadable plan; export again.", now=True) is not None:
            st.rerun()


__all__ = ["is_hf", "loadable_toggle_ui", "hf_format_ui", "hf_export_options", "hf_result_ui"]
