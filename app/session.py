"""Per-session state: each browser session owns its Workspaces.

The pristine base models are shared by every session (``core.sources.bases.load_base`` caches
them per process) and never pruned: a Workspace applies plans to copies.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import streamlit as st

from app.messages import flash
from core.errors import PrunescopeError
from core.ground.device import available_devices
from core.io.sessions import load_session, new_session_id, save_session, valid_id
from core.sources.models import list_models
from core.workspace import Workspace

DEFAULT_MODEL = "digits_cnn"


@st.cache_resource(show_spinner=False)
def _swept_once() -> list:
    """Once per server process: remove the export folders of servers that were killed."""
    from core.ground.files import sweep_dead_folders

    return sweep_dead_folders("export")


def model_names() -> list[str]:
    return list_models()


def default_model() -> str:
    names = model_names()
    return DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]


def current_model_name() -> str:
    ss = st.session_state
    if ss.get("model_name") not in model_names():
        ss["model_name"] = default_model()
    return ss["model_name"]


def current_device() -> str:
    ss = st.session_state
    if ss.get("device") not in available_devices():
        ss["device"] = available_devices()[0]
    return ss["device"]


def session_id() -> str:
    """This browser session's id, kept in the URL (``?session=...``) so a reload finds its
    saved work: on the first run a saved session named in the URL is restored (each
    model's history is given to its workspace when that is made), else a new id is made."""
    ss = st.session_state
    if "session_id" not in ss:
        qp = st.query_params.get("session")
        saved = _saved_session(qp) if valid_id(qp) else None
        if saved is not None:
            ss["session_id"], ss["_restored"] = qp, saved["models"]
            if saved["model"] in model_names():
                ss["model_name"] = saved["model"]
            when = time.strftime("%H:%M on %d %b", time.localtime(saved["saved"]))
            flash("info", f"Restored your work saved at {when}: "
                          + ", ".join(f"{n} ({len(e['history'][e['pos']].steps)} step(s))"
                                      for n, e in saved["models"].items()) + ".")
        else:
            ss["session_id"], ss["_restored"] = new_session_id(), {}
    if st.query_params.get("session") != ss["session_id"]:
        st.query_params["session"] = ss["session_id"]
    return ss["session_id"]


def _saved_session(sid: str) -> dict | None:
    """The saved session ``sid``, or None (a damaged or unreadable file is said on the page
    and left on disk: this browser session then works under a new id)."""
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            saved = load_session(sid)
    except PrunescopeError as exc:  # a file that cannot be read: kept, and said
        flash("error", f"{exc}. Starting a new session.")
        return None
    for w in caught:
        if "prunescope:" in str(w.message):  # a damaged file: skipped, kept, and said
            flash("warning", str(w.message).removeprefix("prunescope: ") + ". Starting a new session.")
    return saved


def _autosave(ss) -> Callable[..., None]:
    """Save this session after every plan change (and when the model shown changes)."""
    sid, spaces, shown, pending = ss["session_id"], ss["workspaces"], ss["_shown"], ss["_restored"]

    def save(_ws=None) -> None:
        try:
            models = {name: e for name, e in pending.items() if name not in spaces}  # restored, not opened yet
            models.update({name: ws.session_entry() for name, ws in spaces.items()})
            save_session(sid, models, shown[0])
        except OSError as exc:  # a full or read-only disk must not stop the work itself
            import warnings

            warnings.warn(f"prunescope: could not save session {sid}: {exc}")

    return save


def get_workspace(name: str | None = None) -> Workspace:
    """This session's Workspace for ``name`` (default: the selected model), created once.

    Switching models keeps each model's workspace (and its plan history) alive;
    switching device carries the history over to a workspace on the new device.
    """
    _swept_once()
    ss = st.session_state
    name = name or current_model_name()
    device = current_device()
    spaces: dict = ss.setdefault("workspaces", {})
    ws = spaces.get(name)
    if ws is None or str(ws.device) != device:
        try:
            with st.spinner(f"Loading {name} on {device}…"):
                new = Workspace(name, device, latency_batch=ss.get("latency_batch", 64))
        except PrunescopeError as exc:  # a model of the person's own that no longer loads
            if name == default_model():
                raise
            flash("error", f"Model {name!r} could not be opened: {exc}. Showing {default_model()} instead.")
            ss["_open_model"] = default_model()  # the picker takes it on the next run
            return get_workspace(default_model())
        if ws is not None:  # device change: keep the person's plans
            new.history, new.pos = list(ws.history), ws.pos
        elif name in ss.get("_restored", {}):  # saved work of this session (a reload)
            new.restore_session(ss["_restored"].pop(name))
        if "session_id" in ss:
            ss.setdefault("_shown", [name])
            new.listeners.append(_autosave(ss))
        spaces[name] = ws = new
    shown = ss.get("_shown")
    if shown is not None and shown[0] != name and "session_id" in ss:
        shown[0] = name
        _autosave(ss)()
    batch = ss.get("latency_batch", 64)
    if ws.evaluator.latency_batch != batch:
        ws.evaluator.latency_batch = batch
    if ws.precision != ss.get("precision", "fp32"):
        ws.set_precision(ss.get("precision", "fp32"))
    return ws


ROUNDED = ("neuron", "channel")  # granularities whose kept widths can be rounded


def round_to(granularity: str) -> int | None:
    """The multiple new structured steps round kept widths to (the Prune page's setting,
    8 by default; None: no rounding)."""
    v = int(st.session_state.get("prune_round_to", 8)) if granularity in ROUNDED else 1
    return v if v > 1 else None
