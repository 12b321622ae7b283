"""prunescope: `streamlit run app` opens this.

One entry point; one small file per page in app/views/.
"""
from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/streamlit_app.py` puts app/ on sys.path, not the repository root.
_root = str(Path(__file__).resolve().parent.parent)
if _root not in sys.path:
    sys.path.insert(0, _root)

import streamlit as st  # noqa: E402

from core.ground.memory import keep_freed_memory  # noqa: E402
from core.startup import register_all  # noqa: E402

register_all()  # an entry point: the built-in kinds and the plug-ins, once per process
keep_freed_memory()  # an entry point: evaluations reuse freed memory instead of faulting it in again

from app.panels import model_picker_ui  # noqa: E402
from app.session import get_workspace, session_id  # noqa: E402

# a local file: a material or emoji icon would be fetched from a CDN (the app works offline)
st.set_page_config(page_title="prunescope", page_icon=str(Path(__file__).parent / "icon.png"), layout="wide")

VIEWS = Path(__file__).parent / "views"
PAGES = [
    st.Page(VIEWS / "model.py", title="Model", icon=":material/memory:", url_path="model"),
    st.Page(VIEWS / "prune.py", title="Prune", icon=":material/content_cut:", url_path="prune", default=True),
    st.Page(VIEWS / "sensitivity.py", title="Sensitivity", icon=":material/tune:", url_path="sensitivity"),
    st.Page(VIEWS / "surgery.py", title="Surgery", icon=":material/account_tree:", url_path="surgery"),
    st.Page(VIEWS / "explain.py", title="Explain", icon=":material/psychology:", url_path="explain"),
    st.Page(VIEWS / "export.py", title="Export", icon=":material/download:", url_path="export"),
    st.Page(VIEWS / "history.py", title="History", icon=":material/history:", url_path="history"),
]

session_id()  # before the picker: a reload restores the saved model and plans
with st.sidebar:
    st.markdown("## :material/content_cut: prunescope")
    model_picker_ui(st)
    ws = get_workspace()
    # the step count lives on each page (inside its live fragment), where it stays in step with the plan
    st.caption(f"Device {ws.device}")

st.navigation(PAGES).run()
