"""Metrics of a model on an evaluation set: quality, size, cost and speed.

Quality (accuracy, loss, per-class accuracy, fidelity to the base model) is computed
on every call. Cost figures that depend only on the architecture (MACs, latency,
bytes on disk) are cached by an architecture signature, so moving a weight threshold
re-measures none of them; a structural change (new shapes) measures them anew.
"""
from __future__ import annotations

import hashlib
import io
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .data import EvalSet
from .device import synchronize
from .masks import prunable_layers


@dataclass
class Latency:
    """Forward-pass time of one batch."""

    median_ms: float  # median over timed runs
    iqr_ms: float  # interquartile range over timed runs
    batch_size: int
    threads: int  # torch.get_num_threads() while timing
    device: str
    runs: int  # timed runs behind the median

    def to_dict(self) -> dict:
        return {"median": self.median_ms, "iqr": self.iqr_ms, "batch_size": self.batch_size,
                "threads": self.threads, "device": self.device, "runs": self.runs}


@dataclass
class Metrics:
    """Everything the app and the CLI show about one model on one subset."""

    accuracy: float  # top-1 on labels (for task "fidelity": agreement with the base)
    loss: float  # mean cross-entropy
    per_class_accuracy: list[float]  # index = class
    agreement: float  # fraction of examples where the prediction equals the base's
    output_cosine: float  # mean cosine between this model's and the base's outputs
    params: int  # all parameters
    nonzero_params: int
    sparsity: float  # fraction of prunable weights (Linear/Conv) that are zero
    macs: int  # multiply-accumulates for one example
    size_bytes: int  # bytes of the state dict saved as safetensors
    latency: Latency | None  # forward time of a batch (None when not measured)
    subset: str  # "quick" or "full"
    n: int  # examples evaluated
    shapes_changed: bool = False  # architecture differs from the base (structured / surgery)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency_ms"] = self.latency.to_dict() if self.latency else None
        del d["latency"]
        return d


def arch_signature(model: nn.Module) -> str:
    """Hash of module types and parameter/buffer shapes: equal for masked variants."""
    h = hashlib.sha1()
    for name, m in model.named_modules():
        h.update(f"{name}:{type(m).__name__};".encode())
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()


def nonzero_counts(model: nn.Module) -> tuple[int, int, float]:
    """(parameters, non-zero parameters, weight sparsity) in one pass over the parameters.

    Weight sparsity is the fraction of zero weights in the prunable (Linear/Conv) layers.
    """
    total = nz = 0
    seen: dict[int, int] = {}
    for p in model.parameters():
        c = int(torch.count_nonzero(p))
        seen[id(p)] = c
        total += p.numel()
        nz += c
    wz = wt = 0
    for m in prunable_layers(model).values():
        w = m.weight
        wt += w.numel()
        c = seen.get(id(w))
        wz += w.numel() - (c if c is not None else int(torch.count_nonzero(w)))
    return total, nz, (wz / wt if wt else 0.0)


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters)."""
    total, nz, _ = nonzero_counts(model)
    return total, nz


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of zero weights in the prunable (Linear/Conv) layers."""
    return nonzero_counts(model)[2]


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on one example (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = example[:1]
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return int(fc.get_total_flops() // 2)


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict written as safetensors."""
    from safetensors.torch import save

    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # safetensors refuses shared storage; clone tensors that alias another.
    seen, out = set(), {}
    for k, v in sd.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return len(save(out))


def measure_latency(model: nn.Module, example: torch.Tensor, batch_size: int = 64,
                    min_run_time: float = 0.3) -> Latency:
    """Median and IQR of one batch's forward time (``torch.utils.benchmark``).

    Warm-up runs first; on CUDA the timer synchronises around each run.
    """
    from torch.utils import benchmark

    reps = math.ceil(batch_size / example.shape[0])
    x = example.repeat((reps,) + (1,) * (example.dim() - 1))[:batch_size].contiguous()
    dev = x.device
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        synchronize(dev)
        t = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x},
                            num_threads=torch.get_num_threads())
        m = t.blocked_autorange(min_run_time=min_run_time)
    return Latency(median_ms=m.median * 1e3, iqr_ms=m.iqr * 1e3, batch_size=batch_size,
                   threads=torch.get_num_threads(), device=str(dev), runs=len(m.times))


class Evaluator:
    """Evaluates models against one eval set and one base model.

    Base outputs are computed once per subset; MACs, size and latency are cached by
    architecture signature.
    """

    def __init__(self, evalset: EvalSet, base: nn.Module, *, task: str = "classification",
                 latency_batch: int = 64, latency_time: float = 0.3):
        self.evalset = evalset
        self.base = base
        self.task = task
        self.latency_batch = latency_batch
        self.latency_time = latency_time
        self._base_out: dict[str, torch.Tensor] = {}
        self._arch_cache: dict[tuple, object] = {}
        self.base_signature = arch_signature(base)

    @torch.inference_mode()
    def outputs(self, model: nn.Module, subset: str = "quick", batch: int = 1024) -> torch.Tensor:
        x, _ = self.evalset.subset(subset)
        if len(x) <= batch:
            return model(x)
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])

    def base_outputs(self, subset: str) -> torch.Tensor:
        if subset not in self._base_out:
            self._base_out[subset] = self.outputs(self.base, subset)
        return self._base_out[subset]

    def _cached(self, kind: str, sig: str, fn):
        key = (kind, sig)
        if key not in self._arch_cache:
            self._arch_cache[key] = fn()
        return self._arch_cache[key]

    def latency(self, model: nn.Module, sig: str | None = None) -> Latency:
        sig = sig or arch_signature(model)
        x = self.evalset.quick()[0]
        return self._cached(("lat", self.latency_batch), sig,
                            lambda: measure_latency(model, x, self.latency_batch, self.latency_time))

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, subset: str = "quick", *, latency: bool = True) -> Metrics:
        """All metrics of ``model`` on ``subset`` ("quick" or "full")."""
        x, y = self.evalset.subset(subset)
        out = self.outputs(model, subset)
        base_out = self.base_outputs(subset)
        pred = out.argmax(1)
        base_pred = base_out.argmax(1)
        agreement = float((pred == base_pred).float().mean())
        cos = float(F.cosine_similarity(out.float(), base_out.float(), dim=1).mean())
        target = y if self.task == "classification" else base_pred
        loss = float(F.cross_entropy(out.float(), target))
        correct = (pred == target)
        k = self.evalset.num_classes
        per_class_n = torch.bincount(target, minlength=k).clamp_min(1)
        per_class_ok = torch.bincount(target[correct], minlength=k)
        per_class = (per_class_ok.float() / per_class_n.float()).tolist()
        params, nz, sparsity = nonzero_counts(model)
        sig = arch_signature(model)
        example = x[:1]
        macs = self._cached("macs", sig, lambda: count_macs(model, example))
        size = self._cached("size", sig, lambda: state_dict_bytes(model))
        lat = self.latency(model, sig) if latency else None
        return Metrics(accuracy=float(correct.float().mean()), loss=loss, per_class_accuracy=per_class,
                       agreement=agreement, output_cosine=cos, params=params, nonzero_params=nz,
                       sparsity=sparsity, macs=macs, size_bytes=size, latency=lat,
                       subset=subset, n=len(x), shapes_changed=sig != self.base_signature)


def layer_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """MACs of one example per module path (leaf modules that compute), from FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(example[:1])
    out = {}
    for name, ops in fc.get_flop_counts().items():
        # keys look like "Global", "Sequential.layers.0"; strip the root module's name
        if name == "Global":
            continue
        path = name.split(".", 1)[1] if "." in name else ""
        out[path] = int(sum(ops.values()) // 2)
    return out
