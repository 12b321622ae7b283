"""The graph diff of the current plan as the pages share it (the Model page's diff tab and the
Export page's plan report): built once per model, plan and latency batch, kept in the session.
A page module is never imported by another (importing it would draw that page)."""
from __future__ import annotations

import streamlit as st

from app.messages import run_action


def current_diff(ws, profile: bool = False):
    """The graph diff of the current plan, kept in the session per model and plan (a profiled one
    is kept in place of the plain one: it holds everything the plain one does)."""
    ss = st.session_state
    batch = ss.get("latency_batch", 64)  # the batch every latency on the page is measured at
    key = (ws.name, ws.plan.key(), batch)
    held = ss.get("model_diff")
    if held is not None and held[0] == key and (held[1].profiled or not profile):
        return held[1]
    text = ("Profiling every module of the base and the current model (torch.profiler, same batch and threads)…"
            if profile else "Comparing the base with the current model, module by module…")
    with st.spinner(text):
        diff = run_action(lambda: ws.graph_diff(profile=profile, batch=batch), now=True)
    if diff is not None:
        ss["model_diff"] = (key, diff)
    return diff


__all__ = ["current_diff"]
