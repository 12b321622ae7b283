"""N:M semi-structured sparsity (2:4 by default): in every group of M consecutive weights
along a Linear layer's input dimension, the N with the highest scores stay.

On any device it is a weight mask (the model keeps its shapes; dense kernels are not
faster). On a CUDA GPU with sparse tensor cores (Ampere and later), 2:4 is what
``torch.sparse.to_sparse_semi_structured`` accelerates: :func:`to_semi_structured`
converts the masked Linear weights of a half-precision copy, and
:func:`semi_structured_speedup` times it against the dense copy. Both refuse cleanly
without a GPU.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from core.errors import ModelError, StepError, first_line
from core.ground.constraints import Interval, Name, Seed
from core.plan.report import StepReport
from core.plan.step import Step, register_step
from core.prune.masks import masked_copy, prunable_layers


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask keeping the ``n`` highest of every ``m`` consecutive entries of each row
    (the last dimension, which must be a multiple of ``m``); ties keep the earlier entry."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    idx = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., :n]
    keep.scatter_(-1, idx, True)
    return keep.reshape(rows, cols)


def eligible_layers(model: nn.Module, m: int) -> dict[str, nn.Linear]:
    """Linear layers whose input width is a multiple of ``m``, except the output layer
    (the last Linear), which keeps every weight as structured steps do."""
    lin = {n: layer for n, layer in prunable_layers(model).items() if isinstance(layer, nn.Linear)}
    names = list(lin)[:-1]
    return {n: lin[n] for n in names if lin[n].in_features % m == 0}


@register_step
@dataclass(frozen=True)
class NMSparsity(Step):
    """Keep N of every M consecutive weights (by |w|) in each eligible Linear layer."""

    op: ClassVar[str] = "nm_sparsity"
    constraints = {"n": Interval(1, 64, integer=True), "m": Interval(2, 64, integer=True), "criterion": Name(),
                   "seed": Seed()}
    n: int = 2  # weights kept per group
    m: int = 4  # group length along the input dimension
    criterion: str = "l1"  # "l1" (|w|) is the only criterion so far
    seed: int = 0

    def check(self):
        if self.n >= self.m:
            raise StepError(f"nm_sparsity: n must be smaller than m, got {self.n}:{self.m}")
        if self.criterion != "l1":
            raise StepError(f"nm_sparsity.criterion must be 'l1' (|w|), got {self.criterion!r}")

    def build(self, model: nn.Module, ctx) -> tuple[nn.Module, StepReport]:
        layers = eligible_layers(model, self.m)
        if not layers:
            raise ModelError(f"no Linear layer (besides the output layer) has an input width divisible by {self.m}")
        new, units = {}, {}
        with torch.no_grad():
            for name, layer in layers.items():
                w = layer.weight.detach()
                nw = w * nm_mask(w.abs(), self.n, self.m)
                new[name] = nw
                units[name] = (nw.numel() - int(torch.count_nonzero(nw)), nw.numel())
        report = StepReport(self.op, units=units, unit_name="weight")
        report.summary = (f"{self.n}:{self.m} pattern in {len(layers)} Linear layer(s): {report.pruned:,} of "
                          f"{report.total:,} weights are zero")
        return masked_copy(model, new), report

    def describe(self) -> str:
        return f"{self.n}:{self.m} semi-structured sparsity (by |w|)"


SPARSE_BACKENDS = ("auto", "cutlass", "cusparselt")  # torch's default, or one of its two kernels


def to_semi_structured(model: nn.Module, backend: str = "auto") -> nn.Module:
    """A half-precision CUDA copy whose 2:4-masked Linear weights are
    ``torch.sparse.to_sparse_semi_structured`` tensors (sparse tensor-core kernels).

    Args:
        backend: "auto" (PyTorch's choice), "cutlass" (PyTorch's CUTLASS kernels: compute
            capability 8.x only) or "cusparselt" (NVIDIA's cuSPARSELt, where this torch build has it).

    Raises:
        ModelError: no CUDA device, the backend is missing or does not run on this GPU, or no
            Linear layer holds a 2:4 pattern.
    """
    if backend not in SPARSE_BACKENDS:
        raise ModelError(f"backend must be one of {', '.join(SPARSE_BACKENDS)}, got {backend!r}")
    if not torch.cuda.is_available():
        raise ModelError("2:4 semi-structured kernels need a CUDA GPU (Ampere or later); none is available")
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    if backend == "cusparselt" and not torch.backends.cusparselt.is_available():
        raise ModelError("this torch build has no cuSPARSELt; use backend='auto' or 'cutlass'")
    out = copy.deepcopy(model).half().cuda().eval()
    done = 0
    forced = SparseSemiStructuredTensor._FORCE_CUTLASS  # the class-wide switch between the two kernels
    if backend != "auto":
        SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    try:
        for layer in eligible_layers(out, 4).values():
            w = layer.weight.detach()
            groups = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
            if bool((groups <= 2).all()) and w.shape[0] % 32 == 0 and w.shape[1] % 64 == 0:
                try:  # the kernels refuse some GPUs (CUTLASS: compute capability 8.x only)
                    layer.weight = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
                    layer(torch.zeros(64, w.shape[1], dtype=w.dtype, device=w.device))
                except (RuntimeError, NotImplementedError) as exc:
                    raise ModelError(f"2:4 kernels ({backend}) do not run on this GPU "
                                     f"({torch.cuda.get_device_name()}): {first_line(str(exc))}") from exc
                done += 1
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = forced
    if not done:
        raise ModelError("no Linear layer holds a 2:4 pattern with a shape the sparse kernels take "
                         "(rows a multiple of 32, columns of 64); apply NMSparsity(2, 4) first")
    return out


def semi_structured_speedup(model: nn.Module, example: torch.Tensor, repeats: int = 50,
                            backend: str = "auto") -> dict:
    """Median forward time of the dense half-precision copy and of its 2:4 sparse copy on
    CUDA, interleaved, each run timed between two CUDA events. Raises ModelError without a
    GPU (see :func:`to_semi_structured`)."""
    import statistics

    from core.metrics.cost import cuda_event_times

    sparse = to_semi_structured(model, backend)
    dense = copy.deepcopy(model).half().cuda().eval()
    x = example.half().cuda()
    times = {"dense": [], "sparse": []}
    with torch.inference_mode():
        for f in (dense, sparse):
            for _ in range(3):
                f(x)
        torch.cuda.synchronize()
        for _ in range(repeats):
            for k, f in (("dense", dense), ("sparse", sparse)):
                times[k] += cuda_event_times(f, x, 1)
    d, s = statistics.median(times["dense"]) * 1e3, statistics.median(times["sparse"]) * 1e3
    return {"dense_ms": d, "sparse_ms": s, "speedup": d / s if s else float("nan"), "backend": backend}


__all__ = ["NMSparsity", "nm_mask", "eligible_layers", "to_semi_structured", "semi_structured_speedup"]
