"""One model a person brings, as plain data (:class:`UserEntry`), and its checks.

``core/sources/entries.py`` registers and stores entries; ``core/sources/user_data.py``
reads the data an entry describes. :func:`home` is the one folder a person's entries,
uploads and sessions live under.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import PrunescopeError, echo
from core.sources.describe import HF_FACTORY

DATA_KINDS = ("dataset", "tensors", "images", "csv", "text", "synthetic")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def home() -> Path:
    """Where prunescope keeps a person's entries and uploads: ``$PRUNESCOPE_HOME``, else
    ``$XDG_DATA_HOME/prunescope``, else ``~/.local/share/prunescope``."""
    env = os.environ.get("PRUNESCOPE_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "prunescope"


@dataclass(frozen=True)
class UserEntry:
    """One model a person registered (plain data: it is stored as JSON)."""

    name: str
    factory: str  # package.module:function
    kwargs: dict = field(default_factory=dict)  # keyword arguments of the factory (plain data)
    weights: str | None = None  # local weights file; None: random initialisation
    data: dict = field(default_factory=lambda: {"kind": "synthetic", "n": 256})
    input_shape: tuple[int, ...] | None = None  # one example's shape (read from the data when it has inputs)
    task: str | None = None  # "classification" | "fidelity"; None: classification when the data has labels

    def source(self) -> str:
        w = (f"weights {Path(self.weights).name}" if self.weights else "weights in the folder"
             if self.factory == HF_FACTORY else "random weights")
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items() if isinstance(v, (str, int, float, bool)))
        return f"{self.factory}({args[:60]}) · {w}"


def check_entry(e: UserEntry) -> None:
    """Check an entry's fields: its name, factory, data description and task.

    Raises:
        PrunescopeError: the first field that is wrong, saying what is accepted and what it got.
    """
    if not isinstance(e.name, str) or not _NAME.match(e.name):
        raise PrunescopeError(f"model name must be 1 to 64 letters, digits, '_', '.' or '-' (starting with a letter "
                              f"or digit), got {echo(e.name)}")
    if not isinstance(e.factory, str) or not _FACTORY.match(e.factory):
        raise PrunescopeError(f"factory must be an importable 'package.module:function', got {echo(e.factory)}")
    kind = e.data.get("kind") if isinstance(e.data, dict) else None
    if kind not in DATA_KINDS:
        raise PrunescopeError(f"data must be a dict whose kind is one of {', '.join(DATA_KINDS)} (dataset: name; "
                              "tensors, images, csv: path; synthetic: n), got " + echo(e.data))
    if kind in ("tensors", "images", "csv", "text") and not (isinstance(e.data.get("path"), str) and e.data["path"]):
        raise PrunescopeError(f"{kind} data needs the path of its file or folder, got {echo(e.data.get('path'))}")
    if kind == "synthetic":
        n = e.data.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or not 8 <= n <= 100_000:
            raise PrunescopeError(f"synthetic data needs n, a whole number of examples in [8, 100000], got {echo(n)}")
        if e.input_shape is None:
            raise PrunescopeError("synthetic data needs the model's input shape (e.g. 3,32,32)")
    if e.task not in (None, "classification", "fidelity", "language-model"):
        raise PrunescopeError(f"task must be classification, fidelity or language-model, got {echo(e.task)}")
    if kind == "text" and e.factory != HF_FACTORY:
        raise PrunescopeError("text data needs a Hugging Face model (its tokenizer reads the text): register it with "
                              "hf=FOLDER (CLI: --hf DIR)")


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3,32,32"`` -> (3, 32, 32); empty -> None.

    Raises:
        PrunescopeError: anything but positive whole numbers separated by commas.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        shape = tuple(int(t) for t in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise PrunescopeError(f"input shape must be positive whole numbers separated by commas (e.g. 3,32,32), "
                              f"got {text!r}")
    return shape


__all__ = ["UserEntry", "DATA_KINDS", "home", "check_entry", "parse_shape"]
