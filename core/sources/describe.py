"""Where a person's model and data come from, as plain descriptions (no model is built):
a factory, a torchvision / timm architecture by name, or a local Hugging Face folder;
the data, one frozen dataclass per kind (:class:`DataSource`) checked by its declared
constraints and read from its stored dict by :func:`data_source`; and the data
description of a file or folder by what it is."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from core.errors import FOREIGN_ERRORS, PrunescopeError, echo, first_line
from core.ground.constraints import Checked, Interval, Items, Maybe, Name, Pattern, Shape

HF_FACTORY = "core.sources.hf:hf_model"
DEFAULT_SEQ_LEN = 64

# --- data descriptions -----------------------------------------------------------

PATH = Pattern(r"[^\x00]+", "the path of a file or folder (1 to 4096 characters)", max_len=4096, bad=("a\x00b",))
_SEQ_LEN = Interval(1, 100_000, integer=True, optional=True)


@dataclass(frozen=True)
class DataSource(Checked):
    """Where a person's evaluation data comes from: one subclass per ``kind``. Stored as
    the dict :meth:`to_dict` gives (``{"kind": ..., field: value, ...}``, lists for
    tuples, no ``None`` values) and read back by :func:`data_source`."""

    kind: ClassVar[str] = ""

    def _owner(self) -> str:
        return "data"

    def to_dict(self) -> dict:
        """The stored form: plain data for JSON."""
        out: dict = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class DatasetSource(DataSource):
    """A registered dataset (the digits, a plug-in's)."""

    kind: ClassVar[str] = "dataset"
    constraints = {"name": Name(), "seq_len": _SEQ_LEN}
    name: str  # its registered name
    seq_len: int | None = None  # a Hugging Face model's tokens per example (its input shape)


@dataclass(frozen=True)
class TensorsSource(DataSource):
    """An ``.npz`` or ``.safetensors`` file holding ``x`` and optionally ``y`` (labels 0..K-1)."""

    kind: ClassVar[str] = "tensors"
    constraints = {"path": PATH}
    path: str  # the file


@dataclass(frozen=True)
class ImagesSource(DataSource):
    """A folder (or ``.zip`` of one) with one subfolder of images per class, resized and
    normalised as stated; what is left out is filled at registration from the input shape."""

    kind: ClassVar[str] = "images"
    constraints = {"path": PATH, "size": Shape(2, 2, what="height and width", example="224,224", optional=True),
                   "channels": Interval(1, 3, integer=True, optional=True),
                   "mean": Maybe(Items(Interval(None, None), min_items=1, max_items=3)),
                   "std": Maybe(Items(Interval(0, None, closed="right"), min_items=1, max_items=3))}
    path: str  # the folder or .zip
    size: tuple[int, int] | None = None  # (H, W) every image is resized to
    channels: int | None = None  # 1 (grey) or 3 (RGB)
    mean: tuple[float, ...] | None = None  # per channel (or one for all), subtracted from pixel / 255
    std: tuple[float, ...] | None = None  # per channel (or one for all), divided by; above 0


@dataclass(frozen=True)
class CsvSource(DataSource):
    """A CSV table of numbers, with an optional label column (none: fidelity)."""

    kind: ClassVar[str] = "csv"
    constraints = {"path": PATH, "label_column": Name(optional=True)}
    path: str  # the file
    label_column: str | None = None  # the column of labels (whole numbers 0..K-1, or names)


@dataclass(frozen=True)
class TextSource(DataSource):
    """A text file for a Hugging Face model: one example a line (``label<TAB>text`` for
    classification), or windows of ``seq_len + 1`` tokens for a language model."""

    kind: ClassVar[str] = "text"
    constraints = {"path": PATH, "seq_len": _SEQ_LEN, "classes": Maybe(Items(Name(), min_items=1))}
    path: str  # the file
    seq_len: int | None = None  # tokens per example (None: DEFAULT_SEQ_LEN)
    classes: tuple[str, ...] | None = None  # the model's class names, when labels are names


@dataclass(frozen=True)
class SyntheticSource(DataSource):
    """``n`` seeded random inputs of the model's input shape (no labels: fidelity):
    standard-normal numbers, or token ids uniform over a Hugging Face model's vocabulary."""

    kind: ClassVar[str] = "synthetic"
    constraints = {"n": Interval(8, 100_000, integer=True), "vocab": Interval(1, 10_000_000, integer=True,
                                                                             optional=True),
                   "seq_len": _SEQ_LEN}
    n: int  # number of examples
    vocab: int | None = None  # token ids in [0, vocab) (None: the model folder's vocab_size)
    seq_len: int | None = None  # a Hugging Face model's tokens per example (its input shape)


DATA_SOURCES: dict[str, type[DataSource]] = {c.kind: c for c in (
    DatasetSource, TensorsSource, ImagesSource, CsvSource, TextSource, SyntheticSource)}
DATA_KINDS = tuple(DATA_SOURCES)


def _keys(cls: type[DataSource]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _kinds_text() -> str:
    return "; ".join(f"{k}: {', '.join(_keys(c))}" for k, c in DATA_SOURCES.items())


def data_source(d: dict | DataSource) -> DataSource:
    """The data description ``d`` (a stored dict, ``{"kind": ..., ...}``) as its dataclass
    (lists become tuples; a missing key is None, which a required field refuses).

    Raises:
        StepError: a field its kind does not accept (``"data.n must be ..., got ..."``).
        PrunescopeError: not a dict, an unknown kind or unknown keys (what is accepted is listed).
    """
    if isinstance(d, DataSource):
        return d
    if not isinstance(d, dict):
        raise PrunescopeError(f"data must be a dict with a kind, one of {', '.join(DATA_KINDS)} ({_kinds_text()}), "
                              f"got {echo(d)}")
    kind = d.get("kind")
    cls = DATA_SOURCES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise PrunescopeError(f"data.kind must be one of {', '.join(DATA_KINDS)} ({_kinds_text()}), "
                              f"got {echo(kind)}")
    keys = _keys(cls)
    unknown = sorted(str(k) for k in d if k != "kind" and k not in keys)
    if unknown:
        raise PrunescopeError(f"{kind} data takes the keys {', '.join(keys)}; unknown: {echo(unknown)}")
    return cls(**{k: tuple(d[k]) if isinstance(d.get(k), list) else d.get(k) for k in keys})


# torchvision's video classifiers take (C, T, H, W) clips: 16 frames at the size their weights were trained at
_TV_VIDEO_SIDE = {"r3d_18": 112, "mc3_18": 112, "r2plus1d_18": 112}
# the tasks of torchvision's models that prunescope does not open yet, and why
_TV_REFUSED = {
    "quantization": "its quantized models are int8 already; open the float model (e.g. resnet18) and add "
                    "prunescope's quantize step after pruning",
}


def _torchvision_source(tv, name: str, kwargs: dict) -> tuple[str, dict, tuple[int, ...]]:
    """(factory, kwargs, default input shape) of torchvision model ``name`` of any task it opens:
    classification, segmentation (``{"out", "aux"}`` class maps), detection (boxes per image; a
    batch of images is taken as the list it iterates), video classification and optical flow (an
    example is a pair of images stacked, ``core.sources.flow``). Weights are never fetched:
    ``weights=None``, and ``weights_backbone=None`` for segmenters and detectors.

    Raises:
        PrunescopeError: a task not supported yet (says why), or a name torchvision does not have.
    """
    tasks = {"classification": tv.models, "segmentation": tv.models.segmentation, "detection": tv.models.detection,
             "video": tv.models.video, "optical_flow": tv.models.optical_flow}
    found = {t: tv.models.list_models(module=m) for t, m in tasks.items()}
    for task, why in _TV_REFUSED.items():
        if name in tv.models.list_models(module=getattr(tv.models, task)):
            raise PrunescopeError(f"torchvision's {name!r} (models.{task}): {why}. Opened are torchvision's "
                                  "classification, segmentation, detection, video and optical-flow models")
    base = {"name": name, "weights": None, **kwargs}
    if name in found["detection"]:  # its transform resizes each image to its own min_size (kwargs may say)
        return "torchvision.models:get_model", {**base, "weights_backbone": kwargs.get("weights_backbone")}, \
            (3, 320, 320)
    if name in found["segmentation"]:
        return "torchvision.models:get_model", {**base, "weights_backbone": kwargs.get("weights_backbone")}, \
            (3, 224, 224)
    if name in found["optical_flow"]:  # two images an example, stacked: core/sources/flow.py
        from core.sources.flow import FLOW_SIDE

        return "core.sources.flow:torchvision_flow", {"name": name, **kwargs}, (2, 3, FLOW_SIDE, FLOW_SIDE)
    if name in found["video"]:
        side = _TV_VIDEO_SIDE.get(name, 224)
        return "torchvision.models:get_model", base, (3, 16, side, side)
    if name in found["classification"]:
        side = 299 if name == "inception_v3" else 224
        return "torchvision.models:get_model", base, (3, side, side)
    listed = "; ".join(f"{t}: {', '.join(n[:4])} ... ({len(n)})" for t, n in found.items())
    raise PrunescopeError(f"torchvision has no model {name!r} that prunescope opens; {listed}")


def resolve_source(factory, kwargs, torchvision, timm, hf=None, task=None, seq_len=None):
    """(factory, kwargs, default input shape or None) for a factory or a model by name."""
    given = [k for k, v in (("factory", factory), ("torchvision", torchvision), ("timm", timm), ("hf", hf)) if v]
    if len(given) != 1:
        raise PrunescopeError("give exactly one of factory (package.module:function), torchvision or timm (an "
                              "architecture name), or hf (a local Hugging Face folder); "
                              f"got {', '.join(given) or 'none'}")
    kwargs = dict(kwargs or {})
    if factory:
        return factory, kwargs, None
    if hf:
        folder = Path(hf).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise PrunescopeError(f"{str(folder)!r} is not a Hugging Face model folder: accepted is a folder that "
                                  "save_pretrained wrote (config.json, model.safetensors, tokenizer files)")
        return HF_FACTORY, {"path": str(folder), **({"task": task} if task else {}), **kwargs}, \
            (int(seq_len or DEFAULT_SEQ_LEN),)
    if torchvision:
        try:
            import torchvision as tv
        except (ImportError, RuntimeError, AttributeError) as exc:  # missing, or built for another torch
            raise PrunescopeError(f"torchvision does not import here ({first_line(exc)}); install it with "
                                  "pip install 'prunescope[vision]'") from exc
        return _torchvision_source(tv, torchvision, kwargs)
    try:
        import timm as tm
    except (ImportError, RuntimeError, AttributeError) as exc:  # missing, or built for another torch
        raise PrunescopeError(f"timm does not import here ({first_line(exc)}); install it with "
                              "pip install 'prunescope[vision]'") from exc
    if not tm.list_models(timm):
        raise PrunescopeError(f"timm has no model {timm!r} (timm.list_models lists them)")
    shape = None
    try:
        cfg = tm.get_pretrained_cfg(timm)
        shape = tuple(int(v) for v in cfg.input_size) if cfg is not None else None
    except FOREIGN_ERRORS:  # timm's config lookup: the default shape is a convenience
        shape = None
    return "timm:create_model", {"model_name": timm, "pretrained": False, **kwargs}, shape or (3, 224, 224)


def hf_default_task(folder) -> str | None:
    """A Hugging Face folder's task by its config's architectures: a causal LM ->
    language-model; a sequence-classification head -> classification; an encoder without
    a head -> fidelity (its pooled embedding); unreadable -> None (the loader says why)."""
    try:
        archs = json.loads((Path(folder).expanduser() / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "language-model"
    if any(str(a).endswith("ForSequenceClassification") for a in archs):
        return "classification"
    return "fidelity"


def hf_vocab_size(folder) -> int:
    """The vocabulary size in a Hugging Face folder's config.json (read as data).

    Raises:
        PrunescopeError: no readable config with a whole-number vocab_size."""
    p = Path(folder) / "config.json"
    try:
        vocab = json.loads(p.read_text()).get("vocab_size")
    except (OSError, ValueError, AttributeError) as exc:
        raise PrunescopeError(f"{str(p)!r} could not be read ({first_line(exc)})") from exc
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise PrunescopeError(f"{str(p)!r} has no whole-number vocab_size (got {vocab!r}); random token ids need it")
    return vocab


def _tuple(v):
    """A list or tuple as a tuple (empty: None); anything else as it is, for its constraint to judge."""
    return (tuple(v) or None) if isinstance(v, (list, tuple)) else v


def data_from_path(path: str, *, label_column: str | None = None, size: tuple[int, int] | None = None,
                   mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                   seq_len: int | None = None) -> dict:
    """The data description (its stored dict) of a file or folder, by what it is: ``.npz`` /
    ``.safetensors`` -> tensors; ``.csv`` -> csv (``label_column``); ``.txt`` -> text for a
    Hugging Face model (one example a line, ``label<TAB>text`` for classification; ``seq_len``
    tokens); a folder or ``.zip`` -> images (``size``, ``mean``, ``std``; defaults from the
    model's input shape and ImageNet's statistics).

    Raises:
        PrunescopeError: a path of another kind (what is accepted is listed), or a value
            its kind does not accept (``data.size must be ...``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".npz", ".safetensors"):
        return TensorsSource(str(p)).to_dict()
    if suffix == ".csv":
        return CsvSource(str(p), label_column=label_column or None).to_dict()
    if suffix == ".txt":
        return TextSource(str(p), seq_len=seq_len or DEFAULT_SEQ_LEN).to_dict()
    if suffix == ".zip" or p.is_dir():
        return ImagesSource(str(p), size=_tuple(size), mean=_tuple(mean), std=_tuple(std)).to_dict()
    raise PrunescopeError(f"data {p.name!r}: accepted are an .npz or .safetensors file (x, y), a .csv table, a .txt "
                          "file (text, for a Hugging Face model), or a folder or .zip with one subfolder of images "
                          "per class")


__all__ = ["HF_FACTORY", "DEFAULT_SEQ_LEN", "DataSource", "DatasetSource", "TensorsSource", "ImagesSource", "CsvSource",
           "TextSource", "SyntheticSource", "DATA_SOURCES", "DATA_KINDS", "data_source", "resolve_source",
           "hf_default_task", "hf_vocab_size", "data_from_path"]
