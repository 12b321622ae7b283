"""Stitching: one engine behind cut, paste and compose.

:func:`stitch` replaces a container of the host with a list of *pieces* (blocks of the
host or of donor models, in any order); wherever two neighbouring pieces were not
neighbours in their own model (a *seam*) a bridge goes in (``bridges.py``).
"""
from __future__ import annotations

import copy
import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError
from core.plan.report import Seam
from core.sources.bases import clone_model
from core.sources.models import get_spec
from core.surgery.blocks import block_names, container_of, set_module, split_block
from core.surgery.bridges import bridge_seam, shape_str
from core.surgery.carry import same
from core.surgery.rootview import RootView
from core.surgery.traces import (
    ROOT_TRACE,
    Trace,
    block_calls,
    first_tensor,
    memo_hit,
    memo_trace,
    traced_activations,
)

BRIDGES = ("auto", "identity", "lstsq")  # seam policies (see stitch)


@dataclass(frozen=True)
class Piece:
    """One block of the new container (internal to :func:`stitch`)."""

    source: str  # "self" or a donor model name
    container: str  # container path in the source
    index: int  # position in the source container


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
        ModelError: no way to feed the same examples to the donor.
    """
    from core.sources.datasets import get_dataset, stratified_subset

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
    raise ModelError(f"cannot feed calibration examples of {ctx.model_name!r} (shape "
                     f"{shape_str(x_host.shape[1:])}) to donor {donor!r} (input {shape_str(ish)})")


class _Sources:
    """Private copies of the host and donors, with their calibration activations.

    A source's trace (:class:`Trace`) comes from the apply context's memo of the source
    model when a stitch before this one traced it on the same batch, else from
    ``acts_cache``, else from one forward of its private copy (then kept in the memo). A
    root view's blocks run as a trace found them (which children ran, the input shape each
    saw: ``RootView.trace``); that is kept in the memo too, so a copy whose activations
    were traced earlier runs its blocks the same way."""

    def __init__(self, base: nn.Module, host: nn.Module, ctx, seed: int, acts_cache: dict | None = None):
        self.ctx, self.seed, self.base = ctx, seed, base
        self.models: dict[str, nn.Module] = {"self": host}
        self.x: dict[str, torch.Tensor] = {"self": ctx.calibration(seed)[0]}
        self.acts = acts_cache if acts_cache is not None else {}
        self.traces: dict[tuple[str, str], Trace] = {}

    def call(self, source: str, container: str, index: int, blk: nn.Module, a: torch.Tensor) -> torch.Tensor:
        """``blk(a)``, with what the source's forward passes that block besides its input."""
        tr = self.calls(source, container)
        args, kwargs = tr.extras[index] if index < len(tr.extras) else ((), {})
        return first_tensor(blk(a, *args, **kwargs))

    def calls(self, source: str, container: str) -> Trace:
        """The source's trace, with what its forward passed each block and what each returned after its
        tensor (one more forward of a private copy where the trace did not record them)."""
        tr = self.trace(source, container)
        if tr.extras is None or tr.tails is None:
            key = (source, container, "calls")  # kept beside the activations a caller shares between stitches
            if key not in self.acts:
                self.acts[key] = block_calls(clone_model(self.model(source)), container, self.x[source])
            tr.extras, tr.tails = self.acts[key]
        return tr

    def tail_before(self, p: Piece) -> tuple | None:
        """In a carried container, what reaches block ``p`` after its tensor in ``p``'s source (what the
        block before returned; the first block's extra arguments; after the last block, what it
        returned); None where the source's blocks pass nothing along."""
        tr = self.calls(p.source, p.container)
        if not tr.tails or not all(tr.tails):
            return None
        return tuple(tr.extras[0][0]) if p.index == 0 else tuple(tr.tails[min(p.index, len(tr.tails)) - 1])

    def model(self, source: str) -> nn.Module:
        if source not in self.models:
            if not isinstance(source, str) or not source:
                raise ModelError(f"source must be 'self' or a model name, got {source!r}")
            self.models[source] = clone_model(self.ctx.donor(source))  # never touch the shared donor
            self.x[source] = paired_inputs(self.ctx, source, self.x["self"], self.seed)
        return self.models[source]

    def trace(self, source: str, container: str) -> Trace:
        key = (source, container)
        if key not in self.traces:
            m = self.model(source)
            owner = self.base if source == "self" else self.ctx.donor(source)
            memo, x = self.ctx.memo(owner), self.x[source]
            hit = memo_hit(memo, container, owner, x)
            if hit is not None:
                tr = hit
            elif key in self.acts:
                tr = Trace(x, None, self.acts[key])
            else:
                tr = self.traces[key] = memo_trace(memo, container, owner, m, x)
                self.acts[key] = tr.acts
                return tr
            view = container_of(m, container)
            if isinstance(view, RootView) and ROOT_TRACE in memo:
                view.learn(memo[ROOT_TRACE])
            self.traces[key] = tr
        return self.traces[key]

    def activations(self, source: str, container: str) -> list[torch.Tensor]:
        return self.trace(source, container).acts


def _kept_names(pieces: list[Piece], container: str, n_host: int, names: list[str | None] | None) -> set[int]:
    """Positions of the pieces that keep their host block's name: the first use of each."""
    keep, seen = set(), set()
    for k, p in enumerate(pieces):
        if p.source == "self" and p.container == container and 0 <= p.index < n_host \
                and p.index not in seen and not (names and names[k]):
            keep.add(k)
            seen.add(p.index)
    return keep


class _Chain:
    """The new container being built, piece by piece, with the activation reaching its end."""

    def __init__(self, src: _Sources, container: str, policy: str, seed: int, taken: set[str]):
        self.src, self.policy, self.seed, self.taken = src, policy, seed, taken
        self.out: list[tuple[str, nn.Module]] = []
        self.seams: list[Seam] = []
        self.state = Piece("self", container, 0)  # the piece that would follow without a seam
        self.prev_label = "the container input"
        host = src.trace("self", container)
        self.host_acts, self.host_outs = host.acts, host.outs
        self.a = self.host_acts[0]
        self.todo: list[tuple[Piece, nn.Module]] = []  # blocks appended but not run on ``a`` yet
        self.clean = True  # no seam yet: ``a`` is what the host's own forward gave (its trace has it)
        self.owned = False  # ``a`` is this chain's own tensor (a trace's may be kept in the memo: never changed)
        self.used: set[tuple[str, str, int]] = set()

    def activation(self) -> torch.Tensor:
        """The activation reaching the end of the chain: the blocks not run yet run now (the
        blocks after the last seam never run unless a seam at the end needs them)."""
        if self.todo and not self.owned:
            self.a, self.owned = self.a.clone(), True  # a block may change its input in place
        for p, blk in self.todo:
            self.a = self.src.call(p.source, p.container, p.index, blk, self.a)
        self.todo = []
        return self.a

    def label(self, p: Piece) -> str:
        nm = block_names(self.src.model(p.source), p.container)[p.index]
        return nm if p.source == "self" else f"{p.source}:{nm}"

    def seam(self, p: Piece, next_label: str) -> None:
        """A bridge from the activation so far to what piece ``p`` saw in its source (``p`` one past the
        last block: the container's output). In a carried container the bridge returns its tensor
        with the tail ``p`` expects (``Bridge.carry``)."""
        where = f"{self.prev_label} -> {next_label}"
        target = self.src.activations(p.source, p.container)[p.index]
        a = self.activation()
        br, seam, self.a = bridge_seam(a, target, self.policy, self.state.source == p.source, where, self.seed)
        want = self.src.tail_before(p)
        if want is not None:
            br.carry, br.carry_through = want, same(self.src.tail_before(self.state), want)
        self.owned = self.owned if self.a is a else True
        self.out.append((_unique("bridge", self.taken), br))
        self.seams.append(seam)
        self.clean = False

    def add(self, p: Piece, name: str | None, keep: bool) -> None:
        """Append piece ``p`` (after a seam if it did not follow the last one in its model)."""
        m = self.src.model(p.source)
        blocks = list(container_of(m, p.container).children())
        if not 0 <= p.index < len(blocks):
            raise ModelError(f"{p.source}: container {p.container!r} has {len(blocks)} blocks, "
                             f"no block at position {p.index}")
        if p != self.state:
            self.seam(p, self.label(p))
        blk = blocks[p.index]
        key = (p.source, p.container, p.index)
        if p.source != "self" or key in self.used:
            blk = copy.deepcopy(blk)
        self.used.add(key)
        if name is None:
            leaf = split_block(block_names(m, p.container)[p.index])[1]
            name = f"{leaf}_copy" if p.source == "self" else f"{p.source}_{leaf}"
        self.out.append((name if keep else _unique(_safe(name), self.taken), blk))
        if self.clean and self.host_outs is not None and self.host_outs[p.index] is not None:
            self.a = self.host_outs[p.index]  # the host's own block on its own input: its traced output
        else:
            self.todo.append((p, blk))
        self.state = Piece(p.source, p.container, p.index + 1)
        self.prev_label = self.label(p)


def stitch(model: nn.Module, ctx, container: str, pieces: list[Piece], policy: str = "auto",
           seed: int = 0, names: list[str | None] | None = None, acts_cache: dict | None = None
           ) -> tuple[nn.Module, list[Seam]]:
    """A copy of ``model`` whose ``container`` holds ``pieces``, with bridges at the seams.

    Args:
        model: the host (not changed).
        ctx: an ``ApplyContext`` (calibration data, donors, memo).
        container: path of the host container to replace.
        pieces: the new blocks in order.
        policy: "auto" (identity where shapes match and both sides come from one model,
            else least squares), "identity" (shapes must match) or "lstsq" (always fitted).
        seed: calibration batch and row-sampling seed.
        names: optional names for the pieces (default: kept host blocks keep theirs).
        acts_cache: activations to reuse between calls on the same model and seed
            (``{("self", container): traced_activations(model, ctx, container, x)}``).

    Returns:
        ``(new model in eval mode, the seams with their bridges)``.

    Raises:
        ModelError: a block does not exist, or a seam cannot be bridged (names both sides).
    """
    if policy not in BRIDGES:
        raise ModelError(f"bridge must be one of {BRIDGES}, got {policy!r}")
    host = clone_model(model)
    src = _Sources(model, host, ctx, seed, acts_cache)
    old = container_of(host, container)
    old_names = [n for n, _ in old.named_children()]
    n_host = len(old_names)
    keep = _kept_names(pieces, container, n_host, names)
    chain = _Chain(src, container, policy, seed, {old_names[pieces[k].index] for k in keep})
    with torch.no_grad():
        for k, p in enumerate(pieces):
            given = names[k] if names and names[k] else None
            chain.add(p, old_names[p.index] if k in keep else given, k in keep)
        if chain.state != Piece("self", container, n_host):
            chain.seam(Piece("self", container, n_host), "the container output")
    if isinstance(old, nn.Sequential):
        new = nn.Sequential(OrderedDict(chain.out))
    else:
        new = nn.ModuleList([m for _, m in chain.out])
    new.train(old.training)
    host = set_module(host, container, new)
    host.eval()
    return host, chain.seams


__all__ = ["Piece", "stitch", "paired_inputs", "traced_activations", "BRIDGES", "ROOT_TRACE"]


