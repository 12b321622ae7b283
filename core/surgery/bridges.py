"""Bridges: the adapters at seams, fitted in closed form by ridge least squares.

A :class:`Bridge` is ``proj(resample(x))``: Linear on features or tokens, a 1x1
Conv2d after an integer-factor pooling or upsampling on feature maps (a Linear on the
last axis for channels-last (H, W, C) maps, as Swin's stages give; the layout is read
from the shapes), or Flatten + Linear for (C, H, W) -> (F). Plain modules, so the model scripts and exports.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from core.errors import ModelError
from core.plan.report import Seam

RIDGE = 1e-3  # ridge term relative to the mean feature variance
MAX_FIT_ROWS = 32768  # rows (examples x positions) used for one least-squares fit
MAX_FLATTEN_FEATURES = 4096  # largest flattened input a (C,H,W) -> (F) adapter accepts


class Bridge(nn.Module):
    """An adapter at a seam: ``proj(resample(x))``.

    ``resample`` is Identity, AvgPool2d (integer downsampling), Upsample (integer
    nearest upsampling) or Flatten; ``proj`` is Identity, Linear (last axis) or a 1x1
    Conv2d. Plain modules only, so the model exports to ONNX / torch.export / TorchScript.
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], resample: nn.Module,
                 proj: nn.Module, fitted: bool):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.fitted = bool(fitted)
        self.resample = resample
        self.proj = proj
        # in a carried container (``carry.py``: MViT's blocks pass ``(x, thw)`` along) a bridge returns
        # ``(y, *tail)``: the tail it was given where that is what the next block expects
        # (``carry_through``), else the tail the next block was given in the trace (``carry``)
        self.carry: tuple | None = None
        self.carry_through = False
        # (H, W, C) activations (Swin's stages): features on the last axis, proj a Linear
        self.channels_last = isinstance(resample, _ChannelsLast) or (
            len(self.in_shape) == 3 and isinstance(proj, nn.Linear))

    def __call__(self, x: torch.Tensor, *args, **_kwargs):
        # a layer of a transformers model is called with its masks, positions and cache too: a
        # bridge in its place maps the hidden states only (forward keeps one argument: it scripts)
        y = super().__call__(x)
        carry = getattr(self, "carry", None)  # a bridge pickled before carried containers has none
        if carry is None:
            return y
        return (y, *(args if self.carry_through else carry))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.resample(x))

    @property
    def is_identity(self) -> bool:
        return isinstance(self.resample, nn.Identity) and isinstance(self.proj, nn.Identity)

    def extra_repr(self) -> str:
        how = "identity" if self.is_identity else ("least squares" if self.fitted else "random init")
        return f"{list(self.in_shape)} -> {list(self.out_shape)}, {how}"


class _ChannelsLast(nn.Module):
    """A (C, H, W) resampler applied to (H, W, C) activations."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _spatial(si: tuple[int, ...], so: tuple[int, ...], where: str) -> tuple[nn.Module, bool]:
    """(resampler, channels_last) for 3-D per-example shapes. The layout is read from the
    shapes: (C, H, W) first, unless both look like square (H, H, C) maps and not like
    (C, H, H) ones (Swin's stages are channels-last); the other layout is tried when the
    first is not a whole-number scaling.

    Raises:
        ModelError: neither layout is a whole-number down- or up-scaling (both named)."""
    cl_like = si[0] == si[1] and so[0] == so[1]
    cf_like = si[1] == si[2] and so[1] == so[2]
    order = (True, False) if cl_like and not cf_like else (False, True)
    errors = []
    for last in order:
        a, b = ((si[2], si[0], si[1]), (so[2], so[0], so[1])) if last else (si, so)
        try:
            return _resampler(a, b, where), last
        except ModelError as exc:
            errors.append((last, exc))
    raise ModelError(f"cannot bridge {where}: spatial size {si[1]}x{si[2]} -> {so[1]}x{so[2]} read as (C, H, W), "
                     f"or {si[0]}x{si[1]} -> {so[0]}x{so[1]} read as channels-last (H, W, C), is not a whole-number "
                     f"down- or up-scaling (shapes {shape_str(si)} -> {shape_str(so)}); cut at another block, or "
                     "where the spatial sizes match")


def _resampler(si: tuple[int, ...], so: tuple[int, ...], where: str) -> nn.Module:
    """(C, H, W) -> (C, H', W') by an integer factor, or a ModelError naming the seam."""
    (hi, wi), (ho, wo) = si[1:], so[1:]
    if (hi, wi) == (ho, wo):
        return nn.Identity()
    if ho and wo and hi % ho == 0 and wi % wo == 0:
        return nn.AvgPool2d((hi // ho, wi // wo))
    if hi and wi and ho % hi == 0 and wo % wi == 0:
        return nn.Upsample(scale_factor=(float(ho // hi), float(wo // wi)), mode="nearest")
    raise ModelError(f"cannot bridge {where}: spatial size {hi}x{wi} -> {ho}x{wo} is not a whole-number "
                     f"down- or up-scaling (shapes {shape_str(si)} -> {shape_str(so)})")


def make_bridge(si: tuple[int, ...], so: tuple[int, ...], where: str) -> Bridge:
    """An unfitted (random init) adapter from per-example shape ``si`` to ``so``.

    Raises:
        ModelError: no Linear / 1x1-conv adapter maps these shapes; names ``where``.
    """
    si, so = tuple(si), tuple(so)
    if len(si) == len(so) == 1:
        return Bridge(si, so, nn.Identity(), nn.Linear(si[0], so[0]), False)
    if len(si) == len(so) == 2:
        if si[0] != so[0]:
            raise ModelError(f"cannot bridge {where}: {si[0]} tokens -> {so[0]} tokens "
                             f"(shapes {shape_str(si)} -> {shape_str(so)}); token counts must match")
        return Bridge(si, so, nn.Identity(), nn.Linear(si[1], so[1]), False)
    if len(si) == len(so) == 3:
        resample, last = _spatial(si, so, where)
        if last:  # (H, W, C): pool over H, W; a Linear on the channels
            return Bridge(si, so, resample if isinstance(resample, nn.Identity) else _ChannelsLast(resample),
                          nn.Linear(si[2], so[2]), False)
        return Bridge(si, so, resample, nn.Conv2d(si[0], so[0], 1), False)
    if len(so) == 1 and len(si) > 1:
        flat = math.prod(si)
        if flat > MAX_FLATTEN_FEATURES:
            raise ModelError(f"cannot bridge {where}: flattening {shape_str(si)} gives {flat} features, "
                             f"more than {MAX_FLATTEN_FEATURES}; shapes {shape_str(si)} -> {shape_str(so)}")
        return Bridge(si, so, nn.Flatten(), nn.Linear(flat, so[0]), False)
    raise ModelError(f"cannot bridge {where}: no Linear or 1x1-convolution adapter maps shape "
                     f"{shape_str(si)} to {shape_str(so)}")


def identity_bridge(shape: tuple[int, ...]) -> Bridge:
    """A parameter-free marker of a seam where the shapes match."""
    return Bridge(shape, shape, nn.Identity(), nn.Identity(), False)


def shape_str(s) -> str:
    return "(" + ", ".join(str(int(v)) for v in s) + ")"


def _rows(t: torch.Tensor, channels_last: bool = False, idx: torch.Tensor | None = None) -> torch.Tensor:
    """Activations as rows of features: (N, F) | (N*T, F) | (N*H*W, C); only the rows ``idx``
    (positions in that order) when given, gathered without copying the others."""
    if t.dim() == 4 and not channels_last:
        if idx is None:
            return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
        hw = t.shape[2] * t.shape[3]
        return t.flatten(2)[idx // hw, :, idx % hw]
    if t.dim() == 2 or t.dim() == 3 or t.dim() == 4:
        rows = t.reshape(-1, t.shape[-1])
        return rows if idx is None else rows[idx]
    raise ModelError(f"cannot fit an adapter on activations of shape {tuple(t.shape)}")


def _row_count(t: torch.Tensor, channels_last: bool) -> int:
    if t.dim() not in (2, 3, 4):
        raise ModelError(f"cannot fit an adapter on activations of shape {tuple(t.shape)}")
    return t.numel() // (t.shape[1] if t.dim() == 4 and not channels_last else t.shape[-1])


def ridge_lstsq(x: torch.Tensor, y: torch.Tensor, ridge: float = RIDGE) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ``y ~ x @ w + b`` by least squares with a small ridge term.

    Solved in float64 on the normal equations of the centred data, ``(XᵀX + λnI) w = XᵀY``
    (a Cholesky solve: the ridge makes the matrix positive definite), which is the ridge-
    augmented least-squares system ``[X; sqrt(λn) I] w = [Y; 0]`` in a d x d form.

    Args:
        x: (n, d_in) inputs; y: (n, d_out) targets.
        ridge: penalty relative to the mean feature variance of ``x``.

    Returns:
        ``(w (d_in, d_out), b (d_out,))`` in float32.
    """
    x64, y64 = x.double(), y.double()
    xm, ym = x64.mean(0), y64.mean(0)
    xc, yc = x64 - xm, y64 - ym
    n, d = xc.shape
    gram = xc.T @ xc
    lam = ridge * float(gram.diagonal().sum()) / max(1, n) / max(1, d) + 1e-12
    gram.diagonal().add_(lam * n)
    rhs = xc.T @ yc
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        w = torch.cholesky_solve(rhs, chol)
    else:  # not positive definite in floating point (an enormous feature scale): a least-squares solve
        w = torch.linalg.lstsq(gram, rhs).solution
    b = ym - xm @ w
    return w.float(), b.float()


@torch.no_grad()
def fit_bridge(bridge: Bridge, a: torch.Tensor, target: torch.Tensor, seed: int = 0) -> Bridge:
    """Fit ``bridge.proj`` in place so that ``bridge(a) ~ target`` (ridge least squares).

    Args:
        a: (N, *in_shape) activations entering the seam.
        target: (N, *out_shape) activations the next piece expects.
        seed: picks the rows when there are more than ``MAX_FIT_ROWS``.
    """
    if bridge.is_identity:
        return bridge
    src = bridge.resample(a)
    idx, n = None, _row_count(src, bridge.channels_last)
    if n > MAX_FIT_ROWS:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=g)[:MAX_FIT_ROWS].to(src.device)
    w, b = ridge_lstsq(_rows(src, bridge.channels_last, idx), _rows(target, bridge.channels_last, idx))
    p = bridge.proj
    if isinstance(p, nn.Linear):
        p.weight.copy_(w.t())
        p.bias.copy_(b)
    else:  # 1x1 conv
        p.weight.copy_(w.t().reshape(p.weight.shape))
        p.bias.copy_(b)
    bridge.fitted = True
    return bridge


def fit_error(bridge: Bridge, a: torch.Tensor, target: torch.Tensor, out: torch.Tensor | None = None) -> float:
    """Residual of ``bridge(a)`` against ``target`` over the target's variance (1 - R^2),
    summed in float64; ``out``: ``bridge(a)`` when already computed."""
    with torch.no_grad():
        out = bridge(a) if out is None else out
        d = out - target
        res = float(torch.sum(d * d, dtype=torch.float64))
        c = target - target.mean(0, keepdim=True, dtype=torch.float64).to(target.dtype)
        var = float(torch.sum(c * c, dtype=torch.float64))
    return res / var if var > 0 else (0.0 if res == 0 else math.inf)


def seam_bridge(a: torch.Tensor, target: torch.Tensor, policy: str, same_model: bool, where: str,
                seed: int) -> tuple[Bridge, Seam]:
    """The adapter for one seam under ``policy`` ("auto" | "identity" | "lstsq"), and its record.

    Raises:
        ModelError: identity asked where shapes differ, or no adapter maps the shapes.
    """
    return bridge_seam(a, target, policy, same_model, where, seed)[:2]


def bridge_seam(a: torch.Tensor, target: torch.Tensor, policy: str, same_model: bool, where: str,
                seed: int) -> tuple[Bridge, Seam, torch.Tensor]:
    """:func:`seam_bridge`, and the bridge's output on ``a`` (computed once for the fit error
    and for the chain that goes on from the seam)."""
    si, so = tuple(a.shape[1:]), tuple(target.shape[1:])
    if policy == "identity":
        if si != so:
            raise ModelError(f"cannot bridge {where} with identity: shapes {shape_str(si)} -> "
                             f"{shape_str(so)} differ; use bridge 'lstsq' (or 'auto')")
        return identity_bridge(si), Seam(where, "identity", si, so), a
    if policy == "auto" and si == so and same_model:
        return identity_bridge(si), Seam(where, "identity", si, so), a
    b = fit_bridge(make_bridge(si, so, where).to(a.device), a, target, seed)
    with torch.no_grad():
        out = b(a)
    return b, Seam(where, "lstsq", si, so, fit_error(b, a, target, out)), out


__all__ = ["Bridge", "make_bridge", "identity_bridge", "fit_bridge", "ridge_lstsq", "seam_bridge", "bridge_seam",
           "fit_error", "shape_str", "RIDGE", "MAX_FIT_ROWS"]
