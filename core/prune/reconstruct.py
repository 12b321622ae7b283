"""One-shot reconstruction (SparseGPT): prune each Linear layer and update the weights that
stay so that the layer's output on the calibration batch changes as little as it can.

Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot", ICML 2023. Per layer, with X the layer's inputs on the calibration batch (every
token of every window for a language model): H = X^T X / rows, damped by ``damp`` times the
mean of its diagonal; Hinv = H^-1 read through the upper Cholesky factor. The columns are
processed in blocks of ``block``: in each block the weights with the smallest
w^2 / [Hinv]_jj^2 go (per block for unstructured sparsity, per group of M columns for N:M),
and the error of each pruned column is spread over the columns after it (the optimal brain
surgeon update). An input that is zero on the whole batch (diagonal 0) gets diagonal 1 and
its weights are zero, as in the paper.

Layer by layer, in the order the forward pass reaches them: a layer's inputs are computed on
a private copy in which every earlier layer is already pruned and updated (the paper's
sequential mode), stopping the pass at that layer. The step's result is the model with the
updated, zeroed weights (same shapes): the mask accounting counts the zeros, and replay from
the recipe gives the same weights (float64 arithmetic, a fixed calibration batch).

No package was used: PyPI's ``sparsegpt`` is an empty 2023 release (0.0.1.dev0, no code) and
``llmcompressor`` (vLLM's) drives Hugging Face models through its own recipes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from core.errors import ModelError, StepError, echo
from core.ground.constraints import Fraction, Interval, Items, Name, Options, Seed
from core.plan.report import StepReport
from core.plan.step import Step, register_step
from core.prune.masks import masked_copy
from core.prune.nm import eligible_layers
from core.sources.bases import clone_model

PATTERNS = ("unstructured", "1:2", "2:4", "4:8", "1:4", "2:8")  # N:M keeps N of every M inputs, as NMSparsity


class _Reached(Exception):
    """Raised by the capture hook to end a forward pass at the layer being measured (private)."""


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``None`` for "unstructured", else ``(n, m)``: keep n of every m consecutive inputs."""
    if pattern == "unstructured":
        return None
    n, m = (int(v) for v in pattern.split(":"))
    return n, m


def sparsegpt_prune(w: torch.Tensor, h: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None,
                    block: int = 128, damp: float = 0.01) -> torch.Tensor:
    """The pruned and updated weight (float64, rows x cols) of a Linear layer with weight ``w``
    and input second moment ``h`` (cols x cols, X^T X / rows); ``nm`` = (kept, group) or None
    for ``sparsity`` of each block's weights."""
    w, h = w.detach().to(torch.float64).clone(), h.to(torch.float64).clone()
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(cols, dtype=h.dtype, device=h.device) * (damp * torch.mean(torch.diag(h)))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1, hinv1 = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        d = torch.diag(hinv1)
        if nm is None:
            score = w1.square() / d.square()
            k = int(round(score.numel() * sparsity))
            pruned = torch.zeros(score.numel(), dtype=torch.bool, device=w.device)
            pruned[torch.sort(score.flatten(), stable=True).indices[:k]] = True
            pruned = pruned.reshape(score.shape)
        else:
            pruned = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                score = w1[:, i:i + nm[1]].square() / d[i:i + nm[1]].square()
                drop = torch.sort(score, dim=1, stable=True).indices[:, :nm[1] - nm[0]]
                pruned.scatter_(1, i + drop, True)
            col = w1[:, i]
            q = torch.where(pruned[:, i], torch.zeros_like(col), col)
            e = (col - q) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w


def output_error(w: torch.Tensor, new: torch.Tensor, h: torch.Tensor) -> float:
    """||(w - new) X^T||^2 / ||w X^T||^2 read from ``h`` = X^T X / rows: the share of the layer's
    output (without bias) lost on the calibration batch."""
    w = w.detach().double()
    d, h = w - new.detach().double(), h.double()
    den = float(torch.einsum("ij,jk,ik->", w, h, w))
    return float(torch.einsum("ij,jk,ik->", d, h, d)) / den if den > 0 else 0.0


def _input_moment(model: nn.Module, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """X^T X / rows of what enters ``layer`` (a module of ``model``) on ``x``, the pass ended there."""
    got = []

    def hook(mod, inp):
        a = inp[0].detach().reshape(-1, inp[0].shape[-1]).to(torch.float64)
        got.append((a.T @ a, a.shape[0]))
        raise _Reached

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.inference_mode():
            model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not got:
        raise ModelError(f"layer {echo(_name_of(model, layer))} is not reached by the model's forward pass")
    h, rows = got[0]
    return h / max(rows, 1)


def _name_of(model: nn.Module, layer: nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is layer), "?")


def forward_order(model: nn.Module, names: list[str], x: torch.Tensor) -> list[str]:
    """``names`` in the order the forward pass on ``x`` first reaches them (not reached: last)."""
    mods, seen = dict(model.named_modules()), {}

    def reached(name):
        def hook(mod, inp):
            seen.setdefault(name, len(seen))  # returns None: the input goes on unchanged
        return hook

    handles = [mods[n].register_forward_pre_hook(reached(n)) for n in names]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return sorted(names, key=lambda n: seen.get(n, len(names) + names.index(n)))


@register_step
@dataclass(frozen=True)
class Reconstruct(Step):
    """SparseGPT: prune each Linear layer (but the output layer) to ``sparsity`` or an N:M
    pattern and update the weights that stay from the layer's inputs on the calibration batch."""

    op: ClassVar[str] = "reconstruct"
    constraints = {"sparsity": Fraction(), "pattern": Options(PATTERNS), "layers": Items(Name()),
                   "samples": Interval(1, 100_000, integer=True, optional=True),
                   "block": Interval(1, 65_536, integer=True), "damp": Interval(0.0, 1.0, closed="right"),
                   "seed": Seed()}
    sparsity: float = 0.5  # fraction of each layer's weights pruned ("unstructured"; N:M sets its own)
    pattern: str = "unstructured"  # or "N:M": keep N of every M consecutive input weights ("2:4")
    layers: tuple[str, ...] = ()  # Linear layers to prune; () = every Linear layer but the output layer
    samples: int | None = None  # examples of the calibration batch used (None: all of it)
    block: int = 128  # columns updated together (the paper's lazy batch)
    damp: float = 0.01  # added to H's diagonal, as a fraction of its mean diagonal
    seed: int = 0  # seed of the calibration batch

    def check(self):
        if len(set(self.layers)) != len(self.layers):
            raise StepError(f"reconstruct.layers: a layer is named twice in {echo(list(self.layers))}")
        nm = parse_pattern(self.pattern)
        if nm is not None and self.block % nm[1]:
            raise StepError(f"reconstruct.block must be a multiple of the pattern's group ({nm[1]}), got {self.block}")

    @property
    def amount(self) -> float:
        """The fraction of each touched layer's weights pruned."""
        nm = parse_pattern(self.pattern)
        return self.sparsity if nm is None else 1 - nm[0] / nm[1]

    def targets(self, model: nn.Module) -> dict[str, nn.Linear]:
        """The Linear layers this step prunes in ``model``.

        Raises:
            ModelError: a named layer is not a Linear layer of the model, or its input width is
                not a multiple of the pattern's group; or there is no layer to prune.
        """
        nm = parse_pattern(self.pattern)
        m = 1 if nm is None else nm[1]
        if not self.layers:
            found = eligible_layers(model, m)
            if not found:
                raise ModelError("reconstruct: the model has no Linear layer besides its output layer"
                                 + (f" with an input width divisible by {m}" if m > 1 else ""))
            return found
        mods = dict(model.named_modules())
        bad = [n for n in self.layers if not isinstance(mods.get(n), nn.Linear) or mods[n].in_features % m]
        if bad:
            ok = [n for n, mod in mods.items() if isinstance(mod, nn.Linear) and mod.in_features % m == 0]
            wide = f" with an input width divisible by {m}" if m > 1 else ""
            raise ModelError(f"reconstruct.layers: {echo(bad)} are not Linear layers{wide}; "
                             f"valid: {', '.join(ok[:12])}{' ...' if len(ok) > 12 else ''}")
        return {n: mods[n] for n in self.layers}

    def build(self, model, ctx):
        """The pruned and reconstructed copy of ``model`` and its report (zeros per layer, and
        each layer's output error on the calibration batch)."""
        if ctx is None:
            raise StepError("reconstruct needs the calibration batch (an apply context)")
        names = list(self.targets(model))
        x = ctx.calibration(self.seed)[0]
        x = x[:self.samples] if self.samples else x
        work = clone_model(model).eval()  # every earlier layer already reconstructed when a layer is measured
        mods = dict(work.named_modules())
        nm = parse_pattern(self.pattern)
        units, errors = {}, {}
        for name in forward_order(work, names, x):
            layer = mods[name]
            h = _input_moment(work, layer, x)
            new = sparsegpt_prune(layer.weight, h, self.sparsity, nm, self.block, self.damp)
            errors[name] = output_error(layer.weight, new, h)
            with torch.no_grad():
                layer.weight.copy_(new.to(layer.weight.dtype))
            units[name] = (int((layer.weight == 0).sum()), layer.weight.numel())
        report = StepReport(self.op, units={n: units[n] for n in names}, unit_name="weight",
                            info={"output_error": {n: errors[n] for n in names}})
        worst = max(errors, key=errors.get)
        report.summary = (f"SparseGPT {self._amount_text()} in {len(names)} Linear layer(s), {len(x)} calibration "
                          f"example(s): {report.pruned:,} of {report.total:,} weights are zero; output lost on the "
                          f"calibration batch (||ΔW·x||² / ||W·x||²): mean {sum(errors.values()) / len(errors):.2%}, "
                          f"worst {errors[worst]:.2%} ({worst})")
        return masked_copy(model, {n: mods[n].weight.detach() for n in names}), report

    def _amount_text(self) -> str:
        return f"sparsity {self.sparsity:.1%}" if self.pattern == "unstructured" else f"{self.pattern} pattern"

    def describe(self) -> str:
        where = f"{len(self.layers)} layer(s)" if self.layers else "every Linear layer but the output layer"
        return f"reconstruct (SparseGPT) {self._amount_text()}: {where}"


__all__ = ["Reconstruct", "sparsegpt_prune", "output_error", "forward_order", "parse_pattern", "PATTERNS"]
