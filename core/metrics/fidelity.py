"""How faithfully a model's embedding (features, not class scores) follows the base's, on one
evaluation set: the output cosine, the nearest-neighbour recall@k and the relative output error.

For a model judged by its embedding (a sentence encoder's pooled output), an argmax over the
features means nothing; what matters is whether each example still lands where the base put it
(cosine with the base's embedding of the same example) and whether the geometry of the set is
kept (the base's nearest neighbours of each example are still its nearest neighbours).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RECALL_K = 10  # neighbours compared per example (fewer when the set is smaller)
_BLOCK = 1024  # rows of the similarity matrix computed at once


def recall_k(n: int) -> int:
    """The k of neighbour recall on a set of ``n`` examples: ``RECALL_K``, or ``n - 1`` when
    the set is smaller (each example's neighbours are the others); 0 for fewer than 2."""
    return max(0, min(RECALL_K, n - 1))


def neighbours(emb: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, k)`` indices of each row's ``k`` nearest other rows of ``emb`` by cosine
    similarity, nearest first (a row is never its own neighbour)."""
    z = F.normalize(emb.float(), dim=1)
    out = []
    for a in range(0, len(z), _BLOCK):
        sim = z[a:a + _BLOCK] @ z.T  # (B, N)
        rows = torch.arange(a, a + len(sim), device=z.device)
        sim[torch.arange(len(sim), device=z.device), rows] = -float("inf")
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


def neighbour_recall_each(emb: torch.Tensor, base_emb: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Per example (``(N,)``): the share of its ``k`` nearest neighbours among the base's
    embeddings that are also among its ``k`` nearest among ``emb`` (cosine; default k:
    :func:`recall_k`). 1 everywhere for a set of fewer than 2 examples (no neighbours to lose)."""
    n = len(emb)
    k = recall_k(n) if k is None else k
    if k < 1:
        return torch.ones(n, dtype=torch.float64)
    mine, theirs = neighbours(emb, k), neighbours(base_emb, k)
    return (theirs[:, :, None] == mine[:, None, :]).any(-1).double().mean(1).cpu()


def neighbour_recall(emb: torch.Tensor, base_emb: torch.Tensor, k: int | None = None) -> float:
    """Nearest-neighbour recall@k of ``emb`` against ``base_emb``: the mean over examples of
    :func:`neighbour_recall_each` (1.0: every example keeps the base's k nearest neighbours)."""
    each = neighbour_recall_each(emb, base_emb, k)
    return float(each.mean()) if len(each) else 1.0


def output_cosine_each(out: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
    """Per example: the cosine between this model's and the base's output (float64, ``(N,)``)."""
    return F.cosine_similarity(out.float(), base_out.float(), dim=1).double()


def relative_error_each(out: torch.Tensor, base_out: torch.Tensor) -> torch.Tensor:
    """Per example: ``||out - base|| / ||base||`` (float64, ``(N,)``; a zero base output counts as 1e-12)."""
    diff = (out.float() - base_out.float()).norm(dim=1).double()
    return diff / base_out.float().norm(dim=1).double().clamp(min=1e-12)


__all__ = ["RECALL_K", "recall_k", "neighbours", "neighbour_recall", "neighbour_recall_each", "output_cosine_each",
           "relative_error_each"]
