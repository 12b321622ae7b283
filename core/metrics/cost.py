"""What a model costs, by architecture: parameters, MACs, bytes, latency.

These depend only on the architecture (and, for non-zeros, the weights), so the
evaluator caches MACs, bytes and latency by :func:`arch_signature`: moving a weight
threshold re-measures none of them.
"""
from __future__ import annotations

import hashlib
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.errors import PrunescopeError
from core.ground.device import autocast, synchronize
from core.ground.layers import prunable_layers


@dataclass
class Latency:
    """Forward-pass time of one batch."""

    median_ms: float  # median over timed runs
    iqr_ms: float  # interquartile range over timed runs
    batch_size: int
    threads: int  # torch.get_num_threads() while timing
    device: str
    runs: int  # timed runs behind the median
    method: str = "wall clock"  # "cuda events" on a GPU (each run between two events, synchronised)
    precision: str = "fp32"  # the evaluation precision the forward ran under (autocast)
    interleaved: bool = False  # timed beside another model (measure_latency_pair), round by round
    timed_at: float = field(default_factory=time.time)  # wall clock (time.time()) when the timing ended

    @property
    def spread(self) -> float:
        """IQR relative to the median."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else math.inf

    @property
    def noisy(self) -> bool:
        """The runs spread widely (IQR at least ``NOISY_SPREAD`` of the median)."""
        return self.spread >= NOISY_SPREAD

    @property
    def reliable(self) -> bool:
        """Enough runs (``MIN_RUNS``) and not noisy: fit to be reused for another plan."""
        return self.runs >= MIN_RUNS and not self.noisy

    def conditions(self) -> tuple:
        """(batch size, threads, device, precision): timings compare only when these are equal."""
        return self.batch_size, self.threads, self.device, self.precision

    def how(self, now: float | None = None) -> str:
        """How and when it was timed, for a help text: "median of 36 runs (IQR 4% of it) of one
        batch of 64 on cpu, 2 threads, fp32 (wall clock); timed 3 min ago, interleaved with the base"."""
        from core.ground.formatting import ago

        spread = f"IQR {100 * self.spread:.0f}% of it" + (": noisy" if self.noisy else "")
        age = ago((time.time() if now is None else now) - self.timed_at)
        return (f"median of {self.runs} runs ({spread}) of one batch of {self.batch_size} on {self.device}, "
                f"{self.threads} threads, {self.precision} ({self.method}); timed {age}"
                + (", interleaved with the base" if self.interleaved else ", alone"))

    def to_dict(self) -> dict:
        return {"median": self.median_ms, "iqr": self.iqr_ms, "batch_size": self.batch_size,
                "threads": self.threads, "device": self.device, "runs": self.runs, "noisy": self.noisy,
                "method": self.method, "precision": self.precision, "interleaved": self.interleaved,
                "timed_at": self.timed_at}


NOISY_SPREAD = 0.25  # IQR / median from which a timing is called noisy
MIN_RUNS = 6  # fewer timed runs than this are too few to reuse (a pair times at least 6 rounds)


def timed_beside(base: Latency | None, current: Latency | None) -> bool:
    """Whether ``base`` and ``current`` are the two halves of one interleaved timing (same
    end time, batch, threads, device and precision): only then is their ratio a speed-up."""
    return (base is not None and current is not None and base.interleaved and current.interleaved
            and base.timed_at == current.timed_at and base.conditions() == current.conditions())


def speed_verdict(base: Latency, current: Latency) -> str:
    """"faster", "slower", or "within noise": a conclusion only when the ratio of the
    medians differs from 1 by more than the two relative spreads together."""
    ratio = base.median_ms / current.median_ms if current.median_ms > 0 else math.inf
    margin = base.spread + current.spread
    if ratio > 1 + margin:
        return "faster"
    if ratio < 1 / (1 + margin):
        return "slower"
    return "within noise"


def arch_signature(model: nn.Module) -> str:
    """Hash of module types and parameter/buffer shapes: equal for masked variants."""
    h = hashlib.sha1()
    for name, m in model.named_modules():
        h.update(f"{name}:{type(m).__name__};".encode())
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()


# id(tensor) -> (a weak reference to it, its version counter when counted, its non-zeros): counts a
# step already made (a weight-level prune counts the weights it writes) or an earlier readout made of a
# tensor still shared (the biases a masked copy keeps), valid while the tensor lives unchanged
_NOTED: dict[int, tuple[weakref.ref, int, int]] = {}


def note_nonzero(t: torch.Tensor, count: int) -> None:
    """Remember that ``t`` holds ``count`` non-zeros, so :func:`nonzero_of` does not count it
    again while it lives and is not changed in place (its version counter says so). Inference
    tensors keep no version counter and are not noted."""
    if t.is_inference():
        return
    key = id(t)
    _NOTED[key] = (weakref.ref(t, lambda _ref: _NOTED.pop(key, None)), t._version, int(count))


def _noted(t: torch.Tensor) -> int | None:
    got = _NOTED.get(id(t))
    if got is None or got[0]() is not t or t.is_inference() or t._version != got[1]:
        return None
    return got[2]


_NUMPY_COUNTABLE = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8,
                    torch.uint8, torch.bool)


def nonzero_count(t: torch.Tensor) -> int | torch.Tensor:
    """``t``'s non-zeros: an int counted by numpy for a host tensor (about 4x faster than
    ``torch.count_nonzero`` on a CPU), else a 0-d tensor on ``t``'s device, so that several
    counts on a GPU are read with one synchronisation."""
    if t.device.type == "cpu" and t.dtype in _NUMPY_COUNTABLE:
        return int(np.count_nonzero(t.detach().numpy()))
    return torch.count_nonzero(t)


def nonzero_of(tensors: list[torch.Tensor]) -> list[int]:
    """The non-zero count of each tensor, read once per device (on a GPU: one
    synchronisation, not one per tensor). A count noted for a tensor that has not changed
    since (:func:`note_nonzero`) is reused; every count made here is noted."""
    counts = [0] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        c = _noted(t)
        if c is None:
            c = nonzero_count(t)
            if isinstance(c, torch.Tensor):
                by_device.setdefault(t.device, []).append(i)
                continue
            note_nonzero(t, c)
        counts[i] = c
    for idx in by_device.values():
        for i, c in zip(idx, torch.stack([torch.count_nonzero(tensors[i]) for i in idx]).tolist()):
            counts[i] = int(c)
            note_nonzero(tensors[i], counts[i])
    return counts


def nonzero_counts(model: nn.Module) -> tuple[int, int, float]:
    """(parameters, non-zero parameters, weight sparsity) in one pass over the parameters.

    Weight sparsity is the fraction of zero weights in the prunable (Linear/Conv) layers.
    """
    params = list(model.parameters())
    counts = nonzero_of(params)
    seen = {id(p): c for p, c in zip(params, counts)}
    total, nz = sum(p.numel() for p in params), sum(counts)
    wz = wt = 0
    for m in prunable_layers(model).values():
        w = m.weight
        wt += w.numel()
        c = seen.get(id(w))
        wz += w.numel() - (c if c is not None else int(torch.count_nonzero(w)))
    return total, nz, (wz / wt if wt else 0.0)


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on one example (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = example[:1]
    model = getattr(model, "reference", None) if getattr(model, "final", False) else model  # int8: same MACs
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return int(fc.get_total_flops() // 2)


# safetensors' Dtype enum, in order: its writer lays tensors out by dtype (descending),
# then by name, so the offsets in the header (and so the header's length) follow this order.
_ST_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64",
             "U64"]
_ST_DTYPES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
              torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.float64: "F64",
              torch.int64: "I64"}


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict written as safetensors (of the int8 file for a
    quantised model), computed from the tensors' sizes and the header the writer would
    make (8 bytes of length, the JSON of names, dtypes, shapes and offsets padded to 8),
    without writing anything: a copy of a large model's weights in memory is not free.
    Tensors of a dtype outside that table are measured by writing them."""
    import json

    if getattr(model, "file_bytes", None) is not None:
        return int(model.file_bytes)
    sd = model.state_dict()
    if any(v.dtype not in _ST_DTYPES for v in sd.values()):
        return _written_bytes(sd)
    items = sorted(((k, _ST_DTYPES[v.dtype], list(v.shape), v.numel() * v.element_size()) for k, v in sd.items()),
                   key=lambda t: (-_ST_ORDER.index(t[1]), t[0]))
    header, off = {}, 0
    for k, dt, shape, n in items:
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    size = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode())
    return 8 + size + (-size) % 8 + off


def _written_bytes(sd: dict) -> int:
    from safetensors.torch import save

    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    # safetensors refuses shared storage; clone tensors that alias another.
    seen, out = set(), {}
    for k, v in sd.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return len(save(out))


def _batch(example: torch.Tensor, batch_size: int) -> torch.Tensor:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PrunescopeError(f"latency batch_size must be an integer >= 1, got {batch_size!r}")
    reps = math.ceil(batch_size / example.shape[0])
    return example.repeat((reps,) + (1,) * (example.dim() - 1))[:batch_size].contiguous()


def cuda_event_times(model: nn.Module, x: torch.Tensor, runs: int) -> list[float]:
    """Seconds of each of ``runs`` forwards, each between two CUDA events on the current
    stream; one synchronisation at the end reads them all (no host clock inside)."""
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    for a, b in ev:
        a.record()
        model(x)
        b.record()
    torch.cuda.synchronize(x.device)
    return [a.elapsed_time(b) / 1e3 for a, b in ev]


def _timed_runs(model: nn.Module, x: torch.Tensor, seconds: float, per_run: float | None) -> list[float]:
    """Times of forwards of ``model`` on ``x`` for about ``seconds``: CUDA events on a GPU,
    else ``torch.utils.benchmark`` (blocked autorange; it synchronises other devices)."""
    if x.device.type == "cuda":
        est = per_run if per_run else cuda_event_times(model, x, 1)[0]
        return cuda_event_times(model, x, max(3, min(1000, int(seconds / max(est, 1e-6)))))
    from torch.utils import benchmark

    t = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=torch.get_num_threads())
    return list(t.blocked_autorange(min_run_time=seconds).times)


def _method(dev: torch.device) -> str:
    return "cuda events" if dev.type == "cuda" else "wall clock"


def measure_latency(model: nn.Module, example: torch.Tensor, batch_size: int = 64,
                    min_run_time: float = 0.3, precision: str = "fp32") -> Latency:
    """Median and IQR of one batch's forward time, after three warm-up runs.

    On CUDA each run is timed between two CUDA events and read after one
    synchronisation; elsewhere ``torch.utils.benchmark`` times blocks of runs.

    Args:
        precision: "fp32", or "bf16" / "fp16" to time the forward under autocast.
    """
    x = _batch(example, batch_size)
    dev = x.device
    with torch.inference_mode(), autocast(dev, precision):
        for _ in range(3):
            model(x)
        synchronize(dev)
        times = _timed_runs(model, x, min_run_time, None)
    q = torch.tensor(times, dtype=torch.float64).quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return Latency(median_ms=float(q[1]) * 1e3, iqr_ms=float(q[2] - q[0]) * 1e3, batch_size=batch_size,
                   threads=torch.get_num_threads(), device=str(dev), runs=len(times), method=_method(dev),
                   precision=precision)


def measure_latency_pair(base: nn.Module, model: nn.Module, example: torch.Tensor, batch_size: int = 64,
                         min_run_time: float = 0.3, rounds: int = 6,
                         progress: Callable[[int, int], None] | None = None,
                         precision: str = "fp32") -> tuple[Latency, Latency]:
    """Latency of ``base`` and ``model`` timed back to back, interleaved over ``rounds``
    (base, model, model, base, ...), so both see the same load of a busy machine.

    A model whose forward takes over 0.1 s gets one warm-up run instead of three, and
    each round times one run per model (at least ``rounds`` runs each, for a median and
    an IQR); faster models are timed for ``min_run_time`` in all. On CUDA every run is
    timed with CUDA events (see :func:`measure_latency`).

    Args:
        progress: called with ``(done, total)`` rounds before and after each round.
        precision: "fp32", or "bf16" / "fp16" to time both under autocast.

    Returns:
        ``(base latency, model latency)``, each from all of its runs.
    """
    x = _batch(example, batch_size)
    dev = x.device
    times: dict[int, list[float]] = {0: [], 1: []}
    per_run: dict[int, float] = {}
    if progress:
        progress(0, rounds)
    with torch.inference_mode(), autocast(dev, precision):
        slow = False
        for k, m in enumerate((base, model)):
            t0 = time.perf_counter()
            m(x)
            synchronize(dev)
            per_run[k] = time.perf_counter() - t0
            slow = slow or per_run[k] > 0.1
            for _ in range(0 if slow else 2):
                m(x)
        synchronize(dev)
        for r in range(rounds):
            for k in ((0, 1) if r % 2 == 0 else (1, 0)):
                m = (base, model)[k]
                if slow:  # one timed run: a block of runs would run each model several times
                    if dev.type == "cuda":
                        times[k] += cuda_event_times(m, x, 1)
                        continue
                    t0 = time.perf_counter()
                    m(x)
                    synchronize(dev)
                    times[k].append(time.perf_counter() - t0)
                    continue
                times[k] += _timed_runs(m, x, min_run_time / rounds, per_run[k] if dev.type == "cuda" else None)
            if progress:
                progress(r + 1, rounds)

    end = time.time()  # both halves end together: the mark of one interleaved timing (timed_beside)

    def summary(ts: list[float]) -> Latency:
        q = torch.tensor(ts, dtype=torch.float64).quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        return Latency(median_ms=float(q[1]) * 1e3, iqr_ms=float(q[2] - q[0]) * 1e3, batch_size=batch_size,
                       threads=torch.get_num_threads(), device=str(dev), runs=len(ts), method=_method(dev),
                       precision=precision, interleaved=True, timed_at=end)

    return summary(times[0]), summary(times[1])


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


__all__ = ["Latency", "NOISY_SPREAD", "MIN_RUNS", "timed_beside", "speed_verdict", "measure_latency_pair",
           "arch_signature", "nonzero_counts",
           "nonzero_of", "nonzero_count", "note_nonzero", "count_macs", "state_dict_bytes", "measure_latency",
           "layer_macs"]
