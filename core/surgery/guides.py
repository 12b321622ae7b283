"""Guides for layer surgery: which blocks matter, which are alike, what a cut costs.

* **Influence** of a block: ``1 - cos(input, output)`` on calibration data, each
  example flattened (as in ShortGPT's "block influence", Men et al. 2024). Near 0: the
  block barely changes its input, a candidate to cut. Only defined where the block
  keeps the shape (else ``None``).
* **Linear CKA** between block outputs (Kornblith et al. 2019, "Similarity of Neural
  Network Representations Revisited"), computed from centred Gram matrices, so wide
  convolutional activations cost an ``n x n`` matrix only.
* **Drop-one accuracy**: quick-subset accuracy when each block alone is cut, with the
  better of its bridges (identity where shapes match, and least squares).
* **Suggested cut**: the ``k`` blocks whose drop-one accuracy is highest, with the
  accuracy measured for the joint cut.

Computed once per model, container and seed, and kept in the apply context's memo of
the model (dropped with it).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelError, PrunescopeError
from core.ground.outputs import NEST_KINDS
from core.metrics.nest import headline_each
from core.sources.models import LABELLED_TASKS
from core.surgery.blocks import Block, list_blocks
from core.surgery.choice import default_container
from core.surgery.steps import Cut
from core.surgery.stitch import traced_activations


def _gram(x: torch.Tensor) -> torch.Tensor:
    """Centred linear Gram matrix of (n, ...) activations, in float64: (n, n)."""
    x = x.reshape(len(x), -1).double()
    x = x - x.mean(0, keepdim=True)
    return x @ x.t()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same ``n`` examples.

    ``tr(Kc Lc) / sqrt(tr(Kc Kc) tr(Lc Lc))`` with centred Gram matrices; 1 for
    identical representations, invariant to orthogonal transforms and isotropic scaling.

    Args:
        x: (n, ...) activations; y: (n, ...) activations (any feature sizes).

    Raises:
        ModelError: different numbers of examples, or fewer than two.
    """
    if len(x) != len(y) or len(x) < 2:
        raise ModelError(f"linear_cka needs the same n >= 2 examples on both sides, got {len(x)} and {len(y)}")
    return _cka_from_grams(_gram(x), _gram(y))


def _cka_from_grams(k: torch.Tensor, g: torch.Tensor) -> float:
    num = float((k * g).sum())
    den = math.sqrt(float((k * k).sum()) * float((g * g).sum()))
    return num / den if den > 0 else 0.0


def cka_matrix(acts: list[torch.Tensor]) -> list[list[float]]:
    """Pairwise linear CKA between a list of (n, ...) activations."""
    grams = [_gram(a) for a in acts]
    n = len(grams)
    m = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            m[i][j] = m[j][i] = _cka_from_grams(grams[i], grams[j])
    return m


def influence(x_in: torch.Tensor, x_out: torch.Tensor) -> float | None:
    """``1 - mean cos(in, out)`` over examples (each flattened); None if shapes differ."""
    if x_in.shape != x_out.shape:
        return None
    a, b = x_in.reshape(len(x_in), -1).float(), x_out.reshape(len(x_out), -1).float()
    return float(1.0 - F.cosine_similarity(a, b, dim=1).mean())


@dataclass
class Guides:
    """Everything the surgery page shows beside the block list, for one model."""

    container: str  # container path
    blocks: list[Block]  # the blocks, in order
    influence: list[float | None]  # per block; None where the block changes the shape
    cka: list[list[float]]  # (B, B) linear CKA between block outputs
    drop_one: list[float | None]  # quick accuracy with the block alone cut; None if it cannot be
    drop_one_bridge: list[str | None]  # the bridge that gave that accuracy ("identity" | "lstsq")
    drop_one_error: list[str | None]  # why a block cannot be cut alone
    accuracy: float  # the model's own quick accuracy
    _suggested: dict = field(default_factory=dict, repr=False)

    def suggestion(self, k: int) -> dict | None:
        """The suggested cut of ``k`` blocks if :func:`suggest_cut` computed it already, else None (free)."""
        got = self._suggested.get(k)
        return dict(got) if got is not None else None

    def rows(self) -> list[dict]:
        """One dict per block (the CLI's ``blocks`` output)."""
        return [{**b.to_dict(), "influence": self.influence[i], "drop_one_accuracy": self.drop_one[i],
                 "drop_one_bridge": self.drop_one_bridge[i]} for i, b in enumerate(self.blocks)]


def _accuracy(evaluator, model: nn.Module) -> float:
    """Quick-subset accuracy (against the base's predictions for a task without labels; a "dense" /
    "nest" output: its headline, ``core.metrics.nest.headline_each``)."""
    x, y = evaluator.evalset.quick()
    out = evaluator.outputs(model, "quick")
    if evaluator.output in NEST_KINDS:  # the headline: pixel agreement, or mean output cosine, with the base
        return float(headline_each(out, evaluator.base_outputs("quick"), evaluator.output).mean())
    target = y if evaluator.task in LABELLED_TASKS else evaluator.base_outputs("quick").argmax(1)
    return float((out.argmax(1) == target).float().mean())


def cached_guides(model: nn.Module, ctx, container: str | None = None, seed: int = 0, *,
                  name: str | None = None) -> Guides | None:
    """The guides already computed for ``model`` (in ``ctx``'s memo), else None (free)."""
    container = default_container(model, name) if container is None else container
    return ctx.memo(model).get(("guides", container, seed))


def compute_guides(model: nn.Module, evaluator, ctx, container: str | None = None, seed: int = 0,
                   progress: Callable[[int, int, str], None] | None = None, *, name: str | None = None) -> Guides:
    """The guides for ``model`` (cached in ``ctx``'s memo of it, per container and seed).

    They cost one calibration pass plus, per block, a cut and a quick-subset evaluation
    (two where an identity bridge is also tried): on request, not on every page view.
    ``Workspace.guides`` calls it on the current plan's model.

    Args:
        model: the model whose blocks are judged (not changed).
        evaluator: a ``core.metrics.Evaluator`` (its evaluation set, base and task).
        ctx: the ``core.plan.ApplyContext`` (calibration batch, memo).
        container: container path (default: the model's default container).
        seed: calibration batch seed.
        progress: called with ``(done, total, what)``: blocks done of all, and the next task.
        name: the model's registered name (for its block view).

    Raises:
        ModelError: the container does not exist or is not a Sequential / ModuleList.
    """
    container = default_container(model, name) if container is None else container
    memo = ctx.memo(model)  # dropped with the model
    key = ("guides", container, seed)
    if key in memo:
        return memo[key]
    x, _ = ctx.calibration(seed)
    blocks = list_blocks(model, x, container, name)
    total = len(blocks) + 1
    if progress:
        progress(0, total, "block activations, influence and CKA")
    acts = traced_activations(model, ctx, container, x)
    infl = [influence(acts[i], acts[i + 1]) for i in range(len(blocks))]
    cka = cka_matrix(acts[1:])
    acts_cache = {("self", container): acts}  # shared by every drop-one build
    drop, drop_br, drop_err = [], [], []
    for i, b in enumerate(blocks):
        if progress:
            progress(i + 1, total, f"drop-one accuracy without {b.name}")
        best, best_br, err = None, None, None
        for br in (("identity", "lstsq") if b.in_shape == b.out_shape else ("lstsq",)):
            try:
                m, _ = Cut((b.name,), bridge=br, seed=seed).build(model, ctx, acts_cache=acts_cache)
            except PrunescopeError as exc:
                err = str(exc)
                continue
            acc = _accuracy(evaluator, m)
            if best is None or acc > best:
                best, best_br = acc, br
        drop.append(best)
        drop_br.append(best_br)
        drop_err.append(None if best is not None else err)
    g = Guides(container=container, blocks=blocks, influence=infl, cka=cka, drop_one=drop,
               drop_one_bridge=drop_br, drop_one_error=drop_err, accuracy=_accuracy(evaluator, model))
    memo[key] = g
    if progress:
        progress(total, total, "done")
    return g


def suggest_cut(model: nn.Module, evaluator, ctx, k: int = 1, container: str | None = None, seed: int = 0, *,
                name: str | None = None) -> dict:
    """The ``k`` blocks of ``model`` whose removal costs least, and the accuracy of cutting
    them together (arguments as :func:`compute_guides`).

    Blocks are ranked by drop-one accuracy (adapters inserted by surgery are skipped);
    the joint cut uses the "auto" bridge, falling back to "lstsq".

    Returns:
        ``{"blocks": [...], "expected_accuracy": float | None, "bridge": str | None,
        "accuracy": current accuracy, "error": str | None}``.

    Raises:
        ModelError: ``k`` is not an integer in [1, number of cuttable blocks].
    """
    g = compute_guides(model, evaluator, ctx, container, seed, name=name)
    ranked = sorted((i for i, b in enumerate(g.blocks) if g.drop_one[i] is not None and not b.adapter),
                    key=lambda i: (-g.drop_one[i], i))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max(1, len(ranked)) or not ranked:
        raise ModelError(f"k must be an integer in [1, {len(ranked)}] (blocks that can be cut), got {k!r}")
    if k in g._suggested:
        return dict(g._suggested[k])
    pick = sorted(ranked[:k])
    names = tuple(g.blocks[i].name for i in pick)
    out = {"blocks": list(names), "expected_accuracy": None, "bridge": None, "accuracy": g.accuracy, "error": None}
    for br in ("auto", "lstsq"):
        try:
            m, _ = Cut(names, bridge=br, seed=seed).build(model, ctx)
        except PrunescopeError as exc:
            out["error"] = str(exc)
            continue
        acc = _accuracy(evaluator, m)
        if out["expected_accuracy"] is None or acc > out["expected_accuracy"]:
            out.update(expected_accuracy=acc, bridge=br, error=None)
    g._suggested[k] = dict(out)
    return out


__all__ = ["Guides", "compute_guides", "cached_guides", "suggest_cut", "linear_cka", "cka_matrix", "influence"]
