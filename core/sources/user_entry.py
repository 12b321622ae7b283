"""One model a person brings, as plain data (:class:`UserEntry`), checked by declared constraints.

``core/sources/entries.py`` registers and stores entries; ``core/sources/user_data.py``
reads the data an entry describes. :func:`home` is the one folder a person's entries,
uploads and sessions live under.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import PrunescopeError, StepError
from core.ground.constraints import Checked, Instance, Interval, Items, Maybe, Options, Pattern, Shape
from core.sources.describe import DATA_KINDS, HF_FACTORY, DataSource, SyntheticSource, TextSource, data_source
from core.sources.models import OUTPUTS

TASKS = ("classification", "fidelity", "language-model", "segmentation", "detection")
NAME = Pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "1 to 64 letters, digits, '_', '.' or '-' (starting with a "
               "letter or digit)", max_len=64, bad=("../x", "-x", "a b"))
FACTORY = Pattern(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", "an importable 'package.module:function'",
                  bad=("os.system", "nocolon", "a:b:c"))
KWARGS = Instance(dict, "a dict of the factory's keyword arguments (a JSON object of plain data)")
WEIGHTS = Pattern(r"[^\x00]+", "the path of a weights file (1 to 4096 characters)", max_len=4096, optional=True)
INPUT_SHAPE = Shape(1, 8, what="one example's shape", optional=True)
METRIC = Pattern(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", "an importable 'package.module:function' of (outputs, targets) "
                 "returning named numbers", bad=("os.system", "nocolon", "a:b:c"), optional=True)


def home() -> Path:
    """Where prunescope keeps a person's entries and uploads: ``$PRUNESCOPE_HOME``, else
    ``$XDG_DATA_HOME/prunescope``, else ``~/.local/share/prunescope``."""
    env = os.environ.get("PRUNESCOPE_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "prunescope"


@dataclass(frozen=True)
class UserEntry(Checked):
    """One model a person registered (plain data: it is stored as JSON), checked by its
    declared constraints when it is made (:meth:`check` ties the fields together).

    Raises (on construction):
        StepError: ``"entry.<field> must be <what is accepted>, got <value>"``, or a rule
            across fields; a bad data description as :func:`data_source` says.
    """

    constraints = {"name": NAME, "factory": FACTORY, "kwargs": KWARGS, "weights": WEIGHTS,
                   "data": Instance(dict, f"a data description, a dict whose kind is one of {', '.join(DATA_KINDS)}"),
                   "input_shape": INPUT_SHAPE, "task": Options(TASKS, optional=True),
                   "output": Options(OUTPUTS, optional=True), "metric": METRIC,
                   "judged": Maybe(Items(Pattern(r"[^\x00]{1,200}", "a leaf name"), min_items=1, max_items=64,
                                         unique=True)),
                   "score_threshold": Interval(0.0, 1.0, closed="right", optional=True)}
    name: str
    factory: str  # package.module:function
    kwargs: dict = field(default_factory=dict)  # keyword arguments of the factory (plain data)
    weights: str | None = None  # local weights file; None: random initialisation
    data: dict = field(default_factory=lambda: {"kind": "synthetic", "n": 256})  # stored form of a DataSource
    input_shape: tuple[int, ...] | None = None  # one example's shape (read from the data when it has inputs)
    task: str | None = None  # one of TASKS; None: classification when the data has labels
    # one of OUTPUTS: "logits" (class scores) or "embedding" (features: task fidelity, judged by cosine and
    # neighbour recall); None: a Hugging Face encoder's pooled output is an embedding, anything else logits
    output: str | None = None
    # a person's own metric: package.module:function(outputs, targets) -> {name: number} (own_metric.py)
    metric: str | None = None
    judged: tuple[str, ...] | None = None  # the output leaves judged ("dense" / "nest"); None: every float leaf
    # a detector's boxes scored below this are not detections (output "detection"); None: outputs.SCORE_THRESHOLD
    score_threshold: float | None = None

    def _owner(self) -> str:
        return "entry"

    def check(self) -> None:
        src = self.data_source()  # refuses an unknown kind, unknown keys and bad values
        if isinstance(src, SyntheticSource) and self.input_shape is None:
            raise StepError("synthetic data needs the model's input shape (entry.input_shape, e.g. 3,32,32)")
        if self.output == "embedding" and self.task not in (None, "fidelity"):
            raise StepError(f"entry.output 'embedding' needs task fidelity (features have no labels), got task "
                            f"{self.task!r}")
        if isinstance(src, TextSource) and self.factory != HF_FACTORY:
            raise StepError("text data needs a Hugging Face model (its tokenizer reads the text): register it with "
                            "hf=FOLDER (CLI: --hf DIR)")

    def data_source(self) -> DataSource:
        """The data description as its dataclass (:func:`data_source` of :attr:`data`)."""
        return data_source(self.data)

    def source(self) -> str:
        w = (f"weights {Path(self.weights).name}" if self.weights else "weights in the folder"
             if self.factory == HF_FACTORY else "random weights")
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items() if isinstance(v, (str, int, float, bool)))
        return f"{self.factory}({args[:60]}) · {w}"


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


__all__ = ["UserEntry", "DATA_KINDS", "TASKS", "KWARGS", "INPUT_SHAPE", "home", "parse_shape"]
