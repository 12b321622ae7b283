"""The Model page's "Open your own model" panel: a factory from the person's environment
or a torchvision / timm architecture by name, weights (random, uploaded or a local file)
and evaluation data (synthetic inputs; an uploaded or local tensors file, CSV, or image
folder / zip with its resize and normalisation settings; or a registered dataset). The entry is remembered across
restarts (``core.sources.entries``); uploads are kept in its folder."""
from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from app.messages import run_action
from core.errors import PrunescopeError
from core.sources.datasets import list_datasets
from core.sources.entries import (
    data_from_path,
    home,
    list_user_models,
    parse_shape,
    register,
    unregister,
)

WEIGHT_TYPES = ["safetensors", "pt", "pth", "bin"]
DATA_TYPES = ["npz", "safetensors", "csv", "txt", "zip"]
SOURCES = ["factory", "torchvision", "timm", "hf"]
SOURCE_LABELS = {"factory": "factory", "torchvision": "torchvision", "timm": "timm", "hf": "Hugging Face folder"}


def _keep(upload, name: str, what: str) -> str:
    """Write an upload into ``uploads/<model>/<what>/`` under its own file name (reduced to
    safe characters; the suffix is checked by the uploader), so messages name the file the
    person chose; returns its path."""
    import re

    own = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(upload.name).name).lstrip(".") or f"{what}{Path(upload.name).suffix}"
    folder = home() / "uploads" / name / what
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / own
    path.write_bytes(upload.getvalue())
    return str(path)


def _data_kind(dfile, dpath: str | None) -> str | None:
    """What the chosen upload or path is ("images", "csv", "text", "tensors"), or None
    (nothing chosen yet, or a kind that is not accepted: the open button says why)."""
    target = dfile.name if dfile is not None else (dpath or "").strip()
    if not target:
        return None
    try:
        return data_from_path(target)["kind"]
    except PrunescopeError:
        return None


def _floats(text: str, what: str) -> tuple[float, ...] | None:
    if not text.strip():
        return None
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise PrunescopeError(f"{what} must be numbers separated by commas, e.g. 0.5,0.5,0.5; got {text!r}") from exc
    return vals


def _score(text: str) -> float | None:
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise PrunescopeError(f"the box score threshold must be a number in (0, 1], e.g. 0.5; got {text!r}") from exc


def _source_ui() -> tuple[str, str, str]:
    """(source kind, factory or architecture, kwargs JSON)."""
    c1, c2 = st.columns([1, 2])
    source = c1.radio("Model from", SOURCES, key="open_source", horizontal=True, format_func=SOURCE_LABELS.get,
                      help="factory: a package.module:function of this Python environment; torchvision / timm: an "
                           "architecture by name (pip install 'prunescope[vision]'); Hugging Face folder: what "
                           "save_pretrained wrote (config.json, safetensors, tokenizer), on this machine "
                           "(pip install 'prunescope[hf]'); its code is never run from the folder.")
    if source == "hf":
        what = c2.text_input("Folder", key="open_hf", placeholder="/path/to/model_folder",
                             help="Its weights come from the folder; the task from its config (a causal LM: "
                                  "next-token loss, perplexity and agreement).")
    elif source == "factory":
        what = c2.text_input("Factory", key="open_factory", placeholder="mypackage.models:build",
                             help="An importable package.module:function from this Python environment that returns "
                                  "the torch.nn.Module (never code from an upload), e.g. torchvision.models:get_model.")
    else:
        what = c2.text_input("Architecture", key="open_arch", placeholder="resnet18" if source == "torchvision"
                             else "resnet10t", help=f"A {source} model name; random weights unless you give a file.")
    kwargs_text = st.text_input("Keyword arguments (JSON)", "{}", key="open_kwargs",
                                help='Passed to the factory, e.g. {"num_classes": 10}.')
    return source, what, kwargs_text


def _data_ui(c2):
    """The data chooser; returns a function that gives the data description (or raises)."""
    dkind = c2.radio("Evaluation data", ["synthetic", "upload", "local path", "dataset"], key="open_dkind",
                     horizontal=True, help="synthetic: seeded random inputs, no labels (judged by fidelity to the "
                                           "base). Files: a tensors file (.npz or .safetensors: x and optionally y), "
                                           "a .csv table, a .zip / folder with one subfolder of images per class, or "
                                           "(segmentation) one holding images/ and masks/, a mask per image, or "
                                           "(detection) images/ and one COCO-style .json of boxes. "
                                           "Data is split 75/25 with a fixed seed.")
    dfile = dpath = dataset = None
    n = 256
    if dkind == "synthetic":
        n = int(c2.number_input("Examples", 8, 100_000, 256, 64, key="open_n"))
    elif dkind == "upload":
        dfile = c2.file_uploader("Data file (.npz, .safetensors, .csv, .txt, or a .zip of class folders, of "
                                 "images/ + masks/, or of images/ + a COCO .json)",
                                 type=DATA_TYPES,
                                 key="open_dfile")
    elif dkind == "local path":
        dpath = c2.text_input("Data path (file or folder)", key="open_dpath", placeholder="/path/to/images_or_data.npz")
    else:
        dataset = c2.selectbox("Dataset", list_datasets(), key="open_dataset")
    kind = _data_kind(dfile, dpath)
    label = size = mean = std = ""
    seq_len = 64
    if kind == "text":
        seq_len = int(c2.number_input("Tokens per example", 1, 8192, 64, 16, key="open_seq",
                                      help="Lines are cut to this many tokens; a language model reads windows of "
                                           "this many tokens and is judged on the next one. Lines may be "
                                           "label<TAB>text for classification."))
    elif kind == "csv":
        label = c2.text_input("Label column (empty: no labels, fidelity)", key="open_label")
    elif kind == "images":
        c2.caption("Images are resized to H×W, then normalised per channel: (pixel / 255 − mean) / std. "
                   "Empty mean and std: ImageNet's (RGB 0.485,0.456,0.406 and 0.229,0.224,0.225; grey 0.449 and "
                   "0.226).")
        a, b, c = c2.columns(3)
        size = a.text_input("Size H,W", key="open_size", placeholder="from input shape",
                            help="Empty: the input shape's, else the architecture's default, else 224,224.")
        mean = b.text_input("Mean", key="open_mean", placeholder="ImageNet's")
        std = c.text_input("Std", key="open_std", placeholder="ImageNet's")

    def data(name: str) -> dict:
        if dkind == "synthetic":
            return {"kind": "synthetic", "n": n}
        if dkind == "dataset":
            return {"kind": "dataset", "name": dataset}
        if dkind == "upload" and dfile is None or dkind == "local path" and not (dpath or "").strip():
            raise PrunescopeError("choose the data file (or folder) first")
        path = _keep(dfile, name, "data") if dfile is not None else dpath.strip()
        return data_from_path(path, label_column=label.strip() or None, size=parse_shape(size),
                              mean=_floats(mean, "mean"), std=_floats(std, "std"), seq_len=seq_len)

    return data


def _shape_ui(col, source: str) -> str:
    """One example's input shape as text ("3,224,224"; empty: from the data or the
    architecture). A Hugging Face folder reads token ids, not images: it asks for tokens per
    example, and only for synthetic data (a file's examples have their own length)."""
    if source != "hf":
        return col.text_input("Input shape (one example)", key="open_shape", placeholder="3,224,224",
                              help="Needed for synthetic data unless the architecture has a default; read from the "
                                   "data otherwise (images: channels and size).")
    if st.session_state.get("open_dkind", "synthetic") != "synthetic":
        col.caption("Input: token ids, as many per example as the data gives.")
        return ""
    return str(int(col.number_input("Tokens per example", 1, 8192, 64, 16, key="open_hf_tokens",
                                    help="Synthetic token ids: this many per example, drawn from the folder's "
                                         "vocabulary.")))


def _judging_ui() -> tuple[str, str, str]:
    """(leaves judged, your metric, box score threshold) as typed."""
    c1, c2, c3 = st.columns([2, 2, 1])
    judged = c1.text_input("Output leaves judged (optional)", key="open_judged", placeholder="all, or e.g. out",
                           help="A model returning several outputs (a tuple, a dict): the leaves judged, separated by "
                                "commas, named as the Prune page's table of output leaves lists them (out, aux, 0, "
                                "1.boxes). Empty: every floating-point leaf.")
    metric = c2.text_input("Your metric (optional)", key="open_metric", placeholder="mypackage.metrics:score",
                           help="A package.module:function of this Python environment (never code from an upload), "
                                "called as function(outputs, targets) on every evaluation and returning {name: "
                                "number}; targets are the labels (or masks), or for task fidelity the base model's "
                                "outputs. Its figures are shown beside the built-in ones.")
    score = c3.text_input("Box score threshold", key="open_score", placeholder="0.5",
                          help="A detector (e.g. torchvision's fasterrcnn_*, retinanet_*, ssd*): its boxes scored "
                               "below this are not detections. A pruned detector is judged by the share of the base's "
                               "boxes it finds again. Empty: 0.5; other models: leave it empty.")
    return judged, metric, score


def open_model_ui() -> None:
    """The panel (inside an expander on the Model page)."""
    ss = st.session_state
    name = st.text_input("Name", key="open_name", placeholder="my_model",
                         help="What the model picker will call it (letters, digits, _ . -).")
    source, what, kwargs_text = _source_ui()
    c1, c2 = st.columns(2)
    wfile = wpath = None
    if source == "hf":
        wkind = "folder"
        c1.caption("Weights: the folder's own (safetensors, or a weights-only pytorch_model.bin).")
    else:
        wkind = c1.radio("Weights", ["random", "upload", "local file"], key="open_wkind", horizontal=True,
                         help="Random weights are labelled as such everywhere. Files are read as data: safetensors, "
                              "or a state dict read with torch.load(weights_only=True).")
    if wkind == "upload":
        wfile = c1.file_uploader("Weights file", type=WEIGHT_TYPES, key="open_wfile")
    elif wkind == "local file":
        wpath = c1.text_input("Weights path", key="open_wpath", placeholder="/path/to/weights.safetensors")
    data_of = _data_ui(c2)
    c1, c2 = st.columns(2)
    shape_text = _shape_ui(c1, source)
    task = c2.selectbox("Task", ["auto", "classification", "fidelity", "language-model", "segmentation", "detection"],
                        key="open_task",
                        help="auto: a Hugging Face folder's own (a causal LM: language-model); else detection when the "
                             "data has labelled boxes (COCO's mAP), segmentation when it has label masks (mean IoU "
                             "of the model's class map), classification when it "
                             "has labels, else fidelity (agreement with the base model's outputs).")
    output = c2.selectbox("Output", ["auto", "logits", "embedding"], key="open_output",
                          format_func={"auto": "auto", "logits": "class scores (logits)",
                                       "embedding": "an embedding / features"}.get,
                          help="What the model returns. Class scores are judged by accuracy, loss and agreement; "
                               "an embedding (task fidelity) by its cosine with the base's and the nearest-neighbour "
                               "recall@k (the base's neighbours of each example it keeps). auto: a Hugging Face "
                               "encoder without a head is an embedding; anything else class scores.")
    judged, metric, score = _judging_ui()
    if st.button("Open the model", key="open_go", type="primary", icon=":material/upload:"):
        def go():
            if not name.strip() or not what.strip():
                raise PrunescopeError("give the model a name and a " + {
                    "factory": "factory (package.module:function)", "hf": "Hugging Face folder"}.get(
                    source, "model name"))
            try:
                kwargs = json.loads(kwargs_text or "{}")
            except json.JSONDecodeError as exc:
                raise PrunescopeError(f"keyword arguments must be a JSON object, e.g. {{\"num_classes\": 10}}: "
                                      f"{exc}") from exc
            if not isinstance(kwargs, dict):
                raise PrunescopeError(f"keyword arguments must be a JSON object, got {kwargs_text!r}")
            if wkind == "upload" and wfile is None:
                raise PrunescopeError("choose the weights file to upload first")
            weights = _keep(wfile, name, "weights") if wfile is not None else (wpath or None)
            return register(name.strip(), **{source: what.strip()}, kwargs=kwargs, weights=weights,
                            data=data_of(name.strip()), input_shape=parse_shape(shape_text),
                            task=None if task == "auto" else task, output=None if output == "auto" else output,
                            metric=metric.strip() or None,
                            judged=[t.strip() for t in judged.split(",") if t.strip()] or None,
                            score_threshold=_score(score))

        with st.spinner("Reading the data and checking that the model runs on it…"):
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

    from core.io.sessions import recent_sessions

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
