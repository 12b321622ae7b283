"""Modules the dependency graph sees as one node, with a pruner of their own.

torchvision's Swin attention runs its layers' weights through functions
(``F.linear(x, self.qkv.weight)`` inside ``shifted_window_attention``) and its patch
merging concatenates on the last dimension: Torch-Pruning can follow neither, so the
embedding width of a Swin could not be pruned (the pruned model crashed in ``qkv``).
While the graph is traced, a forward hook ties such a module's output to its input by
one autograd node (its inside is not traced), and Torch-Pruning calls the pruner below
for it (``DependencyGraph.register_customized_layer``):

* ``ShiftedWindowAttention`` (and V2): the residual width flows in and out (in = out,
  like a LayerNorm). Removing ``k`` channels removes them from ``qkv``'s inputs and
  ``proj``'s outputs, and ``k / num_heads`` dimensions of every head (the lowest-norm
  ones over q, k, v rows and ``proj`` columns), so the heads stay and their width
  follows the embedding width (``C // num_heads`` in torchvision's forward). The group
  must remove a multiple of ``num_heads`` channels (``UnitGroup.multiple``).
* ``PatchMerging`` (and V2): in = ``C`` (four copies concatenated), out = ``2C``.
"""
from __future__ import annotations

import sys

import torch
from torch import nn


class _Tie(torch.autograd.Function):
    """``out`` (detached) as a function of ``x`` alone: one autograd node from input to output."""

    @staticmethod
    def forward(ctx, x, out):
        return out.clone()

    @staticmethod
    def backward(ctx, g):
        return None, None


def tie_hook(_m, args, out):
    """A forward hook that makes an opaque module's output one autograd node of its input
    (:class:`_Tie`), so the dependency graph ties the two and does not trace its inside."""
    if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
        return _Tie.apply(args[0], out.detach())
    return None


def _keep(n: int, idxs) -> list[int]:
    drop = {int(i) for i in idxs}
    return [i for i in range(n) if i not in drop]


def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.contiguous(), requires_grad=like.requires_grad)


def _linear(lin: nn.Linear, rows: list[int] | None = None, cols: list[int] | None = None) -> None:
    w = lin.weight.data
    if rows is not None:
        w = w[rows]
        if lin.bias is not None:
            lin.bias = _param(lin.bias.data[rows], lin.bias)
    if cols is not None:
        w = w[:, cols]
    lin.weight = _param(w, lin.weight)
    lin.out_features, lin.in_features = w.shape


def _norm(norm: nn.Module, keep: list[int]) -> None:
    if getattr(norm, "weight", None) is not None:
        norm.weight = _param(norm.weight.data[keep], norm.weight)
    if getattr(norm, "bias", None) is not None:
        norm.bias = _param(norm.bias.data[keep], norm.bias)
    if hasattr(norm, "normalized_shape"):
        norm.normalized_shape = (len(keep),)


def _base():
    from torch_pruning.pruner.function import BasePruningFunc

    return BasePruningFunc


def _pruners():
    """(module class -> pruner) for the classes loaded in this process."""
    sw = sys.modules.get("torchvision.models.swin_transformer")
    if sw is None:
        return {}
    Base = _base()

    class WindowAttentionPruner(Base):
        def prune_out_channels(self, layer, idxs):
            c, h = layer.proj.out_features, layer.num_heads
            keep = _keep(c, idxs)
            k = c - len(keep)
            if k % h:
                raise ValueError(f"window attention: {k} channels do not split over its {h} heads")
            if k == 0:
                return layer
            hd = c // h
            w, p = layer.qkv.weight.data, layer.proj.weight.data  # (3C, C), (C, C)
            score = w[:c].norm(dim=1) ** 2 + w[c:2 * c].norm(dim=1) ** 2 + w[2 * c:].norm(dim=1) ** 2 \
                + p.norm(dim=0) ** 2  # (C,): one per dimension of a head
            inner = []
            for head in range(h):
                s = score[head * hd:(head + 1) * hd]
                drop = set((torch.argsort(s, stable=True)[:k // h] + head * hd).tolist())
                inner += [head * hd + i for i in range(hd) if head * hd + i not in drop]
            _linear(layer.qkv, rows=inner + [c + i for i in inner] + [2 * c + i for i in inner], cols=keep)
            _linear(layer.proj, rows=keep, cols=inner)
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer):
            return layer.proj.out_features

        def get_in_channels(self, layer):
            return layer.qkv.in_features

    class PatchMergingPruner(Base):
        def prune_in_channels(self, layer, idxs):
            c = layer.reduction.in_features // 4
            keep = _keep(c, idxs)
            cols = [q * c + i for q in range(4) for i in keep]  # torch.cat([x0, x1, x2, x3], -1)
            if layer.norm.normalized_shape[-1] == 4 * c:  # V1: the norm comes before the reduction
                _norm(layer.norm, cols)
            _linear(layer.reduction, cols=cols)
            layer.dim = len(keep)
            return layer

        def prune_out_channels(self, layer, idxs):
            keep = _keep(layer.reduction.out_features, idxs)
            if layer.norm.normalized_shape[-1] == layer.reduction.out_features:  # V2: the norm comes after
                _norm(layer.norm, keep)
            _linear(layer.reduction, rows=keep)
            return layer

        def get_out_channels(self, layer):
            return layer.reduction.out_features

        def get_in_channels(self, layer):
            return layer.reduction.in_features // 4

    out = {}
    for name, pruner in (("ShiftedWindowAttention", WindowAttentionPruner),
                         ("ShiftedWindowAttentionV2", WindowAttentionPruner),
                         ("PatchMerging", PatchMergingPruner), ("PatchMergingV2", PatchMergingPruner)):
        cls = getattr(sw, name, None)
        if cls is not None:
            out[cls] = pruner()
    return out


def opaque_pruners(model: nn.Module) -> dict:
    """(module class -> Torch-Pruning pruner) for the opaque module classes ``model`` uses."""
    pruners = _pruners()
    used = {type(m) for m in model.modules()}
    return {c: p for c, p in pruners.items() if c in used}


def heads_multiple(module: nn.Module, width: int) -> int:
    """The head count a group's removed channels must be a multiple of, for an opaque
    attention module whose width the group holds (1 otherwise)."""
    h = getattr(module, "num_heads", None)
    proj = getattr(module, "proj", None)
    if type(module).__name__.startswith("ShiftedWindowAttention") and isinstance(h, int) \
            and isinstance(proj, nn.Linear) and proj.out_features == width:
        return h
    return 1


WHY_NO_HEADS = ("its window attention (torchvision's Swin) makes each head as wide as the embedding width / "
                "num_heads, so a head cannot go alone; narrow the width instead (the same share of every head): "
                "channel granularity narrows the first stage, neuron granularity the later stages and the MLPs")


def why_no_heads(model: nn.Module) -> str | None:
    """Why ``model``'s attention has no heads to remove alone (:data:`WHY_NO_HEADS`), if it uses
    torchvision's window attention; None otherwise."""
    return WHY_NO_HEADS if any(type(m).__name__.startswith("ShiftedWindowAttention") for m in model.modules()) \
        else None


__all__ = ["opaque_pruners", "heads_multiple", "tie_hook", "why_no_heads"]
