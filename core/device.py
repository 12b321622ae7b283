"""Device choice: cuda when present, else mps, else cpu; overridable."""
from __future__ import annotations

import torch

from .errors import PrunescopeError, echo


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
