"""What an edit changed on the evaluation set: the examples whose prediction changed (for a
model whose output is an embedding: the examples whose embedding moved most, lowest cosine with
the base's first), the confusion matrices of base and current and their difference, and where
inside the network the current model departs from the base (linear CKA of each layer's output,
base against current).

Nothing here trains or edits a model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import PrunescopeError
from core.ground.outputs import NEST_KINDS
from core.metrics.fidelity import neighbour_recall_each, output_cosine_each, recall_k
from core.prune.masks import prunable_layers
from core.sources.models import LABELLED_TASKS
from core.surgery.guides import linear_cka

if TYPE_CHECKING:
    from core.metrics import Evaluator


MAX_CONFUSION_CLASSES = 1000  # a larger confusion matrix (a vocabulary's) is refused


@dataclass
class Changes:
    """Base against current on one subset of the evaluation set."""

    subset: str
    indices: list[int]  # positions in the test split of the subset's examples
    labels: list[int]  # true labels (for a fidelity model: the base's predictions)
    base_pred: list[int]
    base_conf: list[float]  # softmax probability of the base's prediction
    pred: list[int]
    conf: list[float]  # softmax probability of the current prediction
    conf_in_base_pred: list[float]  # the current model's probability of the base's prediction
    classes: list[str]
    output: str = "logits"  # "embedding": the argmax fields above mean nothing; read moved()
    cosine: list[float] = field(default_factory=list)  # embedding: cosine with the base's, per example
    recall: list[float] = field(default_factory=list)  # embedding: share of the base's k nearest neighbours kept
    recall_k: int = 0  # embedding: that k

    def moved(self, limit: int | None = None) -> list[dict]:
        """An embedding model's examples, the one whose embedding moved most from the base's
        first (lowest cosine): ``{"index", "cosine", "recall"}`` (recall: the share of its
        ``recall_k`` nearest neighbours among the base's embeddings it keeps)."""
        rows = [{"index": self.indices[i], "cosine": c, "recall": r}
                for i, (c, r) in enumerate(zip(self.cosine, self.recall))]
        rows.sort(key=lambda r: (r["cosine"], r["index"]))
        return rows[:limit] if limit is not None else rows

    def changed(self, limit: int | None = None, cls: int | None = None) -> list[dict]:
        """Examples whose prediction changed, the largest confidence drop first (the base's
        confidence in its prediction minus the current model's in that same class);
        ``cls`` keeps those whose label or either prediction is that class."""
        rows = []
        for i, (b, p) in enumerate(zip(self.base_pred, self.pred)):
            if b == p:
                continue
            if cls is not None and cls not in (self.labels[i], b, p):
                continue
            rows.append({"index": self.indices[i], "label": self.labels[i], "base_pred": b,
                         "base_conf": self.base_conf[i], "pred": p, "conf": self.conf[i],
                         "drop": self.base_conf[i] - self.conf_in_base_pred[i]})
        rows.sort(key=lambda r: (-r["drop"], r["index"]))
        return rows[:limit] if limit is not None else rows

    def confusion(self, which: str = "current") -> list[list[int]]:
        """Counts [true label][predicted class] of the base or the current model.

        Raises:
            PrunescopeError: more than ``MAX_CONFUSION_CLASSES`` classes (a language model's vocabulary).
        """
        k = len(self.classes)
        if k > MAX_CONFUSION_CLASSES:
            raise PrunescopeError(f"a confusion matrix of {k:,} classes (a language model's vocabulary) is too large; "
                                  f"it is made for at most {MAX_CONFUSION_CLASSES:,} classes")
        pred = self.pred if which == "current" else self.base_pred
        m = [[0] * k for _ in range(k)]
        for t, p in zip(self.labels, pred):
            m[t][p] += 1
        return m

    def confusion_delta(self) -> list[list[int]]:
        """Current minus base confusion counts (a fixed example moves off-diagonal to the
        diagonal; a broken one the other way)."""
        c, b = self.confusion("current"), self.confusion("base")
        return [[c[i][j] - b[i][j] for j in range(len(c))] for i in range(len(c))]


def changes(model: nn.Module, evaluator: Evaluator, subset: str = "quick") -> Changes:
    """Predictions of the evaluator's base and of ``model`` on ``subset`` ("quick" or
    "full") of its eval set (``Workspace.changes`` passes the current model).

    Raises:
        PrunescopeError: an unknown subset.
    """
    ev, evalset = evaluator, evaluator.evalset
    if getattr(ev, "output", "logits") in NEST_KINDS:
        raise PrunescopeError(f"changed examples are listed for class scores and embeddings; this model's output is "
                              f"{ev.output!r} (judged leaf by leaf: see the per-leaf figures on the Prune page)")
    x, y = evalset.subset(subset)
    with torch.inference_mode():
        out = ev.outputs(model, subset).float()
        base_out = ev.base_outputs(subset).float()
    p, pb = F.softmax(out, 1), F.softmax(base_out, 1)
    pred, base_pred = p.argmax(1), pb.argmax(1)
    labels = y if ev.task in LABELLED_TASKS else base_pred
    idx = evalset.quick_index if subset == "quick" else list(range(len(evalset.y)))
    emb = {}
    if getattr(ev, "output", "logits") == "embedding":
        k = recall_k(len(out))
        emb = {"output": "embedding", "cosine": output_cosine_each(out, base_out).tolist(),
               "recall": neighbour_recall_each(out, base_out, k).tolist(), "recall_k": k}
    return Changes(subset=subset, indices=[int(i) for i in idx], labels=labels.tolist(), base_pred=base_pred.tolist(),
                   base_conf=pb.max(1).values.tolist(), pred=pred.tolist(), conf=p.max(1).values.tolist(),
                   conf_in_base_pred=p.gather(1, base_pred[:, None])[:, 0].tolist(),
                   classes=[str(c) for c in evalset.classes], **emb)


def _layer_outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named module's output on ``x`` (one forward pass; hooks removed after): its first call's,
    when that is one row per example (a detector's box heads run on its proposals: left out)."""
    mods = dict(model.named_modules())
    got, handles = {}, []
    for n in names:
        def hook(_m, _a, o, n=n):
            if isinstance(o, torch.Tensor) and n not in got and o.dim() >= 1 and len(o) == len(x):
                got[n] = o.detach().flatten(1).float()
        handles.append(mods[n].register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return got


def divergence(model: nn.Module, evaluator: Evaluator, subset: str = "quick") -> list[dict]:
    """Linear CKA between the evaluator's base's and ``model``'s (the current model's)
    output of every prunable layer present in both (same name), in the base's order, on
    ``subset`` of the evaluator's eval set: 1 where the current model computes what the
    base does (up to a rotation and scale), lower where it departs. A layer cut out of the
    current model, or whose output is not one row per example (a detector's box heads), is
    listed with ``cka`` None.

    Raises:
        PrunescopeError: the current model is not a PyTorch model (a quantised plan); an
            unknown subset.
    """
    cur, base = model, evaluator.base
    if getattr(cur, "final", False):
        raise PrunescopeError("divergence needs the PyTorch modules of the current model; a quantised (onnxruntime) "
                              "model has none: look at the plan without its quantize step")
    x, _ = evaluator.evalset.subset(subset)
    names = list(prunable_layers(base))
    present = set(dict(cur.named_modules()))
    base_acts = _layer_outputs(base, names, x)
    cur_acts = _layer_outputs(cur, [n for n in names if n in present], x)
    rows = []
    for n in names:
        a, b = base_acts.get(n), cur_acts.get(n)
        rows.append({"layer": n, "cka": None if a is None or b is None else round(linear_cka(a, b), 6)})
    return rows


__all__ = ["MAX_CONFUSION_CLASSES", "Changes", "changes", "divergence"]
