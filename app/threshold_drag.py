"""Drag the threshold on the histogram itself: a bidirectional Streamlit component.

The component is a static page (``app/threshold_drag/``: ``index.html``, ``main.js``,
``style.css``) that speaks Streamlit's v1 component protocol by hand and draws with the
plotly.js that the plotly package ships. The folder the app's server serves is assembled
once per content under the user's cache folder (the three files copied, plotly.min.js
hard-linked or copied from the installed package), so nothing is downloaded and no copy
of plotly.js is kept in the repository.

One source of truth: the handle is drawn at the value the page's slider holds; a drag
(or keys) sends ``{"value", "seq", "id"}`` back, and the page reads it with :func:`take`
before it draws its controls, writes the slider's key and applies it as a slider move
would. ``seq`` differs per release, so a release at the value of an earlier one is still
a release, and a value read once is never applied again.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import plotly
import streamlit as st
import streamlit.components.v1 as components
import torch

from core.ground.layers import prunable_layers
from core.viz.histograms import Histogram, histogram

ASSETS = Path(__file__).with_name("threshold_drag")
FILES = ("index.html", "main.js", "style.css")
HEIGHT = 300  # px of the component's frame


def plotly_js() -> Path:
    """plotly.js as the installed plotly package ships it."""
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "prunescope"


@cache
def site() -> Path:
    """The folder the component is served from, assembled on first use (per content: a
    changed asset or another plotly version gets a new folder)."""
    h = hashlib.sha256(plotly.__version__.encode())
    for name in FILES:
        h.update((ASSETS / name).read_bytes())
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"threshold_drag-{h.hexdigest()[:16]}"
    if (out / "index.html").is_file():
        return out
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".threshold_drag-"))
    try:
        os.link(plotly_js(), tmp / "plotly.min.js")
    except OSError:  # another file system, or links not allowed
        shutil.copy2(plotly_js(), tmp / "plotly.min.js")
    for name in FILES:
        shutil.copy2(ASSETS / name, tmp / name)
    try:
        tmp.rename(out)
    except OSError:  # another process assembled it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@cache
def _component():
    return components.declare_component("threshold_drag", path=str(site()))


# --- the bins (the JS computes the same while dragging) -------------------------------

def share_pruned(edges: Sequence[float], counts: Sequence[int], t: float, *, symmetric: bool = False) -> float:
    """The fraction of the binned values below ``t`` (``|x| < t`` when ``symmetric``), read
    from the bins, a bin cut by ``t`` counted in proportion to the part of it below ``t``
    (values spread evenly within a bin). 0 for empty bins."""
    e = np.asarray(edges, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    lo = np.maximum(e[:-1], -t) if symmetric else e[:-1]
    part = np.clip(np.minimum(e[1:], t) - lo, 0.0, None) / np.maximum(e[1:] - e[:-1], 1e-300)
    total = c.sum()
    return float((c * part).sum() / total) if total > 0 else 0.0


def threshold_for_share(edges: Sequence[float], counts: Sequence[int], share: float, *,
                        symmetric: bool = False) -> float:
    """The smallest threshold whose :func:`share_pruned` reaches ``share`` (bisection)."""
    e = np.asarray(edges, dtype=np.float64)
    lo = 0.0 if symmetric else float(e[0])
    hi = float(max(abs(e[0]), abs(e[-1]))) if symmetric else float(e[-1])
    for _ in range(60):
        mid = (lo + hi) / 2
        if share_pruned(e, counts, mid, symmetric=symmetric) < share:
            lo = mid
        else:
            hi = mid
    return hi


# --- the component ---------------------------------------------------------------------

def take(key: str, ident: str) -> float | None:
    """The value released on the handle of component ``key`` since the last call, if it was
    released on the histogram ``ident`` (another layer's release is not this one's); None
    when nothing new was released. Call it before drawing the controls it moves."""
    ss = st.session_state
    got = ss.get(key)
    if not isinstance(got, dict) or "seq" not in got or got.get("id") != ident:
        return None
    if ss.get(f"_{key}_seq") == got["seq"]:
        return None
    ss[f"_{key}_seq"] = got["seq"]
    return float(got["value"])


def threshold_histogram(edges: Sequence[float], counts: Sequence[int], value: float, *, key: str, ident: str,
                        unit: str, noun: str, share: bool = False, symmetric: bool = False, log: bool = False,
                        snap: bool = False, step: float = 0.01, vmax: float = 1.0, x_title: str = "",
                        at: float | None = None, height: int = HEIGHT) -> None:
    """Draw a histogram with its threshold as a draggable handle (mouse; keyboard: arrows
    move one ``step``, Page Up / Down ten, Home / End to the ends). What it releases is read
    with :func:`take` (``key``, ``ident``) on the next run.

    Args:
        edges, counts: the cached bins (``edges`` one longer than ``counts``).
        value: where the handle is: a threshold in ``unit``, or with ``share`` the fraction
            of the binned values pruned (the handle sits where the bins reach it).
        unit: the threshold's unit, e.g. ``"|w|"``; ``noun``: what is counted ("weights").
        symmetric: prune ``|x| < t`` (lines at ±t) instead of ``x < t``.
        log: log count axis; snap: the handle snaps to bin edges.
        step: the value's resolution (the slider's step); released values are rounded to it.
        vmax: the largest value the handle can send.
        at: where to draw the line until the handle is moved (the threshold the step's report
            says it used), instead of where the bins put ``value``; ignored when not finite.
    """
    _component()(edges=[float(v) for v in edges], counts=[int(v) for v in counts], value=float(value),
                 mode="share" if share else "threshold", symmetric=symmetric, log=log, snap=snap,
                 step=float(step), vmax=float(vmax), unit=unit, noun=noun, x_title=x_title, id=ident,
                 at=float(at) if at is not None and math.isfinite(at) else None,
                 height=height, key=key, default=None)


# --- the Prune page's weight histograms ----------------------------------------------------

def magnitude_histogram(model, hi: float, bins: int = 200, memo: dict | None = None) -> Histogram:
    """|w| of every prunable weight of ``model``, ``bins`` equal bins over [0, ``hi``] (binned
    layer by layer, so no copy of all weights is made; kept in ``memo``, the apply context's
    memo of ``model``: a handle's move reads it back)."""
    key = ("threshold_drag_magnitudes", bins, float(hi))
    if memo is not None and key in memo:
        return memo[key]
    counts = np.zeros(bins, dtype=np.int64)
    with torch.no_grad():
        for m in prunable_layers(model).values():
            counts += histogram(m.weight.detach().abs(), bins, 0.0, hi).counts
    out = Histogram(edges=np.linspace(0.0, hi, bins + 1), counts=counts, total=int(counts.sum()),
                    label="|w| of every prunable weight")
    if memo is not None:
        memo[key] = out
    return out


def global_histogram_ui(ws, src, wmax: float, at: float | None = None) -> None:
    """The Prune page's global amount as a handle on the |w| histogram of every prunable weight
    of ``src`` (the model the active step prunes): the threshold itself, or in sparsity mode
    the fraction pruned read from the bins. Reads the slider's key: one value both show."""
    ss = st.session_state
    mode = ss["global_mode"]
    h = magnitude_histogram(src, wmax, memo=ws.ctx.memo(src))
    share = mode == "sparsity"
    threshold_histogram(h.edges, h.counts, float(ss[f"global_{mode}"]), key="drag_global", ident=f"{ws.name}:{mode}",
                        unit="|w|", noun="weights", share=share, log=bool(ss.get("hist_log")),
                        snap=bool(ss.get("hist_snap")), step=0.01 if share else wmax / 200,
                        vmax=0.99 if share else wmax, x_title=h.label, at=at if share else None, height=240)
    st.caption("Drag the line, or focus its handle and use the arrow keys (fine) and Page Up / Down (coarse). "
               "The share at the handle is read from these bins while you drag; the plan and metrics follow on "
               "release.")


def layer_histogram_ui(ws, layer: str, hist: Histogram, *, log: bool, snap: bool, at: float | None = None) -> None:
    """The selected layer's weights with a handle at the fraction of them pruned (|w| below
    it); a release sets the layer's override (its slider's key: one value both show)."""
    st.markdown(f"**Weights of {layer}** · drag the line: fraction of its weights pruned")
    threshold_histogram(hist.edges, hist.counts, float(st.session_state.get(f"ov_{ws.name}_{layer}", 0.0)),
                        key="drag_layer", ident=layer_ident(ws.name, "weight", layer), unit="|w|", noun="weights",
                        share=True, symmetric=True, log=log, snap=snap, step=0.01, vmax=0.99,
                        x_title=hist.label or "weight", at=at)


def scores_histogram_ui(ws, layer: str, granularity: str, scores: np.ndarray, *, unit: str, x_title: str,
                        bins: int = 40, at: float | None = None) -> None:
    """A layer's importance scores (one per weight, or per unit of a structured granularity)
    with a handle at the fraction of them the layer's override prunes (scores below it);
    a release sets the override (its slider's key: one value both show)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(s, bins=bins, range=(lo, hi))
    ss = st.session_state
    noun = "weights" if granularity == "weight" else f"{granularity}s"
    threshold_histogram(edges, counts, float(ss.get(f"ov_{ws.name}_{layer}", 0.0)), key="drag_layer",
                        ident=layer_ident(ws.name, granularity, layer), unit=unit, noun=noun, share=True,
                        log=bool(ss.get("hist_log")), snap=bool(ss.get("hist_snap")), step=0.01, vmax=0.99,
                        x_title=x_title, at=at)


def layer_ident(workspace: str, granularity: str, layer: str) -> str:
    """What a layer handle's release names: the workspace, granularity and layer it was made on."""
    return f"{workspace}:{granularity}:{layer}"


__all__ = ["site", "share_pruned", "threshold_for_share", "take", "threshold_histogram", "HEIGHT",
           "magnitude_histogram", "global_histogram_ui", "layer_histogram_ui", "scores_histogram_ui", "layer_ident"]
