"""Heal: briefly train the adapters (and optionally their neighbours) after surgery."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError
from core.models import LABELLED_TASKS, clone_model, get_spec
from core.plan.trained import TrainedMemo
from core.plan.constraints import Interval, Options, Seed
from core.plan.report import StepReport
from core.plan.step import Step, register_step

from .blocks import _is_container, _join
from .bridges import Bridge

HEAL_TRAIN = ("adapters", "adapters+neighbours")
MAX_HEAL_STEPS = 100_000  # optimisation steps in one heal
MAX_BATCH = 4096  # examples per heal step


def adapters(model: nn.Module) -> dict[str, Bridge]:
    """Bridges in ``model`` by module path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, Bridge)}


def heal_parameters(model: nn.Module, train: str) -> dict[str, nn.Parameter]:
    """Parameters heal trains: every Bridge's, plus for "adapters+neighbours" those of
    the blocks right before and after each Bridge in its container.

    Raises:
        ModelError: unknown ``train``, or nothing to train.
    """
    if train not in HEAL_TRAIN:
        raise ModelError(f"train must be one of {HEAL_TRAIN}, got {train!r}")
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
        raise ModelError(f"heal: the model has no trainable {what}; cut or paste blocks first "
                         f"(identity seams have no parameters: use train='adapters+neighbours' "
                         f"or bridge 'lstsq')")
    return params


_HEAL_MEMO = TrainedMemo()


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
        StepError: bad settings (the ``Heal`` step's constraints).
        ModelError: nothing to train.
    """
    Heal(steps=steps, lr=lr, train=train, seed=seed, batch_size=batch_size)  # the one check of the settings
    m = clone_model(model)
    m.eval()
    params = heal_parameters(m, train)
    spec = get_spec(ctx.model_name)
    fidelity = spec.task not in LABELLED_TASKS
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
    trains: ClassVar[bool] = True
    constraints = {"steps": Interval(0, MAX_HEAL_STEPS, integer=True), "lr": Interval(0, 10, closed="right"),
                   "train": Options(HEAL_TRAIN), "seed": Seed(), "batch_size": Interval(1, MAX_BATCH, integer=True),
                   "threads": Interval(1, 1024, integer=True, optional=True)}
    steps: int = 100  # optimisation steps (batches)
    lr: float = 1e-3  # Adam learning rate
    train: str = "adapters"  # "adapters" | "adapters+neighbours"
    seed: int = 0  # batch order and calibration seed
    batch_size: int = 64  # examples per step
    threads: int | None = None  # CPU threads while training (recorded so a replay sums in the same order)

    def run(self, model: nn.Module, ctx, progress=None, should_stop=None) -> tuple[nn.Module, dict]:
        """:func:`heal` with this step's settings; the result is memoised by input weights,
        so the plan replaying this step right after an interactive heal costs nothing."""
        return _HEAL_MEMO.run(self, model, ctx, lambda: heal(
            model, ctx, self.steps, self.lr, self.train, seed=self.seed, batch_size=self.batch_size,
            progress=progress, should_stop=should_stop))

    def build(self, model: nn.Module, ctx) -> tuple[nn.Module, StepReport]:
        m, info = self.run(model, ctx)
        b, a = info["before"], info["after"]
        return m, StepReport(self.op, info=info, summary=(
            f"trained {info['trained_params']:,} parameters for {info['steps_run']} steps; calibration loss "
            f"{b['loss']:.3f} -> {a['loss']:.3f}, accuracy {b['accuracy']:.1%} -> {a['accuracy']:.1%}"))

    def describe(self) -> str:
        th = f", {self.threads} threads" if self.threads else ""
        return f"heal {self.train} for {self.steps} steps (lr {self.lr:g}{th})"


__all__ = ["Heal", "heal", "heal_parameters", "adapters", "HEAL_TRAIN", "MAX_HEAL_STEPS", "MAX_BATCH"]
