"""Layer surgery: a model as a sequence of blocks, cut and paste them, heal the seams.

A model's *blocks* are the children of one container (an ``nn.Sequential`` or
``nn.ModuleList``): by default the registry's ``ModelSpec.block_container``, else the
longest run of repeated children found in the model. A block is named by its module
path (``"layers.2"``).

Every edit is one engine operation, :func:`stitch`: the host's container is replaced
by a list of *pieces* (blocks of the host itself or of donor models, in any order).
Wherever two neighbouring pieces were not neighbours in their own model (a *seam*),
a :class:`Bridge` is inserted: identity when the shapes match and both sides come
from the same model, else an adapter (Linear on features / tokens, 1x1 Conv2d with an
integer-factor pooling or upsampling on images) fitted in closed form by ridge least
squares on calibration activations. The plan steps are thin front ends:

* :class:`Cut` removes blocks;
* :class:`Paste` inserts a copy of a block (of this model: copy / duplicate, or of a
  donor model) at a position;
* :class:`Compose` builds the container from segments of several models;
* :class:`Heal` trains only the adapters (and optionally their neighbours) for a few
  deterministic steps on the training split.

Kept blocks of a ``nn.Sequential`` keep their names, so ``"layers.3"`` still means the
same block after ``"layers.1"`` was cut, and per-layer prune overrides stay valid.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .models import clone_model, get_spec
from .plan import Step, register_step

BRIDGES = ("auto", "identity", "lstsq")  # seam policies (see Bridge / stitch)
HEAL_TRAIN = ("adapters", "adapters+neighbours")
RIDGE = 1e-3  # ridge term relative to the mean feature variance
MAX_FIT_ROWS = 32768  # rows (examples x positions) used for one least-squares fit
MAX_FLATTEN_FEATURES = 4096  # largest flattened input a (C,H,W) -> (F) adapter accepts


# ----------------------------------------------------------------------- containers
def _is_container(m: nn.Module) -> bool:
    return isinstance(m, (nn.Sequential, nn.ModuleList))


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` ("" is the model itself).

    Raises:
        ValueError: no such module; the message lists a few valid paths.
    """
    if path == "":
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        valid = [n for n, m in model.named_modules() if n and _is_container(m)]
        raise ValueError(f"module {path!r} not found in the model; containers: {valid}") from None


def container_candidates(model: nn.Module) -> list[str]:
    """Paths of every ``nn.Sequential`` / ``nn.ModuleList`` with two or more children,
    best default first (longest run of children of one type, then most children, then
    shallowest)."""
    scored = []
    for name, m in model.named_modules():
        if not _is_container(m) or len(m) < 2:
            continue
        types = Counter(type(c).__name__ for c in m.children())
        scored.append((-types.most_common(1)[0][1], -len(m), name.count(".") if name else -1, name))
    return [s[-1] for s in sorted(scored)]


def default_container(model: nn.Module, model_name: str | None = None) -> str:
    """The container whose children are the blocks: the spec's ``block_container`` when
    it exists in ``model``, else the best of :func:`container_candidates`.

    Raises:
        ValueError: the model has no Sequential / ModuleList to cut.
    """
    if model_name:
        try:
            spec_c = get_spec(model_name).block_container
        except ValueError:
            spec_c = None
        if spec_c is not None:
            try:
                if _is_container(get_module(model, spec_c)):
                    return spec_c
            except ValueError:
                pass
    cands = container_candidates(model)
    if not cands:
        raise ValueError("the model has no nn.Sequential or nn.ModuleList with two or more children; "
                         "surgery needs a container of blocks")
    return cands[0]


def _container(model: nn.Module, path: str) -> nn.Module:
    c = get_module(model, path)
    if not _is_container(c):
        raise ValueError(f"container {path!r} is a {type(c).__name__}, expected an nn.Sequential or "
                         f"nn.ModuleList (its forward must run its children in order); "
                         f"containers: {container_candidates(model)}")
    return c


def _join(container: str, child: str) -> str:
    return f"{container}.{child}" if container else child


def block_names(model: nn.Module, container: str) -> list[str]:
    """Full paths of the blocks in ``container``, in order."""
    c = _container(model, container)
    return [_join(container, n) for n, _ in c.named_children()]


def split_block(name: str) -> tuple[str, str]:
    """``"layers.2"`` -> ``("layers", "2")``; ``"3"`` -> ``("", "3")``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a block is named by its module path, e.g. 'layers.2', got {name!r}")
    parent, _, leaf = name.rpartition(".")
    return parent, leaf


def _locate(model: nn.Module, name: str, what: str = "model") -> tuple[str, int]:
    """(container path, position) of block ``name``.

    Raises:
        ValueError: not a child of a Sequential / ModuleList; lists the valid blocks.
    """
    parent, _ = split_block(name)
    try:
        names = block_names(model, parent)
    except ValueError:
        cont = default_container(model)
        raise ValueError(f"block {name!r} is not a block of the {what}; blocks: "
                         f"{block_names(model, cont)}") from None
    if name not in names:
        raise ValueError(f"block {name!r} is not in the {what}; blocks of {parent or 'the model'!r}: {names}")
    return parent, names.index(name)


def _set_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``path`` inside ``model`` (in place); returns the (new) root."""
    if path == "":
        return new
    parent, _, leaf = path.rpartition(".")
    setattr(get_module(model, parent), leaf, new)
    return model


# ----------------------------------------------------------------------- tracing
def _activations(model: nn.Module, container: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Inputs of each block of ``container`` and the last block's output: ``r_0 .. r_N``.

    Hooks are put on ``model`` for one forward pass and removed; call it on a private
    copy only (a shared base may be running in another thread).

    Raises:
        ValueError: a block was not called once with one tensor.
    """
    c = _container(model, container)
    children = list(c.children())
    n = len(children)
    ins: list[torch.Tensor | None] = [None] * n
    out: list[torch.Tensor | None] = [None]
    handles = []

    def pre(i):
        def hook(_m, args):
            if not args or not isinstance(args[0], torch.Tensor):
                raise ValueError(f"block {i} of {container!r} does not take one tensor")
            if ins[i] is None:
                ins[i] = args[0].detach()
        return hook

    def post(_m, _args, o):
        if not isinstance(o, torch.Tensor):
            raise ValueError(f"the last block of {container!r} does not return one tensor")
        out[0] = o.detach()

    try:
        for i, ch in enumerate(children):
            handles.append(ch.register_forward_pre_hook(pre(i)))
        if n:
            handles.append(children[-1].register_forward_hook(post))
        else:
            handles.append(c.register_forward_pre_hook(lambda _m, a: ins.append(a[0].detach())))
            handles.append(c.register_forward_hook(lambda _m, _a, o: out.__setitem__(0, o.detach())))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if n == 0:
        return [ins[-1], out[0]]
    missing = [i for i, t in enumerate(ins) if t is None]
    if missing or out[0] is None:
        raise ValueError(f"blocks {missing} of {container!r} were not called by the model's forward")
    return list(ins) + [out[0]]


@dataclass(frozen=True)
class Block:
    """One block of a container, with facts from a traced example batch."""

    name: str  # module path, e.g. "layers.2"
    index: int  # position in the container
    kind: str  # class name, e.g. "BasicBlock"
    in_shape: tuple[int, ...]  # one example's input shape
    out_shape: tuple[int, ...]  # one example's output shape
    params: int  # parameters of the block
    macs: int  # multiply-accumulates for one example
    adapter: bool  # a Bridge inserted by surgery

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["in_shape"], d["out_shape"] = list(self.in_shape), list(self.out_shape)
        return d


def _block_macs(block: nn.Module, x1: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        block(x1)
    return int(fc.get_total_flops() // 2)


def list_blocks(model: nn.Module, example: torch.Tensor, container: str | None = None,
                model_name: str | None = None) -> list[Block]:
    """The blocks of ``container`` (default: :func:`default_container`) with shapes, params, MACs.

    Args:
        model: the model (not changed: a private copy is traced).
        example: an input batch (at least one example) on the model's device.
        container: container path; default as described above.
        model_name: registry name, for the spec's default container.
    """
    container = default_container(model, model_name) if container is None else container
    m = clone_model(model)
    acts = _activations(m, container, example[:2])
    out = []
    for i, (name, b) in enumerate(_container(m, container).named_children()):
        out.append(Block(name=_join(container, name), index=i, kind=type(b).__name__,
                         in_shape=tuple(acts[i].shape[1:]), out_shape=tuple(acts[i + 1].shape[1:]),
                         params=sum(p.numel() for p in b.parameters()),
                         macs=_block_macs(b, acts[i][:1]), adapter=isinstance(b, Bridge)))
    return out


# ----------------------------------------------------------------------- bridges
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.resample(x))

    @property
    def is_identity(self) -> bool:
        return isinstance(self.resample, nn.Identity) and isinstance(self.proj, nn.Identity)

    def extra_repr(self) -> str:
        how = "identity" if self.is_identity else ("least squares" if self.fitted else "random init")
        return f"{list(self.in_shape)} -> {list(self.out_shape)}, {how}"


def _shape_str(s) -> str:
    return "(" + ", ".join(str(int(v)) for v in s) + ")"


def _resampler(si: tuple[int, ...], so: tuple[int, ...], where: str) -> nn.Module:
    """(C, H, W) -> (C, H', W') by an integer factor, or a ValueError naming the seam."""
    (hi, wi), (ho, wo) = si[1:], so[1:]
    if (hi, wi) == (ho, wo):
        return nn.Identity()
    if ho and wo and hi % ho == 0 and wi % wo == 0:
        return nn.AvgPool2d((hi // ho, wi // wo))
    if hi and wi and ho % hi == 0 and wo % wi == 0:
        return nn.Upsample(scale_factor=(float(ho // hi), float(wo // wi)), mode="nearest")
    raise ValueError(f"cannot bridge {where}: spatial size {hi}x{wi} -> {ho}x{wo} is not a whole-number "
                     f"down- or up-scaling (shapes {_shape_str(si)} -> {_shape_str(so)})")


def make_bridge(si: tuple[int, ...], so: tuple[int, ...], where: str) -> Bridge:
    """An unfitted (random init) adapter from per-example shape ``si`` to ``so``.

    Raises:
        ValueError: no Linear / 1x1-conv adapter maps these shapes; names ``where``.
    """
    si, so = tuple(si), tuple(so)
    if len(si) == len(so) == 1:
        return Bridge(si, so, nn.Identity(), nn.Linear(si[0], so[0]), False)
    if len(si) == len(so) == 2:
        if si[0] != so[0]:
            raise ValueError(f"cannot bridge {where}: {si[0]} tokens -> {so[0]} tokens "
                             f"(shapes {_shape_str(si)} -> {_shape_str(so)}); token counts must match")
        return Bridge(si, so, nn.Identity(), nn.Linear(si[1], so[1]), False)
    if len(si) == len(so) == 3:
        return Bridge(si, so, _resampler(si, so, where), nn.Conv2d(si[0], so[0], 1), False)
    if len(so) == 1 and len(si) > 1:
        flat = math.prod(si)
        if flat > MAX_FLATTEN_FEATURES:
            raise ValueError(f"cannot bridge {where}: flattening {_shape_str(si)} gives {flat} features, "
                             f"more than {MAX_FLATTEN_FEATURES}; shapes {_shape_str(si)} -> {_shape_str(so)}")
        return Bridge(si, so, nn.Flatten(), nn.Linear(flat, so[0]), False)
    raise ValueError(f"cannot bridge {where}: no Linear or 1x1-convolution adapter maps shape "
                     f"{_shape_str(si)} to {_shape_str(so)}")


def identity_bridge(shape: tuple[int, ...]) -> Bridge:
    """A parameter-free marker of a seam where the shapes match."""
    return Bridge(shape, shape, nn.Identity(), nn.Identity(), False)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """Activations as rows of features: (N, F) | (N*T, F) | (N*H*W, C)."""
    if t.dim() == 2:
        return t
    if t.dim() == 3:
        return t.reshape(-1, t.shape[-1])
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    raise ValueError(f"cannot fit an adapter on activations of shape {tuple(t.shape)}")


def ridge_lstsq(x: torch.Tensor, y: torch.Tensor, ridge: float = RIDGE) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ``y ~ x @ w + b`` by least squares with a small ridge term.

    Args:
        x: (n, d_in) inputs; y: (n, d_out) targets.
        ridge: penalty relative to the mean feature variance of ``x``.

    Returns:
        ``(w (d_in, d_out), b (d_out,))`` in float32.
    """
    x64, y64 = x.double(), y.double()
    xm, ym = x64.mean(0), y64.mean(0)
    xc, yc = x64 - xm, y64 - ym
    d = xc.shape[1]
    lam = ridge * float((xc * xc).sum()) / max(1, xc.shape[0]) / max(1, d) + 1e-12
    a = torch.cat([xc, math.sqrt(lam * xc.shape[0]) * torch.eye(d, dtype=xc.dtype, device=xc.device)])
    bb = torch.cat([yc, torch.zeros(d, yc.shape[1], dtype=yc.dtype, device=yc.device)])
    # gelsd works on cpu only; gels (QR) is fine with the ridge rows making `a` full rank
    driver = "gelsd" if a.device.type == "cpu" else None
    w = torch.linalg.lstsq(a, bb, driver=driver).solution
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
    xin = _rows(bridge.resample(a))
    yt = _rows(target)
    if len(xin) > MAX_FIT_ROWS:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(xin), generator=g)[:MAX_FIT_ROWS].to(xin.device)
        xin, yt = xin[idx], yt[idx]
    w, b = ridge_lstsq(xin, yt)
    p = bridge.proj
    if isinstance(p, nn.Linear):
        p.weight.copy_(w.t())
        p.bias.copy_(b)
    else:  # 1x1 conv
        p.weight.copy_(w.t().reshape(p.weight.shape))
        p.bias.copy_(b)
    bridge.fitted = True
    return bridge


def _seam_bridge(a: torch.Tensor, target: torch.Tensor, policy: str, same_model: bool, where: str,
                 seed: int) -> Bridge:
    """The adapter for one seam under ``policy`` ("auto" | "identity" | "lstsq")."""
    si, so = tuple(a.shape[1:]), tuple(target.shape[1:])
    if policy == "identity":
        if si != so:
            raise ValueError(f"cannot bridge {where} with identity: shapes {_shape_str(si)} -> "
                             f"{_shape_str(so)} differ; use bridge 'lstsq' (or 'auto')")
        return identity_bridge(si)
    if policy == "auto" and si == so and same_model:
        return identity_bridge(si)
    return fit_bridge(make_bridge(si, so, where).to(a.device), a, target, seed)


# ----------------------------------------------------------------------- stitching
@dataclass(frozen=True)
class Piece:
    """One block of the new container (internal to :func:`stitch`)."""

    source: str  # "self" or a donor model name
    container: str  # container path in the source
    index: int  # position in the source container


def _validate_policy(name: str, v: str) -> None:
    if v not in BRIDGES:
        raise ValueError(f"{name} must be one of {BRIDGES}, got {v!r}")


def _validate_seed(seed) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def _safe(s: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", s)


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def paired_inputs(ctx, donor: str, x_host: torch.Tensor, seed: int) -> torch.Tensor:
    """Calibration inputs for ``donor`` showing the same examples as ``x_host``.

    Same input shape: the same tensor. Else the donor dataset's copy of the same
    training examples when the two datasets share their split (same labels, in
    order), else images resized to the donor's input size.

    Raises:
        ValueError: no way to feed the same examples to the donor.
    """
    from .data import get_dataset, stratified_subset

    dspec, hspec = get_spec(donor), get_spec(ctx.model_name)
    if tuple(dspec.input_shape) == tuple(x_host.shape[1:]):
        return x_host
    hs, ds = get_dataset(hspec.dataset), get_dataset(dspec.dataset)
    if ds.y_train.shape == hs.y_train.shape and torch.equal(ds.y_train, hs.y_train):
        idx = stratified_subset(hs.y_train, len(x_host), seed)
        if torch.equal(hs.x_train[idx].to(x_host.device), x_host):
            return ds.x_train[idx].to(x_host.device)
    ish = tuple(dspec.input_shape)
    if len(ish) == 3 and x_host.dim() == 4 and ish[0] == x_host.shape[1]:
        return F.interpolate(x_host, size=ish[1:], mode="bilinear", align_corners=False)
    raise ValueError(f"cannot feed calibration examples of {ctx.model_name!r} (shape "
                     f"{_shape_str(x_host.shape[1:])}) to donor {donor!r} (input {_shape_str(ish)})")


class _Sources:
    """Private copies of the host and donors, with their calibration activations."""

    def __init__(self, host: nn.Module, ctx, seed: int, acts_cache: dict | None = None):
        self.ctx, self.seed = ctx, seed
        self.models: dict[str, nn.Module] = {"self": host}
        self.x: dict[str, torch.Tensor] = {"self": ctx.calibration(seed)[0]}
        self.acts = acts_cache if acts_cache is not None else {}

    def model(self, source: str) -> nn.Module:
        if source not in self.models:
            if not isinstance(source, str) or not source:
                raise ValueError(f"source must be 'self' or a model name, got {source!r}")
            self.models[source] = clone_model(self.ctx.donor(source))  # never touch the shared donor
            self.x[source] = paired_inputs(self.ctx, source, self.x["self"], self.seed)
        return self.models[source]

    def activations(self, source: str, container: str) -> list[torch.Tensor]:
        key = (source, container)
        if key not in self.acts:
            self.acts[key] = _activations(self.model(source), container, self.x[source])
        return self.acts[key]


def stitch(model: nn.Module, ctx, container: str, pieces: list[Piece], policy: str = "auto",
           seed: int = 0, names: list[str | None] | None = None, acts_cache: dict | None = None) -> nn.Module:
    """A copy of ``model`` whose ``container`` holds ``pieces``, with bridges at the seams.

    Args:
        model: the host (not changed).
        ctx: an ``ApplyContext`` (calibration data, donors).
        container: path of the host container to replace.
        pieces: the new blocks in order.
        policy: "auto" (identity where shapes match and both sides come from one model,
            else least squares), "identity" (shapes must match) or "lstsq" (always fitted).
        seed: calibration batch and row-sampling seed.
        names: optional names for the pieces (default: kept host blocks keep theirs).
        acts_cache: activations to reuse between calls on the same model and seed.

    Returns:
        The new model (eval mode).

    Raises:
        ValueError: a block does not exist, or a seam cannot be bridged (names both sides).
    """
    _validate_policy("bridge", policy)
    host = clone_model(model)
    src = _Sources(host, ctx, seed, acts_cache)
    old = _container(host, container)
    old_names = [n for n, _ in old.named_children()]
    host_acts = src.activations("self", container)
    n_host = len(old_names)
    used: set[tuple[str, str, int]] = set()
    # the first use of each host block keeps its name; new blocks and bridges get fresh ones
    keep_name, seen_idx = set(), set()
    for k, p in enumerate(pieces):
        if p.source == "self" and p.container == container and 0 <= p.index < n_host \
                and p.index not in seen_idx \
                and not (names and names[k]):
            keep_name.add(k)
            seen_idx.add(p.index)
    taken: set[str] = {old_names[pieces[k].index] for k in keep_name}
    out: list[tuple[str, nn.Module]] = []
    state = Piece("self", container, 0)
    prev_label = "the container input"
    a = host_acts[0]

    def label(p: Piece) -> str:
        nm = block_names(src.model(p.source), p.container)[p.index]
        return nm if p.source == "self" else f"{p.source}:{nm}"

    def add_seam(target: torch.Tensor, target_source: str, next_label: str):
        nonlocal a
        where = f"{prev_label} -> {next_label}"
        br = _seam_bridge(a, target, policy, state.source == target_source, where, seed)
        out.append((_unique("bridge", taken), br))
        a = br(a)

    with torch.no_grad():
        for k, p in enumerate(pieces):
            m = src.model(p.source)
            blocks = list(_container(m, p.container).children())
            if not 0 <= p.index < len(blocks):
                raise ValueError(f"{p.source}: container {p.container!r} has {len(blocks)} blocks, "
                                 f"no block at position {p.index}")
            if p != state:
                add_seam(src.activations(p.source, p.container)[p.index], p.source, label(p))
            blk = blocks[p.index]
            key = (p.source, p.container, p.index)
            if p.source != "self" or key in used:
                blk = copy.deepcopy(blk)
            used.add(key)
            if names and names[k]:
                nm = names[k]
            elif k in keep_name:
                nm = old_names[p.index]
            else:
                leaf = split_block(block_names(m, p.container)[p.index])[1]
                nm = f"{leaf}_copy" if p.source == "self" else f"{p.source}_{leaf}"
            out.append((nm if k in keep_name else _unique(_safe(nm), taken), blk))
            a = blk(a)
            state = Piece(p.source, p.container, p.index + 1)
            prev_label = label(p)
        end = Piece("self", container, n_host)
        if state != end:
            add_seam(host_acts[n_host], "self", "the container output")

    if isinstance(old, nn.Sequential):
        new = nn.Sequential(OrderedDict(out))
    else:
        new = nn.ModuleList([m for _, m in out])
    new.train(old.training)
    host = _set_module(host, container, new)
    host.eval()
    return host


# ----------------------------------------------------------------------- steps
@register_step
@dataclass(frozen=True)
class Cut(Step):
    """Remove blocks; bridge each gap (identity where shapes match, else least squares)."""

    op: ClassVar[str] = "cut"
    blocks: tuple[str, ...] = ()  # block paths to remove, all in one container, e.g. ("layers.1",)
    bridge: str = "auto"  # "auto" | "identity" (shapes must match) | "lstsq" (always fitted)
    seed: int = 0  # calibration batch seed

    def __post_init__(self):
        if not self.blocks or not all(isinstance(b, str) and b for b in self.blocks):
            raise ValueError(f"cut.blocks must be one or more block paths, got {self.blocks!r}")
        if len(set(self.blocks)) != len(self.blocks):
            raise ValueError(f"cut.blocks names a block twice: {list(self.blocks)}")
        parents = {split_block(b)[0] for b in self.blocks}
        if len(parents) != 1:
            raise ValueError(f"cut.blocks must all be in one container, got {list(self.blocks)}")
        _validate_policy("bridge", self.bridge)
        _validate_seed(self.seed)

    @property
    def container(self) -> str:
        return split_block(self.blocks[0])[0]

    def build(self, model: nn.Module, ctx, acts_cache: dict | None = None) -> nn.Module:
        cont = self.container
        pos = {_locate(model, b)[1] for b in self.blocks}
        n = len(block_names(model, cont))
        pieces = [Piece("self", cont, i) for i in range(n) if i not in pos]
        return stitch(model, ctx, cont, pieces, self.bridge, self.seed, acts_cache=acts_cache)

    def describe(self) -> str:
        return f"cut {', '.join(self.blocks)} (bridge {self.bridge})"


@register_step
@dataclass(frozen=True)
class Paste(Step):
    """Insert a copy of a block (of this model, or of a donor model) at a position."""

    op: ClassVar[str] = "paste"
    block: str = ""  # block path in the source model, e.g. "layers.1"
    source: str = "self"  # "self" (copy / duplicate) or a registered donor model name
    at: int = 0  # position in the target container (0 = first, len = after the last)
    adapter: str = "auto"  # "auto" | "identity" (shapes must match) | "lstsq" (always fitted)
    into: str | None = None  # target container (default: the block's own for "self", else the default)
    seed: int = 0  # calibration batch seed

    def __post_init__(self):
        split_block(self.block)
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"paste.source must be 'self' or a model name, got {self.source!r}")
        if not isinstance(self.at, int) or isinstance(self.at, bool) or self.at < 0:
            raise ValueError(f"paste.at must be a position >= 0, got {self.at!r}")
        _validate_policy("adapter", self.adapter)
        if self.into is not None and not isinstance(self.into, str):
            raise ValueError(f"paste.into must be a container path or None, got {self.into!r}")
        _validate_seed(self.seed)

    def target_container(self, model: nn.Module, ctx) -> str:
        if self.into is not None:
            return self.into
        if self.source == "self":
            return split_block(self.block)[0]
        return default_container(model, ctx.model_name)

    def build(self, model: nn.Module, ctx) -> nn.Module:
        cont = self.target_container(model, ctx)
        n = len(block_names(model, cont))
        if self.at > n:
            raise ValueError(f"paste.at must be in [0, {n}] for container {cont!r}, got {self.at}")
        src_model = model if self.source == "self" else ctx.donor(self.source)
        scont, sidx = _locate(src_model, self.block, "model" if self.source == "self" else
                              f"donor {self.source!r}")
        pieces = [Piece("self", cont, i) for i in range(self.at)]
        pieces += [Piece(self.source, scont, sidx)]
        pieces += [Piece("self", cont, i) for i in range(self.at, n)]
        # the pasted copy gets the new name; the host's blocks keep theirs
        leaf = split_block(self.block)[1]
        names: list[str | None] = [None] * len(pieces)
        names[self.at] = f"{leaf}_copy" if self.source == "self" else f"{self.source}_{leaf}"
        return stitch(model, ctx, cont, pieces, self.adapter, self.seed, names=names)

    def describe(self) -> str:
        src = "" if self.source == "self" else f" from {self.source}"
        return f"paste {self.block}{src} at {self.at} (adapter {self.adapter})"


@dataclass(frozen=True)
class Segment:
    """Consecutive blocks taken from one model, for :class:`Compose`."""

    source: str = "self"  # "self" or a registered donor model name
    blocks: tuple[str, ...] = ()  # block paths in the source, in order, e.g. ("layers.0", "layers.1")

    def __post_init__(self):
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"segment.source must be 'self' or a model name, got {self.source!r}")
        if not isinstance(self.blocks, tuple) or not all(isinstance(b, str) and b for b in self.blocks):
            raise ValueError(f"segment.blocks must be block paths, got {self.blocks!r}")


@register_step
@dataclass(frozen=True)
class Compose(Step):
    """Rebuild a container from segments of several models.

    The model's own parts outside the container (stem, head) stay; the container
    becomes the segments' blocks in order, with adapters at every seam. Example: the
    first two blocks of this model, then two blocks of a donor, then this model's head::

        Compose((Segment("self", ("layers.0", "layers.1")),
                 Segment("digits_cnn", ("features.1", "features.2"))))
    """

    op: ClassVar[str] = "compose"
    segments: tuple[Segment, ...] = ()  # in order; may be empty (the container becomes one bridge)
    into: str | None = None  # container of this model to rebuild (default: the model's default)
    adapter: str = "auto"  # seam policy, as for Paste
    seed: int = 0  # calibration batch seed

    def __post_init__(self):
        for s in self.segments:
            if not isinstance(s, Segment):
                raise TypeError(f"compose.segments must hold Segment, got {type(s).__name__}")
        _validate_policy("adapter", self.adapter)
        if self.into is not None and not isinstance(self.into, str):
            raise ValueError(f"compose.into must be a container path or None, got {self.into!r}")
        _validate_seed(self.seed)

    @classmethod
    def _coerce(cls, kwargs: dict) -> dict:
        kwargs = dict(kwargs)
        segs = kwargs.get("segments", ())
        if not isinstance(segs, (list, tuple)):
            raise ValueError(f"compose.segments must be a list, got {segs!r}")
        out = []
        for s in segs:
            if isinstance(s, Segment):
                out.append(s)
            elif isinstance(s, dict):
                out.append(Segment(source=s.get("source", "self"), blocks=tuple(s.get("blocks", ()))))
            else:
                raise ValueError(f"bad segment {s!r}; expected {{'source': ..., 'blocks': [...]}}")
        kwargs["segments"] = tuple(out)
        return kwargs

    def build(self, model: nn.Module, ctx) -> nn.Module:
        cont = self.into if self.into is not None else default_container(model, ctx.model_name)
        pieces = []
        for s in self.segments:
            m = model if s.source == "self" else ctx.donor(s.source)
            for b in s.blocks:
                c, i = _locate(m, b, "model" if s.source == "self" else f"donor {s.source!r}")
                pieces.append(Piece(s.source, c, i))
        return stitch(model, ctx, cont, pieces, self.adapter, self.seed)

    def describe(self) -> str:
        parts = [f"{'' if s.source == 'self' else s.source + ':'}{','.join(s.blocks)}" for s in self.segments]
        return "compose " + " + ".join(parts or ["(empty)"])


# ----------------------------------------------------------------------- heal
def adapters(model: nn.Module) -> dict[str, Bridge]:
    """Bridges in ``model`` by module path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, Bridge)}


def heal_parameters(model: nn.Module, train: str) -> dict[str, nn.Parameter]:
    """Parameters heal trains: every Bridge's, plus for "adapters+neighbours" those of
    the blocks right before and after each Bridge in its container.

    Raises:
        ValueError: unknown ``train``, or nothing to train.
    """
    if train not in HEAL_TRAIN:
        raise ValueError(f"train must be one of {HEAL_TRAIN}, got {train!r}")
    chosen: set[str] = set(adapters(model))
    if train == "adapters+neighbours":
        for cname, c in model.named_modules():
            if not _is_container(c):
                continue
            kids = list(c.named_children())
            for i, (_, ch) in enumerate(kids):
                if isinstance(ch, Bridge):
                    for j in (i - 1, i + 1):
                        if 0 <= j < len(kids) and not isinstance(kids[j][1], Bridge):
                            chosen.add(_join(cname, kids[j][0]))
    params = {}
    for n, p in model.named_parameters():
        if any(n.startswith(c + ".") for c in chosen):
            params[n] = p
    if not params:
        what = "adapters" if train == "adapters" else "adapters or blocks next to them"
        raise ValueError(f"heal: the model has no trainable {what}; cut or paste blocks first "
                         f"(identity seams have no parameters: use train='adapters+neighbours' "
                         f"or bridge 'lstsq')")
    return params


def _digest(model: nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    for n, m in model.named_modules():
        h.update(f"{n}:{type(m).__name__}".encode())
    return h.hexdigest()


_HEAL_MEMO: "OrderedDict[tuple, tuple[dict, dict]]" = OrderedDict()
_HEAL_MEMO_SIZE = 4


def heal(model: nn.Module, ctx, steps: int = 100, lr: float = 1e-3, train: str = "adapters", *,
         seed: int = 0, batch_size: int = 64, progress: Callable[[int, int, float], None] | None = None,
         should_stop: Callable[[], bool] | None = None) -> tuple[nn.Module, dict]:
    """Train only the adapters (and optionally their neighbours) of a copy of ``model``.

    Deterministic under ``seed``: the model stays in eval mode (BatchNorm statistics of
    frozen blocks are not touched), batches are drawn from the training split by a
    seeded generator, and Adam updates only the chosen parameters. Stopping early after
    ``k`` steps gives exactly the model ``Heal(steps=k)`` replays to.

    Args:
        model: the model (not changed).
        ctx: ``ApplyContext`` (train split, calibration batch, device).
        steps: optimisation steps; lr: Adam learning rate; train: "adapters" |
            "adapters+neighbours"; batch_size: examples per step.
        progress: called as ``progress(step_done, steps, loss)``.
        should_stop: polled before every step; True stops training.

    Returns:
        ``(healed model, info)`` with ``info = {"before": {"loss", "accuracy"},
        "after": {...}, "losses": [...], "steps_run": k, "stopped": bool,
        "trained_params": n}``; before / after are measured on the calibration batch.

    Raises:
        ValueError: bad arguments or nothing to train.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    m = clone_model(model)
    m.eval()
    params = heal_parameters(m, train)
    spec = get_spec(ctx.model_name)
    fidelity = spec.task != "classification"
    base = ctx.donor(ctx.model_name) if fidelity else None

    def targets(x, y):
        if fidelity:
            with torch.no_grad():
                return base(x).argmax(1)
        return y

    xc, yc = ctx.calibration(seed)
    tc = targets(xc, yc)

    def measure() -> dict:
        with torch.no_grad():
            out = m(xc)
        return {"loss": float(F.cross_entropy(out.float(), tc)), "accuracy": float((out.argmax(1) == tc).float().mean())}

    before = measure()
    for p in m.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    xt, yt = ctx.train_split()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(list(params.values()), lr=float(lr))
    losses, done, stopped = [], 0, False
    for step in range(steps):
        if should_stop is not None and should_stop():
            stopped = True
            break
        idx = torch.randint(0, len(xt), (batch_size,), generator=g)
        x, y = xt[idx].to(ctx.device), yt[idx].to(ctx.device)
        loss = F.cross_entropy(m(x).float(), targets(x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if progress is not None:
            progress(done, steps, losses[-1])
    for p in m.parameters():
        p.requires_grad_(False)
    m.eval()
    info = {"before": before, "after": measure(), "losses": losses, "steps_run": done, "stopped": stopped,
            "trained_params": int(sum(p.numel() for p in params.values()))}
    return m, info


@register_step
@dataclass(frozen=True)
class Heal(Step):
    """Briefly train the adapters (and optionally their neighbours) on the training split."""

    op: ClassVar[str] = "heal"
    steps: int = 100  # optimisation steps (batches)
    lr: float = 1e-3  # Adam learning rate
    train: str = "adapters"  # "adapters" | "adapters+neighbours"
    seed: int = 0  # batch order and calibration seed
    batch_size: int = 64  # examples per step

    def __post_init__(self):
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise ValueError(f"heal.steps must be an integer >= 0, got {self.steps!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise ValueError(f"heal.lr must be a positive number, got {self.lr!r}")
        if self.train not in HEAL_TRAIN:
            raise ValueError(f"heal.train must be one of {HEAL_TRAIN}, got {self.train!r}")
        _validate_seed(self.seed)
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"heal.batch_size must be an integer >= 1, got {self.batch_size!r}")

    def run(self, model: nn.Module, ctx, progress=None, should_stop=None) -> tuple[nn.Module, dict]:
        """:func:`heal` with this step's settings; the result is memoised by input weights,
        so the plan replaying this step right after an interactive heal costs nothing."""
        key = (_digest(model), str(ctx.device), ctx.model_name, self)
        hit = _HEAL_MEMO.get(key)
        if hit is not None:
            m = clone_model(model)
            m.load_state_dict(hit[0])
            _HEAL_MEMO.move_to_end(key)
            return m.eval(), dict(hit[1])
        m, info = heal(model, ctx, self.steps, self.lr, self.train, seed=self.seed, batch_size=self.batch_size,
                       progress=progress, should_stop=should_stop)
        done = dataclasses.replace(self, steps=info["steps_run"])
        _HEAL_MEMO[(key[0], key[1], key[2], done)] = ({k: v.clone() for k, v in m.state_dict().items()}, info)
        while len(_HEAL_MEMO) > _HEAL_MEMO_SIZE:
            _HEAL_MEMO.popitem(last=False)
        return m, info

    def build(self, model: nn.Module, ctx) -> nn.Module:
        return self.run(model, ctx)[0]

    def describe(self) -> str:
        return f"heal {self.train} for {self.steps} steps (lr {self.lr:g})"


__all__ = ["Block", "Bridge", "Cut", "Paste", "Compose", "Segment", "Heal", "Piece", "BRIDGES", "HEAL_TRAIN",
           "list_blocks", "default_container", "container_candidates", "block_names", "stitch", "heal",
           "heal_parameters", "adapters", "make_bridge", "fit_bridge", "ridge_lstsq", "paired_inputs",
           "get_module", "split_block"]
