"""Export: write the current plan's model in several formats, verify each, download."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core import formatting as fmt
from core.export import EXPORTERS, export_all

from app.netron_ui import netron_ui
from app.state import get_workspace, show_flashes


def _folder() -> Path:
    ss = st.session_state
    if "export_dir" not in ss:
        ss["export_dir"] = tempfile.mkdtemp(prefix="prunescope-export-")
    return Path(ss["export_dir"])


def results_frame(results, base_bytes: int) -> pd.DataFrame:
    rows = []
    for r in results:
        rows.append({"format": r.format, "file": Path(r.path).name if r.path else "–",
                     "size": fmt.nbytes(r.bytes) if r.bytes else "–",
                     "vs base": f"{r.bytes / base_bytes:.2f}×" if r.bytes and base_bytes else "–",
                     "max |diff|": f"{r.max_abs_diff:.2e}" if r.max_abs_diff is not None else "–",
                     "agreement": fmt.pct(r.agreement) if r.agreement is not None else "–",
                     "verified": "yes" if r.verified else "no", "seconds": round(r.seconds, 2),
                     "error": r.error or ""})
    return pd.DataFrame(rows)


def page() -> None:
    show_flashes()
    ws = get_workspace()
    st.markdown(f"### Export · {ws.name}")
    st.caption("Masks are baked in; structurally pruned or cut models export at their new shapes. "
               "Each file is reloaded and compared with the in-memory model on an eval batch.")
    names = EXPORTERS.names()
    cols = st.columns(len(names))
    chosen = [n for n, c in zip(names, cols)
              if c.checkbox(n, value=True, key=f"fmt_{n}", help=EXPORTERS.get(n).description)]
    stem = st.text_input("File name", value=ws.name, key="export_stem",
                         help="Letters, digits, '-' and '_' only.")
    if st.button("Export", key="export_btn", type="primary", disabled=not chosen):
        if not stem or not all(ch.isalnum() or ch in "-_" for ch in stem):
            st.error(f"File name {stem!r} is not allowed: use letters, digits, '-' and '_'.")
        else:
            bar = st.progress(0.0, text="Exporting…")

            def progress(i, n, what):
                bar.progress(i / max(n, 1), text=f"Exporting {what}…" if what != "done" else "Done")

            results = export_all(ws.model, ws.plan, _folder(), stem, chosen, ws.evalset.quick()[0][:16],
                                 progress=progress)
            st.session_state["export_results"] = (ws.name, ws.plan.key(), results)
    res = st.session_state.get("export_results")
    if res and res[0] == ws.name:
        _, key, results = res
        if key != ws.plan.key():
            st.warning("These files were exported from an earlier plan; export again for the current one.")
        base_bytes = ws.base_metrics("quick", latency=False).size_bytes
        st.dataframe(results_frame(results, base_bytes), hide_index=True, width="stretch")
        ok = [r for r in results if r.path]
        dl = st.columns(max(len(ok), 1) + 1)
        for c, r in zip(dl, ok):
            p = Path(r.path)
            c.download_button(f"Download {p.name}", data=p.read_bytes, file_name=p.name,
                              key=f"dl_{r.format}", on_click="ignore", width="stretch")
        if ok:
            rp = Path(ok[0].recipe)
            dl[-1].download_button(f"Download {rp.name}", data=rp.read_bytes, file_name=rp.name,
                                   key="dl_recipe", on_click="ignore", width="stretch")
        onnx = next((r for r in ok if r.format == "onnx"), None)
        if onnx is not None:
            netron_ui(key="export_graph", label="View graph of the exported ONNX", path=onnx.path)
    with st.expander("Recipe (plan JSON)"):
        st.code(ws.plan.to_json(), language="json")
        st.download_button("Download plan.json", data=ws.plan.to_json(), file_name="plan.json",
                           key="dl_plan", on_click="ignore")


page()
