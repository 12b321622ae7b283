"""Datasets and evaluation sets.

A dataset is registered as a function returning :class:`DataSplits` (CPU tensors).
An :class:`EvalSet` holds the test split on the evaluation device, with a fixed,
stratified quick subset used for live updates and the full split on demand.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    import torch

# torch is imported where it is used: registering and listing datasets stays cheap.
from core.errors import PrunescopeError
from core.ground.registry import Registry

DATASETS: Registry[Callable[[], DataSplits]] = Registry("dataset")


@dataclass
class DataSplits:
    """Train and test tensors of one dataset (CPU)."""

    name: str
    x_train: torch.Tensor  # (N, *input_shape) float32 (text: int64 token ids)
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]  # class names, index = label
    kind: str = "image"  # "image" (x is (N, C, H, W)), "tabular" or "text" (x is (N, T) int64 token ids)
    description: str = ""


def register_dataset(name: str):
    """Decorator: register a zero-argument function that returns :class:`DataSplits`.

    Registering a name again replaces it (a notebook cell run twice), and the next
    :func:`get_dataset` loads the new one."""

    def deco(fn: Callable[[], DataSplits]):
        DATASETS.register(name, fn, overwrite=True)
        get_dataset.cache_clear()
        return fn

    return deco


@functools.lru_cache(maxsize=8)
def get_dataset(name: str) -> DataSplits:
    """Load (once per process) and return a registered dataset.

    Raises:
        UnknownNameError: no dataset of that name; the message lists valid names.
    """
    return DATASETS.get(name)()


def list_datasets() -> list[str]:
    return DATASETS.names()


IGNORE = 255  # in label masks (task "segmentation"): a pixel that is not judged, as in Pascal VOC


def is_boxes(y) -> bool:
    """True for labelled boxes (task "detection", ``sources/boxes.py``): N x M x 5 floats, rows x1,
    y1, x2, y2, label (-1: padding); label masks are integer N x H x W."""
    return y is not None and y.dim() == 3 and y.shape[-1] == 5 and y.is_floating_point()


def label_classes(y: torch.Tensor) -> int:
    """Classes in label masks ``y``: one past the largest label that is not :data:`IGNORE` (labelled
    boxes N x M x 5: one past the largest box label)."""
    if is_boxes(y):
        labels = y[..., 4][y[..., 4] >= 0]
        return int(labels.max()) + 1 if labels.numel() else 0
    kept = y[y != IGNORE]
    return int(kept.max()) + 1 if kept.numel() else 0


def strata(y: torch.Tensor) -> torch.Tensor:
    """One label per example of masks ``y`` (N x H x W) to stratify subsets by: the most
    frequent labelled class of each mask (0 where every pixel is ignored); of labelled boxes
    (N x M x 5), the most frequent box label of each image (0 where it has none)."""
    import torch

    if is_boxes(y):  # boxes: their labels, padding as ignored
        y = torch.where(y[..., 4] >= 0, y[..., 4], torch.full_like(y[..., 4], IGNORE)).long()
    flat = y.reshape(len(y), -1).long()
    k = max(label_classes(y), 1)
    counts = torch.zeros(len(y), k + 1, dtype=torch.long)
    counts.scatter_add_(1, flat.clamp(max=k).cpu(), torch.ones_like(flat).cpu())
    return counts[:, :k].argmax(1)


def stratified_subset(y: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of a fixed subset of ``size`` examples with classes in proportion.

    Deterministic for a given ``y``, ``size`` and ``seed``; sorted ascending. Label masks
    (N x H x W) are stratified by :func:`strata`.
    """
    import torch

    y = strata(y) if y.dim() > 1 else y
    n = len(y)
    if size >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    picked = []
    for c in classes:
        idx = torch.nonzero(y == c).flatten()
        k = max(1, round(size * len(idx) / n))
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    out = torch.cat(picked)
    out = out[torch.randperm(len(out), generator=g)[:size]]
    return torch.sort(out).values


def glimpse_slice(y: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``size`` examples of ``y`` (a quick subset's labels) for a first, provisional
    readout: one example of each class first (while ``size`` allows), then classes in proportion
    (each class's examples in a fixed shuffled order, taken by rank / class count).
    Deterministic for a given ``y``, ``size`` and ``seed``; sorted ascending. Label masks
    (N x H x W) are stratified by :func:`strata`."""
    import torch

    y = strata(y) if y.dim() > 1 else y
    if size >= len(y):
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    ys = y.cpu()[order]
    counts = torch.bincount(ys).double()
    rank = torch.zeros(len(ys), dtype=torch.float64)
    for c in torch.unique(ys):
        at = torch.nonzero(ys == c).flatten()
        rank[at] = torch.arange(len(at), dtype=torch.float64) / counts[c]
        rank[at[0]] = -1.0  # the first of every class comes before any second
    pick = order[torch.sort(rank, stable=True).indices[:size]]
    return torch.sort(pick).values


@dataclass
class EvalSet:
    """Evaluation inputs and labels, already on ``device``.

    ``quick`` is a fixed stratified subset for live updates; ``full`` is the test split;
    ``glimpse`` is a fixed stratified tenth of the quick subset (:func:`glimpse_slice`) for a
    first, provisional readout while the quick figures are computed.
    """

    name: str
    x: torch.Tensor  # (N, *input_shape) on device
    y: torch.Tensor  # (N,) on device
    classes: list[str]
    quick_index: torch.Tensor  # (Q,) indices into x, on device
    device: torch.device
    kind: str = "image"
    _quick: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _glimpse: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @classmethod
    def from_splits(
        cls, splits: DataSplits, device: torch.device | str = "cpu", quick_size: int = 256, seed: int = 0
    ) -> EvalSet:
        import torch

        device = torch.device(device)
        idx = stratified_subset(splits.y_test, quick_size, seed)
        return cls(
            name=splits.name,
            x=splits.x_test.to(device),
            y=splits.y_test.to(device),
            classes=list(splits.classes),
            quick_index=idx.to(device),
            device=device,
            kind=splits.kind,
        )

    def quick(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The quick subset ``(x, y)`` (cached)."""
        if self._quick is None:
            self._quick = (self.x[self.quick_index].contiguous(), self.y[self.quick_index].contiguous())
        return self._quick

    def glimpse(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The glimpse ``(x, y)``: ``max(1, Q // 10)`` examples of the quick subset of Q (cached)."""
        if self._glimpse is None:
            x, y = self.quick()
            i = glimpse_slice(y, max(1, len(y) // 10)).to(y.device)
            self._glimpse = (x[i].contiguous(), y[i].contiguous())
        return self._glimpse

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y

    def subset(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``"quick"``, ``"full"`` or ``"glimpse"`` (a tenth of the quick subset).

        Raises:
            PrunescopeError: another name.
        """
        if which == "quick":
            return self.quick()
        if which == "glimpse":
            return self.glimpse()
        if which == "full":
            return self.full()
        raise PrunescopeError(f"subset must be 'quick', 'full' or 'glimpse', got {which!r}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> EvalSet:
        import torch

        device = torch.device(device)
        return EvalSet(self.name, self.x.to(device), self.y.to(device), self.classes,
                       self.quick_index.to(device), device, self.kind)
