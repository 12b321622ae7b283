"""Weight files from elsewhere, read as data: safetensors, or a state dict through
``torch.load(weights_only=True)``; full pickles and TorchScript archives only when the
process was started with ``--trust-pickles``."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    import torch

from core.errors import FOREIGN_ERRORS, FileError, first_line

TRUST_ENV = "PRUNESCOPE_TRUST_PICKLES"
# what torch.load raises for a file's reasons (damaged, foreign, a pickle it refuses)
_LOAD_ERRORS = (OSError, EOFError, pickle.UnpicklingError, *FOREIGN_ERRORS)


def trust_pickles() -> bool:
    """Whether this process was started with ``--trust-pickles`` (full pickles and
    TorchScript archives may then be loaded as weights)."""
    return os.environ.get(TRUST_ENV) == "1"


def _trusted_load(path: Path):
    """A TorchScript archive's or a pickled module's state dict (only with --trust-pickles)."""
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    except (RuntimeError, ValueError, OSError):  # not TorchScript: try a full pickle
        pass
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except (*_LOAD_ERRORS, ImportError) as exc:  # a trusted pickle runs its own code: its failure is the file's
        raise FileError(f"{path.name}: could not be loaded even as a trusted pickle ({type(exc).__name__}: "
                        f"{first_line(exc)})") from exc
    return obj.state_dict() if isinstance(obj, torch.nn.Module) else obj



def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)``.

    Raises:
        FileError: missing file or unsupported content.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise FileError(f"{path.name}: not a readable safetensors file ({first_line(exc)}); "
                            "accepted: .safetensors or a state dict saved with torch.save") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as exc:  # torch's reader on a file from elsewhere
        if not trust_pickles():
            raise FileError(
                f"{path.name}: not a weights-only torch file ({exc.__class__.__name__}): a full pickle or a "
                "TorchScript archive runs code from the file when loaded; accepted: .safetensors or a state dict "
                "saved with torch.save. To load it anyway, start prunescope with --trust-pickles (only for files "
                "you trust)") from exc
        obj = _trusted_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a training checkpoint's usual layout
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FileError(f"{path.name}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    return obj


def load_error_summary(exc: BaseException, limit: int = 400) -> str:
    """``load_state_dict``'s message without its "Error(s) in loading" line: the first
    missing / unexpected / mismatched key and its shapes, cut to ``limit`` characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    body = [ln for ln in lines if not ln.startswith("Error(s) in loading")] or lines
    text = " ".join(body)
    return text if len(text) <= limit else text[:limit] + " ..."



__all__ = ["TRUST_ENV", "trust_pickles", "load_state_dict_file", "load_error_summary"]
