"""'View graph': a model's graph in Netron, embedded and linked."""
from __future__ import annotations

import streamlit as st
import streamlit.components.v1 as components

from core.netron_view import onnx_for_view, serve_file

from app.components import run_action


def netron_ui(model=None, *, key: str, label: str = "View graph", example=None, path=None) -> str | None:
    """A button that serves ``path`` (or ``model`` written as ONNX) with Netron on
    127.0.0.1 and embeds it. Returns the URL once started."""
    ss = st.session_state
    if st.button(label, key=f"{key}_btn", help="Starts Netron on 127.0.0.1 for this one file (works offline)."):
        with st.spinner("Starting Netron…"):
            def start():
                p = path if path is not None else onnx_for_view(model, example, name=key)
                return serve_file(p)

            url = run_action(start)
        if url:
            ss[f"{key}_url"] = url
    url = ss.get(f"{key}_url")
    if url:
        st.markdown(f"[Open the graph in a new tab]({url})")
        components.iframe(url, height=640, scrolling=True)
    for kind, msg in ss.pop("_flash", []):
        getattr(st, kind)(msg)
    return url
