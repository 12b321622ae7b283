"""The surgery steps: Cut, Paste and Compose, thin front ends of :func:`stitch`.

Kept blocks of a ``nn.Sequential`` keep their names, so ``"layers.3"`` still means the
same block after ``"layers.1"`` was cut, and per-layer prune overrides stay valid.
Each step's report lists its seams with the bridge used and its fit error.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from core.errors import ModelError, StepError, echo
from core.ground.constraints import Checked, Interval, Items, Name, Options, Seed
from core.plan.report import StepReport
from core.plan.step import Step, register_step
from core.surgery.blocks import block_names, locate_block, split_block
from core.surgery.choice import default_container
from core.surgery.stitch import BRIDGES, Piece, stitch


def _report(op: str, what: str, seams) -> StepReport:
    fitted = [s for s in seams if s.bridge == "lstsq"]
    fit = "; ".join(f"{s.where}: fit error {s.fit_error:.3g}" for s in fitted)
    return StepReport(op, summary=f"{what}; {len(seams)} seam(s)" + (f" ({fit})" if fit else ""),
                      seams=list(seams))


@register_step
@dataclass(frozen=True)
class Cut(Step):
    """Remove blocks; bridge each gap (identity where shapes match, else least squares)."""

    op: ClassVar[str] = "cut"
    constraints = {"blocks": Items(Name(), min_items=1, unique=True), "bridge": Options(BRIDGES), "seed": Seed()}
    blocks: tuple[str, ...] = ()  # block paths to remove, all in one container, e.g. ("layers.1",)
    bridge: str = "auto"  # "auto" | "identity" (shapes must match) | "lstsq" (always fitted)
    seed: int = 0  # calibration batch seed

    def check(self):
        parents = {split_block(b)[0] for b in self.blocks}
        if len(parents) != 1:
            raise StepError(f"cut.blocks must all be in one container, got {echo(list(self.blocks))}")

    @property
    def container(self) -> str:
        return split_block(self.blocks[0])[0]

    def build(self, model: nn.Module, ctx, acts_cache: dict | None = None) -> tuple[nn.Module, StepReport]:
        cont = self.container
        pos = {locate_block(model, b)[1] for b in self.blocks}
        n = len(block_names(model, cont))
        pieces = [Piece("self", cont, i) for i in range(n) if i not in pos]
        new, seams = stitch(model, ctx, cont, pieces, self.bridge, self.seed, acts_cache=acts_cache)
        return new, _report(self.op, f"cut {len(self.blocks)} block(s) of {n}", seams)

    def describe(self) -> str:
        return f"cut {', '.join(self.blocks)} (bridge {self.bridge})"


@register_step
@dataclass(frozen=True)
class Paste(Step):
    """Insert a copy of a block (of this model, or of a donor model) at a position."""

    op: ClassVar[str] = "paste"
    constraints = {"block": Name(), "source": Name(), "at": Interval(0, 10**6, integer=True),
                   "adapter": Options(BRIDGES), "into": Name(optional=True, allow_empty=True), "seed": Seed()}
    block: str = ""  # block path in the source model, e.g. "layers.1"
    source: str = "self"  # "self" (copy / duplicate) or a registered donor model name
    at: int = 0  # position in the target container (0 = first, len = after the last)
    adapter: str = "auto"  # "auto" | "identity" (shapes must match) | "lstsq" (always fitted)
    into: str | None = None  # target container (default: the block's own for "self", else the default)
    seed: int = 0  # calibration batch seed

    def target_container(self, model: nn.Module, ctx) -> str:
        if self.into is not None:
            return self.into
        if self.source == "self":
            return split_block(self.block)[0]
        return default_container(model, ctx.model_name)

    def build(self, model: nn.Module, ctx) -> tuple[nn.Module, StepReport]:
        cont = self.target_container(model, ctx)
        n = len(block_names(model, cont))
        if self.at > n:
            raise ModelError(f"paste.at must be in [0, {n}] for container {cont!r}, got {self.at}")
        src_model = model if self.source == "self" else ctx.donor(self.source)
        scont, sidx = locate_block(src_model, self.block, "model" if self.source == "self" else
                              f"donor {self.source!r}")
        pieces = [Piece("self", cont, i) for i in range(self.at)]
        pieces += [Piece(self.source, scont, sidx)]
        pieces += [Piece("self", cont, i) for i in range(self.at, n)]
        # the pasted copy gets the new name; the host's blocks keep theirs
        leaf = split_block(self.block)[1]
        names: list[str | None] = [None] * len(pieces)
        names[self.at] = f"{leaf}_copy" if self.source == "self" else f"{self.source}_{leaf}"
        new, seams = stitch(model, ctx, cont, pieces, self.adapter, self.seed, names=names)
        src = "" if self.source == "self" else f" of {self.source}"
        return new, _report(self.op, f"pasted {self.block}{src} at {self.at} of {cont or 'the model'}", seams)

    def describe(self) -> str:
        src = "" if self.source == "self" else f" from {self.source}"
        return f"paste {self.block}{src} at {self.at} (adapter {self.adapter})"


def paste_steps(model: nn.Module, base: nn.Module, model_name: str, entries: Sequence[tuple[str, str]], at: int,
                adapter: str, container: str) -> list[Paste]:
    """Paste steps for ``(source, block)`` entries (a clipboard), inserted in order from ``at``.

    A ``"self"`` block that is no longer in ``model``'s container (it was cut) is taken
    from the pristine base instead, by naming ``model_name`` as the source.

    Args:
        model: the current model (after the plan so far).
        base: the model's pristine base.
        model_name: the registered name of the base.
        entries: ``(source, block path)`` pairs; source ``"self"`` or a registered model name.
        at: position of the first pasted block in ``container``.
        adapter: seam policy (one of :data:`~core.surgery.stitch.BRIDGES`).
        container: the container pasted into.

    Returns:
        One :class:`Paste` per entry, all at ``at``, in reverse order: each pastes before
        the ones pasted already, so the blocks end up in the entries' order whatever
        adapters the seams get (a position counts every block of the container, adapters
        included, so ``at + 1`` could land between a pasted block and its adapter).

    Raises:
        ModelError: a ``"self"`` block is neither in the current model nor in the base.
    """
    current = set(block_names(model, container))
    in_base = None
    steps = []
    for source, block in entries:
        if source == "self" and block not in current:
            in_base = in_base if in_base is not None else {n for n, _ in base.named_modules()}
            if block not in in_base:
                raise ModelError(f"block {block!r} is no longer in the model nor in the base; copy it again")
            source = model_name  # the pristine base of this model, as a donor
        steps.append(Paste(block, source=source, at=at, adapter=adapter, into=container))
    return steps[::-1]


def duplicate_steps(names: Sequence[str], selected: Collection[str]) -> list[Paste]:
    """Paste steps putting a copy of each selected block right after it.

    Args:
        names: the container's block paths, in order.
        selected: the blocks to duplicate (others in ``names`` stay single).

    Returns:
        One :class:`Paste` of source ``"self"`` per selected block, in container order, each
        position counting the copies inserted before it.
    """
    steps, shift = [], 0
    for i, n in enumerate(names):
        if n in selected:
            steps.append(Paste(n, at=i + shift + 1))
            shift += 1
    return steps


@dataclass(frozen=True)
class Segment(Checked):
    """Consecutive blocks taken from one model, for :class:`Compose`."""

    constraints = {"source": Name(), "blocks": Items(Name())}
    source: str = "self"  # "self" or a registered donor model name
    blocks: tuple[str, ...] = ()  # block paths in the source, in order, e.g. ("layers.0", "layers.1")

    def _owner(self) -> str:
        return "segment"


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
    constraints = {"segments": Items(Segment), "into": Name(optional=True, allow_empty=True),
                   "adapter": Options(BRIDGES), "seed": Seed()}
    segments: tuple[Segment, ...] = ()  # in order; may be empty (the container becomes one bridge)
    into: str | None = None  # container of this model to rebuild (default: the model's default)
    adapter: str = "auto"  # seam policy, as for Paste
    seed: int = 0  # calibration batch seed

    @classmethod
    def _coerce(cls, kwargs: dict) -> dict:
        kwargs = dict(kwargs)
        segs = kwargs.get("segments", ())
        if not isinstance(segs, (list, tuple)):
            raise StepError(f"compose.segments must be a list, got {echo(segs)}")
        out = []
        for s in segs:
            if isinstance(s, Segment):
                out.append(s)
            elif (isinstance(s, dict) and set(s) <= {"source", "blocks"}
                  and isinstance(s.get("blocks", []), (list, tuple))):
                out.append(Segment(source=s.get("source", "self"), blocks=tuple(s.get("blocks", []))))
            else:
                raise StepError(f"bad segment {echo(s)}; expected {{'source': ..., 'blocks': [...]}}")
        kwargs["segments"] = tuple(out)
        return kwargs

    def build(self, model: nn.Module, ctx) -> tuple[nn.Module, StepReport]:
        cont = self.into if self.into is not None else default_container(model, ctx.model_name)
        pieces = []
        for s in self.segments:
            m = model if s.source == "self" else ctx.donor(s.source)
            for b in s.blocks:
                c, i = locate_block(m, b, "model" if s.source == "self" else f"donor {s.source!r}")
                pieces.append(Piece(s.source, c, i))
        new, seams = stitch(model, ctx, cont, pieces, self.adapter, self.seed)
        return new, _report(self.op, f"rebuilt {cont or 'the model'} from {len(pieces)} block(s)", seams)

    def describe(self) -> str:
        parts = [f"{'' if s.source == 'self' else s.source + ':'}{','.join(s.blocks)}" for s in self.segments]
        return "compose " + " + ".join(parts or ["(empty)"])


__all__ = ["Cut", "Paste", "Compose", "Segment", "paste_steps", "duplicate_steps"]
