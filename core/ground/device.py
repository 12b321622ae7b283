"""Device choice: cuda when present, else mps, else cpu; overridable. The evaluation
precision (fp32, or bf16 / fp16 autocast) and peak GPU memory of one operation."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from core.errors import PrunescopeError, echo


def available_devices() -> list[str]:
    """Devices this process can use, best first (e.g. ``["cuda", "cpu"]``)."""
    devs = []
    if torch.cuda.is_available():
        devs.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devs.append("mps")
    devs.append("cpu")
    return devs


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """Return the device to use.

    Args:
        requested: ``None`` or ``"auto"`` for the best available, else a device name
            such as ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.

    Raises:
        PrunescopeError: the requested device is not available here.
    """
    if requested is None or requested == "auto":
        return torch.device(available_devices()[0])
    if not isinstance(requested, (str, torch.device)):
        raise PrunescopeError(f"device must be 'auto' or a device name such as 'cpu' or 'cuda', "
                              f"got {echo(requested)}")
    try:
        dev = torch.device(requested)
    except (RuntimeError, ValueError):
        raise PrunescopeError(f"device must be 'auto' or a device name such as 'cpu', 'cuda', 'cuda:1' or "
                              f"'mps', got {echo(requested)}; available: {', '.join(available_devices())}") from None
    if dev.type not in available_devices():
        raise PrunescopeError(
            f"device {str(requested)!r} is not available; available: {', '.join(available_devices())}"
        )
    return dev


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on cpu); call before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no mps in CI
        torch.mps.synchronize()


PRECISIONS = ("fp32", "bf16", "fp16")  # evaluation precision: fp32, or the forward under autocast
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: object) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`.

    Raises:
        PrunescopeError: anything else, listing the accepted values.
    """
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise PrunescopeError(f"precision must be one of {', '.join(PRECISIONS)}, got {echo(precision)}")
    return precision


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """A context running forwards under ``precision``: nothing for "fp32", else
    ``torch.autocast`` of the device's type with bfloat16 or float16 (matrix products and
    convolutions in that type, reductions and softmax kept in fp32 by autocast's rules)."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dev = torch.device(device)
    return torch.autocast(device_type=dev.type, dtype=_DTYPES[precision])


_OPEN_PEAKS: list[dict] = []  # peak_memory blocks in progress, outermost first (one thread)


@contextlib.contextmanager
def peak_memory(device: torch.device | str) -> Iterator[dict]:
    """Measure the peak GPU memory of the block: yields a dict whose ``"bytes"`` is set on
    exit to the most memory allocated on ``device`` during the block, above what was
    allocated when it started (None off CUDA). Resets the device's peak statistics; blocks
    may nest (an inner block's reset does not hide the outer block's earlier peak).
    Not for two threads measuring at once: the peak statistics are process-wide."""
    dev = torch.device(device)
    out: dict = {"bytes": None}
    if dev.type != "cuda":
        yield out
        return
    synchronize(dev)
    now_peak = torch.cuda.max_memory_allocated(dev)
    for o in _OPEN_PEAKS:  # what the enclosing blocks saw before this reset
        o["max"] = max(o["max"], now_peak)
    start = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    rec = {"max": start}
    _OPEN_PEAKS.append(rec)
    try:
        yield out
    finally:
        synchronize(dev)
        now_peak = torch.cuda.max_memory_allocated(dev)
        _OPEN_PEAKS.remove(rec)
        for o in (rec, *_OPEN_PEAKS):
            o["max"] = max(o["max"], now_peak)
        out["bytes"] = int(rec["max"] - start)
