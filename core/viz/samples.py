"""Example images of an evaluation set, drawn as the person's files show them.

An image set is stored normalised per channel, ``(pixel / 255 - mean) / std`` with
``std > 0`` (``core.sources.readers.read_image_folder``; the bundled digits:
``(p / 16 - 0.5) / 0.5``). Such a map keeps the order of values, so each channel's range over
the whole set maps back onto black..white: exactly the files' pixels when every channel spans
black to white somewhere in the set, a contrast stretch otherwise, and never inverted. The
images are drawn as RGB pictures (no colour scale that could reverse them).
"""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def channel_range(x) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum of ``x`` ``(N, C, H, W)`` (a tensor or an array),
    each ``(C,)`` float64: what black and white became after the normalisation."""
    if hasattr(x, "amin"):  # a tensor: reduced where it lives
        lo, hi = x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3))
        return lo.double().cpu().numpy(), hi.double().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x.min(axis=(0, 2, 3)), x.max(axis=(0, 2, 3))


def to_pixels(x, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Normalised images ``(N, C, H, W)`` as 8-bit RGB pictures ``(N, H, W, 3)``.

    Args:
        x: the images (an array or a CPU tensor).
        lo, hi: each channel's value of black and of white (:func:`channel_range` of the set).

    Returns:
        uint8 ``(N, H, W, 3)``: one channel is drawn grey, three as RGB; other channel
        counts show their first channel in grey.
    """
    x = np.asarray(x, dtype=np.float64)
    c = x.shape[1]
    lo, hi = np.asarray(lo, dtype=np.float64).reshape(1, c, 1, 1), np.asarray(hi, dtype=np.float64).reshape(1, c, 1, 1)
    unit = np.clip((x - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
    if c != 3:
        unit = np.repeat(unit[:, :1], 3, axis=1)
    return np.rint(unit * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def png_uri(pixels: np.ndarray) -> str:
    """An ``(H, W, 3)`` uint8 picture as a PNG data URI (lossless, small to send)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def sample_figure(pixels: np.ndarray, titles: Sequence[str]) -> go.Figure:
    """One picture per title, side by side (``pixels``: :func:`to_pixels`'s output)."""
    n = len(pixels)
    fig = make_subplots(rows=1, cols=max(n, 1), horizontal_spacing=0.01, subplot_titles=list(titles)[:n])
    for i in range(n):
        fig.add_trace(go.Image(source=png_uri(pixels[i]), hoverinfo="skip"), 1, i + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=130, margin=dict(l=0, r=0, t=24, b=0))
    return fig


__all__ = ["channel_range", "to_pixels", "png_uri", "sample_figure"]
