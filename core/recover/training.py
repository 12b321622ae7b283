"""The one training loop: Finetune, and Heal (its preset for the seams after surgery).

Finetune trains the current model after any edit, with its masks and removed units kept:
on labels, distillation from the base model (soft targets at a temperature), both, or
the base's predicted classes; all parameters, the last k blocks (and the head after
them), the surgery adapters, or the adapters and the blocks beside them. Heal is
Finetune with Heal's defaults (adapters, constant learning rate, the model in eval mode).
Deterministic under ``seed`` and ``threads``: the batch order comes from the run's own
seeded generator, and stopping after ``k`` steps gives exactly the model that
``step.stopped_after(k)`` replays to (a cosine schedule keeps its length, ``horizon``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError
from core.ground.constraints import Interval, Options, Seed
from core.ground.outputs import is_nest
from core.plan.report import StepReport
from core.plan.step import Step, register_step
from core.prune.masks import prunable_layers
from core.recover.boxes import detection_objective
from core.recover.isolation import TrainedMemo, random_layers, seeded_global_rng
from core.recover.losses import calibration_figures, distill_loss, embedding_loss, float_out, nest_loss
from core.sources.bases import clone_model
from core.sources.models import LABELLED_TASKS, get_spec
from core.surgery.healing import HEAL_TRAIN, heal_parameters

TRAIN = ("all", "last", "adapters", "adapters+neighbours")  # which parameters train
LOSSES = ("labels", "distill", "both", "predictions")
SCHEDULES = ("constant", "cosine")
TRAIN_MODES = ("train", "eval")  # the trained modules' mode while training
MAX_STEPS = 100_000
MAX_BATCH = 4096


def trainable_parameters(model: nn.Module, train: str, last: int = 1, model_name: str | None = None
                         ) -> dict[str, nn.Parameter]:
    """The parameters a fine-tune updates.

    "all": every parameter; "last": those of the last ``last`` blocks of the model's
    default block container and every parameter after that container (the head);
    "adapters": the surgery bridges' only; "adapters+neighbours": those and the blocks
    right before and after each bridge (``core.surgery.heal_parameters``).

    Raises:
        ModelError: unknown ``train``, or nothing to train.
    """
    from core.surgery import block_names, default_container

    if train not in TRAIN:
        raise ModelError(f"train must be one of {TRAIN}, got {train!r}")
    named = dict(model.named_parameters())
    if train == "all":
        params = named
    elif train in ("adapters", "adapters+neighbours"):
        params = heal_parameters(model, train)
    else:
        cont = default_container(model, model_name)
        blocks = block_names(model, cont)
        chosen = blocks[-last:] if last <= len(blocks) else blocks
        names = list(named)
        in_cont = [i for i, n in enumerate(names) if cont == "" or n.startswith(cont + ".")]
        after = max(in_cont) if in_cont else -1
        params = {n: p for i, (n, p) in enumerate(named.items())
                  if any(n.startswith(b + ".") for b in chosen) or i > after}
    if not params:
        raise ModelError(f"finetune: the model has no parameters to train with train={train!r}")
    return params


def weight_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Where the prunable layers' weights are zero (pruned): they stay zero in training."""
    out = {}
    for name, layer in prunable_layers(model).items():
        keep = layer.weight.detach() != 0
        if not bool(keep.all()):
            out[f"{name}.weight" if name else "weight"] = keep
    return out


def _lr_at(step: int, lr: float, schedule: str, horizon: int) -> float:
    if schedule == "cosine":
        return 0.5 * lr * (1 + math.cos(math.pi * min(step, horizon) / max(1, horizon)))
    return lr


def _set_trainable(m: nn.Module, params: dict, mode: str) -> None:
    """Only ``params`` require gradients; in train mode the frozen parts stay in eval mode
    (they keep their statistics, BatchNorm's, and behaviour)."""
    for p in m.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    if mode == "train":
        m.train()
        for mod in m.modules():
            own = list(mod.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                mod.eval()


def _loss(step: Finetune, out, y: torch.Tensor, t_out, labelled: bool, embedding: bool = False,
          nest: tuple | None = None) -> torch.Tensor:
    """The step's loss on one batch: labels, the base's predicted classes, distillation from
    the base's outputs (always, for a model without labels; an embedding's by
    :func:`embedding_loss`), or a mix of labels and distillation weighted by ``step.alpha``.
    ``nest`` (judged leaves, dense): a nest of outputs, by ``losses.py`` (per-pixel KL / relative
    feature loss per judged leaf; pixel cross-entropy ignoring 255 on the headline class map)."""
    if nest is not None:
        return nest_loss(step.loss, step.alpha, step.temperature, out, y, t_out, labelled, *nest)
    if embedding:
        return embedding_loss(out, t_out)
    if step.loss == "labels":
        return F.cross_entropy(out, y)
    if step.loss == "predictions":  # the base's predicted classes as labels (any model)
        return F.cross_entropy(out, t_out.argmax(1))
    if step.loss == "distill" or not labelled:
        return distill_loss(out, t_out, step.temperature)
    return step.alpha * distill_loss(out, t_out, step.temperature) + (1 - step.alpha) * F.cross_entropy(out, y)


def _output_kind(model: nn.Module, spec, step: Finetune, x: torch.Tensor, labelled: bool) -> tuple[bool, tuple | None]:
    """(an embedding?, nest) where nest is (judged leaves or None, dense) for a model whose output is a
    nest (several heads, a class map with aux: trained leaf by leaf, ``losses.py``), None for one tensor.

    Raises:
        ModelError: loss "predictions" for outputs without classes (an embedding, unlabelled features).
    """
    kind = getattr(spec, "output", "logits")
    with torch.no_grad():
        nested = kind in ("dense", "nest") or (kind == "logits" and is_nest(model(x[:1])))
    nest = (spec.extra.get("judged"), kind == "dense" or spec.task == "segmentation") if nested else None
    if (kind == "embedding" or (nest and not nest[1] and not labelled)) and step.loss == "predictions":
        what = "a nest of outputs judged by cosine" if nest else "an embedding"
        raise ModelError(f"finetune: {spec.name!r} outputs {what}, which has no predicted classes; "
                         "use loss='distill' (it follows the base's outputs)")
    return kind == "embedding", nest


def _objective(m: nn.Module, model: nn.Module, step: Finetune, spec, labelled: bool, teacher, xc: torch.Tensor,
               yc: torch.Tensor) -> tuple[Callable, Callable[[], dict], str]:
    """(loss of one batch, figures on the calibration batch, what they measure) for training ``m``
    (``model``: its input, probed for the output kind) on labels and / or the base's outputs."""
    embedding, nest = _output_kind(model, spec, step, xc, labelled)

    def batch_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out, t_out = float_out(m(x)), None
        if teacher is not None:
            with torch.no_grad():
                t_out = float_out(teacher(x))
        return _loss(step, out, y, t_out, labelled, embedding, nest)

    return (batch_loss, lambda: calibration_figures(m, xc, yc, teacher, labelled, embedding, nest),
            "output cosine with the base" if embedding else "accuracy")


def finetune(model: nn.Module, ctx, step: Finetune, *,
             progress: Callable[[int, int, float], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> tuple[nn.Module, dict]:
    """Train a copy of ``model`` as ``step`` says: the one training loop (Heal runs it too).

    After every update the prunable weights that were zero at the start are multiplied by
    their mask again (pruned weights stay zero); removed units are absent. The batch order
    comes from this run's own ``torch.Generator``; a model with random layers (dropout)
    in train mode draws from the global generator, seeded with ``step.seed`` inside
    ``torch.random.fork_rng`` (restored after). Both that and ``step.threads`` are
    process-wide: :meth:`Finetune.run` holds the training lock around this function.

    Returns:
        ``(model in eval mode, info)`` with ``info = {"before", "after" (loss and accuracy
        on the calibration batch), "losses", "steps_run", "stopped", "trained_params",
        "masked_weights"}``.

    Raises:
        ModelError: nothing to train, or labels asked of a model evaluated by fidelity.
    """
    m = clone_model(model)
    spec = get_spec(ctx.model_name)
    labelled, detector = spec.task in LABELLED_TASKS, getattr(spec, "output", "logits") == "detection"
    if step.loss in ("labels", "both") and not labelled and not detector:  # a detector's own message: boxes.py
        raise ModelError(f"finetune: {ctx.model_name!r} is evaluated by fidelity to its base and has no labels; "
                         "use loss='distill' (or 'predictions': the base's predicted classes)")
    xc, yc = ctx.calibration(step.seed)
    params = trainable_parameters(m, step.train, step.last, ctx.model_name)
    masks = {n: k for n, k in weight_masks(m).items() if n in params}
    teacher = ctx.donor(ctx.model_name) if (step.loss != "labels" or not labelled) else None
    # dropout, and a detector's samplers of proposals and anchors: the global generator
    draws = step.mode == "train" and (detector or bool(random_layers(m)))
    if detector:  # its own losses against box targets (``boxes.py``)
        batch_loss, measure, what = detection_objective(m, step, spec, labelled, teacher, xc, yc)
    else:
        batch_loss, measure, what = _objective(m, model, step, spec, labelled, teacher, xc, yc)

    before = measure()
    _set_trainable(m, params, step.mode)
    xt, yt = ctx.train_split()
    g = torch.Generator().manual_seed(step.seed)
    opt = torch.optim.Adam(list(params.values()), lr=float(step.lr))
    horizon = step.horizon or step.steps
    with seeded_global_rng(step.seed, ctx.device) if draws else contextlib.nullcontext():
        losses, done, stopped = [], 0, False
        for i in range(step.steps):
            if should_stop is not None and should_stop():
                stopped = True
                break
            for grp in opt.param_groups:
                grp["lr"] = _lr_at(i, step.lr, step.schedule, horizon)
            idx = torch.randint(0, len(xt), (step.batch_size,), generator=g)
            loss = batch_loss(xt[idx].to(ctx.device), yt[idx].to(ctx.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # pruned weights stay pruned
                for n, keep in masks.items():
                    params[n].mul_(keep)
            losses.append(float(loss.detach()))
            done = i + 1
            if progress is not None:
                progress(done, step.steps, losses[-1])
    for p in m.parameters():
        p.requires_grad_(False)
    m.eval()
    after = measure()
    after.pop("measure", None)
    info = {"before": before, "after": after, "losses": losses, "steps_run": done, "stopped": stopped,
            "measure": before.pop("measure", what),
            "trained_params": int(sum(p.numel() for p in params.values())),
            "masked_weights": int(sum(int((~k).sum()) for k in masks.values()))}
    return m, info


_MEMO = TrainedMemo()


@register_step
@dataclass(frozen=True)
class Finetune(Step):
    """Train the current model for ``steps`` batches of the training split (masks and
    removed units stay), on labels, on the base model's soft targets, both, or the base's
    predicted classes."""

    op: ClassVar[str] = "finetune"
    trains: ClassVar[bool] = True
    constraints = {"steps": Interval(0, MAX_STEPS, integer=True), "lr": Interval(0, 10, closed="right"),
                   "schedule": Options(SCHEDULES), "horizon": Interval(1, MAX_STEPS, integer=True, optional=True),
                   "batch_size": Interval(1, MAX_BATCH, integer=True), "train": Options(TRAIN),
                   "last": Interval(1, 10_000, integer=True), "loss": Options(LOSSES),
                   "temperature": Interval(0, 100, closed="right"), "alpha": Interval(0, 1),
                   "seed": Seed(), "threads": Interval(1, 1024, integer=True, optional=True),
                   "mode": Options(TRAIN_MODES)}
    steps: int = 200  # optimisation steps (batches)
    lr: float = 1e-3  # Adam learning rate (peak, for the cosine schedule)
    schedule: str = "cosine"  # "constant" | "cosine" (decays to 0 over ``horizon``)
    horizon: int | None = None  # the schedule's length (default: steps; kept when stopped early)
    batch_size: int = 64  # examples per step
    train: str = "all"  # "all" | "last" (the last ``last`` blocks and the head) | "adapters" | "adapters+neighbours"
    last: int = 1  # blocks trained with train="last"
    loss: str = "labels"  # "labels" | "distill" (from the base model) | "both" | "predictions" (the base's classes)
    temperature: float = 4.0  # distillation temperature
    alpha: float = 0.5  # weight of the distillation term with loss="both"
    seed: int = 0  # batch order and calibration seed
    threads: int | None = None  # CPU threads while training (recorded: a replay sums in the same order)
    mode: str = "train"  # "train": trained modules in train mode (BatchNorm statistics follow) | "eval" (kept)

    # Fields added after recipes were written, with the value older recipes mean: left out
    # of the recipe at that value, so those recipes and their plan keys stay as they were.
    ADDED: ClassVar[dict] = {"mode": "train"}

    def to_dict(self) -> dict:
        d = super().to_dict()
        for k, v in self.ADDED.items():
            if d[k] == v:
                del d[k]
        return d

    def run(self, model: nn.Module, ctx, progress=None, should_stop=None, on_wait=None) -> tuple[nn.Module, dict]:
        """:func:`finetune` with this step's settings under the process-wide training lock
        (``on_wait()`` is called if another run holds it; ``should_stop`` is polled
        while waiting too), memoised by input weights, so the plan replaying this step
        right after an interactive run costs nothing. A run stopped after k steps is
        stored as ``self.stopped_after(k)``."""
        return _MEMO.run(self.normalised(), model, ctx,
                         lambda: finetune(model, ctx, self, progress=progress, should_stop=should_stop),
                         should_stop=should_stop, on_wait=on_wait)

    def normalised(self) -> Finetune:
        """The same step in the one form the memo keys on: a cosine schedule's horizon
        written out, a constant schedule's (which changes nothing) left out."""
        horizon = (self.horizon or max(1, self.steps)) if self.schedule == "cosine" else None
        return self if horizon == self.horizon else dataclasses.replace(self, horizon=horizon)

    def stopped_after(self, k: int) -> Finetune:
        """The step a run of this one stopped after ``k`` steps equals: ``steps=k`` with the
        cosine schedule's length kept (so its learning rates were the same)."""
        if k >= self.steps:
            return self
        horizon = (self.horizon or self.steps) if self.schedule == "cosine" else self.horizon
        return dataclasses.replace(self, steps=k, horizon=horizon)

    def build(self, model: nn.Module, ctx) -> tuple[nn.Module, StepReport]:
        m, info = self.run(model, ctx)
        b, a = info["before"], info["after"]
        return m, StepReport(self.op, info=info, summary=(
            f"trained {info['trained_params']:,} parameters for {info['steps_run']} steps "
            f"({info['masked_weights']:,} pruned weights kept at zero); calibration loss "
            f"{b['loss']:.3f} -> {a['loss']:.3f}, {info.get('measure', 'accuracy')} "
            f"{b['accuracy']:.1%} -> {a['accuracy']:.1%}"))

    def describe(self) -> str:
        what = {"all": "all parameters", "last": f"the last {self.last} block(s) and the head",
                "adapters": "the adapters", "adapters+neighbours": "the adapters and their neighbours"}[self.train]
        loss = {"labels": "labels", "distill": f"distillation (T={self.temperature:g})",
                "both": f"labels + distillation (T={self.temperature:g}, α={self.alpha:g})",
                "predictions": "the base's predicted classes"}[self.loss]
        hz = f" of {self.horizon}" if self.horizon and self.horizon != self.steps and self.schedule == "cosine" else ""
        ev = ", eval mode" if self.mode == "eval" else ""
        return f"finetune {what} for {self.steps}{hz} steps on {loss} (lr {self.lr:g}, {self.schedule}{ev})"


@register_step
@dataclass(frozen=True)
class Heal(Step):
    """Briefly train the surgery adapters (and optionally the blocks beside them): a preset
    of :class:`Finetune` (the one training loop: pruned weights stay zero, one memo).

    Heal's defaults: a constant learning rate, the whole model in eval mode (BatchNorm
    statistics untouched), cross-entropy on the labels, or on the base's predicted classes
    for a model without labels. ``Heal(...).finetune(labelled)`` is the Finetune it runs;
    a recipe's ``heal`` step replays through it.
    """

    op: ClassVar[str] = "heal"
    trains: ClassVar[bool] = True
    constraints = {"steps": Interval(0, MAX_STEPS, integer=True), "lr": Interval(0, 10, closed="right"),
                   "train": Options(HEAL_TRAIN), "seed": Seed(), "batch_size": Interval(1, MAX_BATCH, integer=True),
                   "threads": Interval(1, 1024, integer=True, optional=True)}
    steps: int = 100  # optimisation steps (batches)
    lr: float = 1e-3  # Adam learning rate
    train: str = "adapters"  # "adapters" | "adapters+neighbours"
    seed: int = 0  # batch order and calibration seed
    batch_size: int = 64  # examples per step
    threads: int | None = None  # CPU threads while training (recorded so a replay sums in the same order)

    def finetune(self, labelled: bool = True) -> Finetune:
        """The :class:`Finetune` this heal is (``labelled``: the model's task has labels)."""
        return Finetune(steps=self.steps, lr=self.lr, schedule="constant", batch_size=self.batch_size,
                        train=self.train, loss="labels" if labelled else "predictions", seed=self.seed,
                        threads=self.threads, mode="eval")

    def run(self, model: nn.Module, ctx, progress=None, should_stop=None, on_wait=None) -> tuple[nn.Module, dict]:
        """:meth:`Finetune.run` of :meth:`finetune` (memoised in the one memo)."""
        labelled = get_spec(ctx.model_name).task in LABELLED_TASKS
        return self.finetune(labelled).run(model, ctx, progress=progress, should_stop=should_stop, on_wait=on_wait)

    def stopped_after(self, k: int) -> Heal:
        """The step a run of this one stopped after ``k`` steps equals: ``steps=k``."""
        return self if k >= self.steps else dataclasses.replace(self, steps=k)

    def build(self, model: nn.Module, ctx) -> tuple[nn.Module, StepReport]:
        m, info = self.run(model, ctx)
        b, a = info["before"], info["after"]
        kept = f" ({info['masked_weights']:,} pruned weights kept at zero)" if info["masked_weights"] else ""
        return m, StepReport(self.op, info=info, summary=(
            f"trained {info['trained_params']:,} parameters for {info['steps_run']} steps{kept}; calibration loss "
            f"{b['loss']:.3f} -> {a['loss']:.3f}, {info.get('measure', 'accuracy')} "
            f"{b['accuracy']:.1%} -> {a['accuracy']:.1%}"))

    def describe(self) -> str:
        th = f", {self.threads} threads" if self.threads else ""
        return f"heal {self.train} for {self.steps} steps (lr {self.lr:g}{th})"


__all__ = ["Finetune", "Heal", "finetune", "trainable_parameters", "weight_masks", "distill_loss", "TRAIN", "LOSSES",
           "SCHEDULES", "TRAIN_MODES"]
