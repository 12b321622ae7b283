"""The Model page's "Open your own model" panel: a factory from the person's environment,
weights (random, uploaded or a local file) and evaluation data (synthetic inputs, an
uploaded or local tensors file, or a registered dataset). The entry is remembered across
restarts (``core.user_models``); uploads are kept in its folder."""
from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from core.data import list_datasets
from core.errors import PrunescopeError
from core.user_models import home, list_user_models, parse_shape, register, unregister

from app.components import run_action

WEIGHT_TYPES = ["safetensors", "pt", "pth", "bin"]
DATA_TYPES = ["npz", "safetensors"]


def _keep(upload, name: str, what: str) -> str:
    """Write an upload into this model's folder under a fixed name (the suffix is checked
    by the uploader); returns its path."""
    suffix = Path(upload.name).suffix.lower()
    folder = home() / "uploads" / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{what}{suffix}"
    path.write_bytes(upload.getvalue())
    return str(path)


def open_model_ui() -> None:
    """The panel (inside an expander on the Model page)."""
    ss = st.session_state
    c1, c2 = st.columns(2)
    name = c1.text_input("Name", key="open_name", placeholder="my_model",
                         help="What the model picker will call it (letters, digits, _ . -).")
    factory = c2.text_input("Factory", key="open_factory", placeholder="mypackage.models:build",
                            help="An importable package.module:function from this Python environment that returns "
                                 "the torch.nn.Module (never code from an upload), e.g. torchvision.models:get_model.")
    kwargs_text = st.text_input("Keyword arguments (JSON)", "{}", key="open_kwargs",
                                help='Passed to the factory, e.g. {"name": "resnet18", "num_classes": 10}.')
    c1, c2 = st.columns(2)
    wkind = c1.radio("Weights", ["random", "upload", "local file"], key="open_wkind", horizontal=True,
                     help="Random weights are labelled as such everywhere. Files are read as data: safetensors, "
                          "or a state dict read with torch.load(weights_only=True).")
    wfile = wpath = None
    if wkind == "upload":
        wfile = c1.file_uploader("Weights file", type=WEIGHT_TYPES, key="open_wfile")
    elif wkind == "local file":
        wpath = c1.text_input("Weights path", key="open_wpath", placeholder="/path/to/weights.safetensors")
    dkind = c2.radio("Evaluation data", ["synthetic", "upload", "local file", "dataset"], key="open_dkind",
                     horizontal=True, help="synthetic: seeded random inputs, no labels (judged by fidelity to the "
                                           "base). A tensors file (.npz or .safetensors) holds x and optionally y "
                                           "(labels 0..K-1); it is split 75/25 with a fixed seed.")
    dfile = dpath = dataset = None
    n = 256
    if dkind == "synthetic":
        n = int(c2.number_input("Examples", 8, 100_000, 256, 64, key="open_n"))
    elif dkind == "upload":
        dfile = c2.file_uploader("Data file", type=DATA_TYPES, key="open_dfile")
    elif dkind == "local file":
        dpath = c2.text_input("Data path", key="open_dpath", placeholder="/path/to/data.npz")
    else:
        dataset = c2.selectbox("Dataset", list_datasets(), key="open_dataset")
    c1, c2 = st.columns(2)
    shape_text = c1.text_input("Input shape (one example)", key="open_shape", placeholder="1,8,8",
                               help="Needed for synthetic data; read from a tensors file or a dataset otherwise.")
    task = c2.selectbox("Task", ["auto", "classification", "fidelity"], key="open_task",
                        help="auto: classification when the data has labels, else fidelity (agreement with the "
                             "base model's predictions).")
    if st.button("Open the model", key="open_go", type="primary", icon=":material/upload:"):
        def go():
            if not name.strip() or not factory.strip():
                raise PrunescopeError("give the model a name and a factory (package.module:function)")
            try:
                kwargs = json.loads(kwargs_text or "{}")
            except json.JSONDecodeError as exc:
                raise PrunescopeError(f"keyword arguments must be a JSON object, e.g. {{\"num_classes\": 10}}: "
                                      f"{exc}") from None
            if not isinstance(kwargs, dict):
                raise PrunescopeError(f"keyword arguments must be a JSON object, got {kwargs_text!r}")
            if wkind == "upload" and wfile is None or dkind == "upload" and dfile is None:
                raise PrunescopeError("choose the file to upload first")
            weights = _keep(wfile, name, "weights") if wfile is not None else (wpath or None)
            if dkind == "synthetic":
                data = {"kind": "synthetic", "n": n}
            elif dkind == "dataset":
                data = {"kind": "dataset", "name": dataset}
            else:
                data = {"kind": "tensors", "path": _keep(dfile, name, "data") if dfile is not None else (dpath or "")}
            return register(name.strip(), factory=factory.strip(), kwargs=kwargs, weights=weights, data=data,
                            input_shape=parse_shape(shape_text), task=None if task == "auto" else task)

        spec = run_action(go, now=True)
        if spec is not None:
            ss["_open_model"] = spec.name  # the picker takes it before it is drawn
            st.rerun()
    mine = list_user_models()
    if mine:
        st.caption("Your models (remembered in " + str(home()) + "): "
                   + ", ".join(f"**{e.name}** ({e.source()})" for e in mine))
        c1, c2 = st.columns([2, 1])
        drop = c1.selectbox("Forget one", [e.name for e in mine], key="open_forget")
        if c2.button("Forget", key="open_forget_go", icon=":material/delete:"):
            run_action(unregister, drop, success=f"Forgot {drop}.")  # shown after the rerun
            st.rerun()


def recent_work_ui() -> None:
    """Earlier sessions of this machine, newest first, each a link that reopens it (its
    model, plans and undo history)."""
    import time

    from core.sessions import recent_sessions

    current = st.session_state.get("session_id")
    rows = [r for r in recent_sessions(12) if r["id"] != current]
    st.caption("Every session is saved after each change; this one's address (with ?session=...) reopens it, "
               "a reload included.")
    if not rows:
        st.caption("No earlier sessions on this machine yet.")
        return
    for r in rows:
        when = time.strftime("%d %b %H:%M", time.localtime(r["saved"]))
        st.markdown(f"[{r['model']} · {r['steps']} step(s) · saved {when}](?session={r['id']})")


__all__ = ["open_model_ui", "recent_work_ui"]
