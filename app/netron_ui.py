"""'View graph': a model's graph in Netron (core.io.netron), embedded and linked, served by
the app's own server."""
from __future__ import annotations

import uuid
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from app.messages import run_action, show_flashes
from core.io import netron as netron_view

GRAPH_HEIGHT = 640  # px of the embedded Netron view


def _owner() -> str:
    """One Netron owner per browser session: a new view stops this session's previous one."""
    return st.session_state.setdefault("_netron_owner", uuid.uuid4().hex)


def _what(model, path) -> str:
    """What is shown: the file (path + mtime) or the model object."""
    if path is not None:
        p = Path(path)
        return f"{p}:{p.stat().st_mtime_ns if p.exists() else 0}"
    return f"model:{id(model)}"


def _component_base() -> str:
    """The URL (relative to the page) of the folder Netron views are served from: the
    site folder registered as a component, so the app's own server serves it."""
    comp = components.declare_component("netron", path=str(netron_view.site()))
    return f"component/{comp.name}/"


def netron_ui(model=None, key: str = "graph", label: str = "View graph", *, example=None,
              path: str | Path | None = None, help: str | None = None, identity: str | None = None) -> str | None:
    """A button that writes ``path`` (or ``model`` as ONNX) into a Netron view served by the
    app's own server, and embeds it below with a link to open it in a new tab.

    Args:
        model: the module to show (written as ONNX) when ``path`` is not given.
        key: widget key prefix (unique per page).
        label: the button's label.
        example: an input batch for ``model`` (default: the current workspace's eval batch).
        path: an exported file to show instead (ONNX, .pt2, ...).
        help: the button's tooltip.
        identity: what ``model`` is (e.g. the plan's key); the view hides when it changes.

    Returns:
        The view's URL (relative to the page) while it is shown, else None.
    """
    ss = st.session_state
    what = identity or _what(model, path)
    if st.button(label, key=f"{key}_btn", icon=":material/account_tree:",
                 help=help or "Shows the graph in Netron, served by this app (works offline)."):
        def start():
            if path is not None:
                return netron_view.serve_file(path, owner=_owner(), key=key)
            x = example
            if x is None:
                from app.session import get_workspace

                x = get_workspace().evalset.quick()[0][:2]
            return netron_view.view_model(model, x, name=key, owner=_owner(), key=key)

        with st.spinner("Writing the graph for Netron…"):
            view = run_action(start)
        if view:
            ss[f"{key}_url"] = (view.page, what)
    show_flashes()
    shown = ss.get(f"{key}_url")
    alive = {v.page for v in netron_view.views()}
    if not shown or shown[1] != what or shown[0] not in alive:
        ss.pop(f"{key}_url", None)  # replaced by a newer view, or showing something else now
        return None
    url = _component_base() + shown[0]
    st.markdown(f"[Open the graph in a new tab]({url})")
    components.iframe(url, height=GRAPH_HEIGHT, scrolling=True)
    return url
