"""Export: write the current plan's model in several formats, verify each, download."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.graph_diff_ui import current_diff
from app.hf_constraint_ui import hf_export_options, hf_format_ui, hf_result_ui
from app.messages import run_action, show_flashes
from app.netron_ui import netron_ui
from app.session import get_workspace
from core.ground import formatting as fmt
from core.ground.files import SessionFolder
from core.io import EXPORTERS, ExportResult, export_all, list_exporters
from core.plan import Plan
from core.viz.report import workspace_report_html

EXPORT_BATCH = 16  # eval examples used to trace and verify


# --- pure helpers (tested without a browser) ---------------------------------------

def valid_stem(stem: str) -> bool:
    """A file name stem: letters, digits, '-' and '_' only (no paths)."""
    return bool(stem) and all(ch.isalnum() or ch in "-_" for ch in stem)


def results_frame(results: list[ExportResult], base_bytes: int | None) -> pd.DataFrame:
    """One row per format: size against the base model's safetensors size, verification."""
    rows = []
    for r in results:
        rows.append({
            "format": r.format,
            "file": Path(r.path).name if r.path else "–",
            "size": fmt.nbytes(r.bytes) if r.bytes else "–",
            "vs base": f"{r.bytes / base_bytes:.2f}×" if r.bytes and base_bytes else "–",
            "max |diff|": f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "–",
            "agreement": fmt.pct(r.agreement) if r.agreement is not None else "–",
            "verified": "yes" if r.verified else "no",
            "dynamic batch": {True: "yes", False: "no", None: "–"}[r.dynamic_batch],
            "seconds": round(r.seconds, 2),
            "error / note": r.error or r.note or "",
        })
    return pd.DataFrame(rows)


def _new_folder() -> Path:
    """A fresh folder for this session's export; the previous one is removed.

    The folder belongs to a ``SessionFolder`` kept in the session state: when the session
    ends (its state is dropped) or the server stops, the folder goes with it; folders of
    a server that was killed are swept when the next one starts (``app/session.py``).
    """
    ss = st.session_state
    old = ss.pop("export_folder", None)
    if old is not None:
        old.remove()
    ss["export_folder"] = folder = SessionFolder("export")
    ss["export_dir"] = str(folder.path)
    return folder.path


# --- widgets -------------------------------------------------------------------------

def formats_ui(quantised: bool = False) -> list[str]:
    """One checkbox per registered format (a quantised plan: ONNX only). Returns the chosen names."""
    names = list_exporters()
    cols = st.columns(len(names))
    return [n for n, c in zip(names, cols)
            if c.checkbox(n, value=n == "onnx" or not quantised, key=f"fmt_{n}_q" if quantised else f"fmt_{n}",
                          disabled=quantised and n != "onnx",
                          help=EXPORTERS.get(n).description if not quantised or n == "onnx" else
                          "A quantised (int8, onnxruntime) model exports as ONNX only.")]


def downloads_ui(results: list[ExportResult]) -> None:
    """Download buttons, one per file, labelled by what it holds (the file name is in the
    help); a file is read only when it is downloaded (and only if it exists)."""
    files = [(r.format, Path(r.path)) for r in results if r.path and Path(r.path).is_file()]  # hf: a folder
    recipe = next((Path(r.recipe) for r in results if r.recipe and Path(r.recipe).exists()), None)
    if recipe is not None:
        files.append(("recipe", recipe))
    if not files:
        return
    cols = st.columns(len(files))
    for c, (what, p) in zip(cols, files):
        c.download_button(what, data=p.read_bytes, file_name=p.name, key=f"dl_{p.name}", on_click="ignore",
                          icon=":material/download:", width="stretch",
                          help=f"{p.name}, {fmt.nbytes(p.stat().st_size)}")


def int8_ui(ws) -> None:
    """The int8 model beside the float one it was made from (both ONNX, onnxruntime)."""
    from core.recover.quantize import compare_with_float

    st.markdown("#### int8 against float")
    st.caption("A quantised plan exports as ONNX only (the int8 file). Here it is beside the float model it was "
               "made from, both run by onnxruntime: agreement of their predictions on the full test split, file "
               "size, and latency timed interleaved at the same batch and threads.")
    if not st.button("Compare int8 with float", key="export_int8_cmp", icon=":material/compare_arrows:"):
        got = st.session_state.get("export_int8")
        if not got or got[0] != (ws.name, ws.plan.key()):
            return
        r = got[1]
    else:
        with st.spinner("Exporting the float model, timing both interleaved…"):
            r = run_action(compare_with_float, ws, now=True)
        if r is None:
            return
        st.session_state["export_int8"] = ((ws.name, ws.plan.key()), r)
    lf, lq = r["float_latency"], r["int8_latency"]
    st.dataframe(pd.DataFrame([
        {"model": "float (ONNX)", "size": fmt.nbytes(r["float_bytes"]), "latency": fmt.ms(lf.median_ms, lf.iqr_ms),
         "agreement with float": "–"},
        {"model": "int8 (ONNX)", "size": fmt.nbytes(r["int8_bytes"]), "latency": fmt.ms(lq.median_ms, lq.iqr_ms),
         "agreement with float": f"{fmt.pct(r['agreement'])} of {r['n']}"}]), hide_index=True, width="stretch")
    ratio = lf.median_ms / lq.median_ms if lq.median_ms else float("nan")
    noisy = " (noisy timing: no conclusion)" if lf.noisy or lq.noisy else ""
    st.caption(f"int8 file {r['int8_bytes'] / r['float_bytes']:.2f}× the float file; int8 runs {ratio:.2f}× the "
               f"float speed at batch {lq.batch_size} on {lq.threads} threads{noisy}.")


def page() -> None:
    show_flashes()
    ws = get_workspace()
    st.markdown(f"### Export · {ws.name}")
    st.caption("Masks are baked in; structurally pruned or cut models export at their new, smaller shapes. "
               "Each file is reloaded with its own runtime (safetensors via the recipe, ONNX via "
               "onnxruntime, torch.export, TorchScript; an hf folder by transformers alone, in a fresh process) "
               "and compared with the in-memory model on an eval batch; "
               "verified = max |diff| within 1e-4.")
    chosen = formats_ui(bool(ws.plan.steps) and ws.plan.steps[-1].op == "quantize") + hf_format_ui(ws)
    stem = st.text_input("File name", value=ws.name, key="export_stem",
                         help="Letters, digits, '-' and '_' only; each format adds its suffix.")
    if st.button("Export", key="export_btn", type="primary", icon=":material/file_export:",
                 disabled=not chosen):
        if not valid_stem(stem):
            st.error(f"File name {stem!r} is not allowed: use letters, digits, '-' and '_'.")
        else:
            bar = st.progress(0.0, text="Exporting…")

            def progress(i, n, what):
                bar.progress(i / max(n, 1), text="Done" if what == "done" else f"Exporting {what}…")

            with st.spinner("Exporting and verifying…"):
                results = run_action(lambda: export_all(ws.model, ws.plan, _new_folder(), stem, chosen,
                                                        ws.evalset.quick()[0][:EXPORT_BATCH], progress=progress,
                                                        model_name=ws.name, **hf_export_options(ws)))
            bar.empty()
            if results is not None:
                st.session_state["export_results"] = (ws.name, ws.plan.key(), results)
                failed = [r.format for r in results if r.error]
                if failed:
                    st.warning(f"{', '.join(failed)} failed for this model (see the error column); "
                               "the other formats were written.")
            show_flashes()
    res = st.session_state.get("export_results")
    if res and res[0] == ws.name:
        _, key, results = res
        if key != ws.plan.key():
            st.warning("These files were exported from an earlier plan; export again for the current one.")
        base_bytes = ws.base_metrics("quick", latency=False).size_bytes
        st.dataframe(results_frame(results, base_bytes), hide_index=True, width="stretch")
        st.caption("'vs base' compares each file with the base model's safetensors size (an hf folder: all its "
                   "files, tokenizer and config included). "
                   "Weight pruning leaves dense tensors (same size); structured pruning and cuts shrink them.")
        downloads_ui(results)
        hf_result_ui(ws, results)
        onnx = next((r for r in results if r.format == "onnx" and r.path and Path(r.path).exists()), None)
        if onnx is not None:
            netron_ui(key="export_graph", label="View graph", path=onnx.path)
    if ws.plan.steps and ws.plan.steps[-1].op == "quantize":
        int8_ui(ws)
    with st.expander("Recipe (plan JSON)", expanded=False):
        st.code(ws.plan.to_json(), language="json")
        st.download_button("Download plan.json", data=ws.plan.to_json, file_name=f"{ws.name}.plan.json",
                           key="dl_plan", on_click="ignore", icon=":material/download:")
        st.caption(f"Replay anywhere: `prunescope apply {ws.name} --plan {ws.name}.plan.json --json`")
        st.download_button("Download the plan report (HTML)", data=lambda: workspace_report_html(ws, current_diff(ws)),
                           file_name=f"{ws.name}.report.html", mime="text/html", key="dl_report_export",
                           on_click="ignore", icon=":material/download:",
                           help="One self-contained page (no network): the recipe, metrics before / after, the graph "
                                "diff of base and current, and the weight histograms at their thresholds "
                                "(`prunescope diff NAME --plan P --html OUT.html` writes the same).")
    with st.expander("Open a recipe", icon=":material/file_open:", key="export_recipe_open", on_change="rerun"):
        open_recipe_ui(ws)


def open_recipe_ui(ws) -> None:
    """Apply a ``prunescope.plan/1`` recipe from a file: checked as data (strict JSON, size
    and step limits, every field's constraints); a recipe for another model or with a step
    that does not fit is a message, and the current plan stays."""
    up = st.file_uploader("Recipe (.json)", type=["json"], key="recipe_file",
                          help="A plan exported here or written by `prunescope ... --save-plan`.")
    if up is None:
        return
    plan = run_action(lambda: Plan.from_json(up.getvalue().decode("utf-8", errors="replace"), source=up.name),
                      now=True)
    if plan is None:
        return
    if plan.model != ws.name:
        st.warning(f"{up.name} is a recipe for model {plan.model!r}; this page holds {ws.name!r}. Pick "
                   f"{plan.model} in the sidebar and open it there.")
        return
    st.markdown(f"**{up.name}**: {len(plan.steps)} step(s)")
    for i, line in enumerate(plan.describe(), 1):
        st.caption(f"{i}. {line}")
    trains = sum(getattr(s, "steps", 0) for s in plan.steps if getattr(s, "trains", False))
    if trains:
        st.warning(f"This recipe trains ({trains:,} optimisation steps in all); applying it runs them here.")
    if st.button("Apply this recipe", key="recipe_apply", type="primary", icon=":material/play_arrow:",
                 help="Makes it the current plan (one undo takes it back); the plan stays if a step does not fit."):
        with st.spinner(f"Applying {len(plan.steps)} step(s)…"):
            done = run_action(ws.set_plan, plan, success=f"Applied {up.name}: {len(plan.steps)} step(s).",
                              now=True)
        if done is not None:
            st.rerun()


page()
