"""Models and data a person brings, remembered across restarts.

An entry names an importable factory (``package.module:function``, code from the person's
own environment, never from an upload) with keyword arguments (plain data), optional
weights (a local safetensors file, or a state dict read with ``weights_only=True``; without
them the weights are random, and every listing says so), and evaluation data:

- ``{"kind": "dataset", "name": D}``: a registered dataset (the digits, a plugin's);
- ``{"kind": "tensors", "path": P}``: an ``.npz`` or ``.safetensors`` file holding ``x`` and
  optionally ``y`` (integer labels 0..K-1), split 75/25 with a fixed seed;
- ``{"kind": "images", "path": P, "size": [H, W], "channels": C, "mean": [...], "std": [...]}``:
  a folder with one subfolder of images per class (a ``.zip`` of one is unpacked safely
  into the entry's upload folder at registration), resized and normalised as stated;
- ``{"kind": "csv", "path": P, "label_column": C}``: a table of numbers (no label column:
  fidelity);
- ``{"kind": "synthetic", "n": N}``: N seeded standard-normal inputs of the model's input
  shape (no labels).

The model comes from a factory, or by name from torchvision (``torchvision.models:get_model``)
or timm (``timm:create_model``) when those are installed (``prunescope[vision]``).

Without labels the model is judged by fidelity (agreement with and cosine to the base).
Entries live in ``user_models.json`` in :func:`home` (``$PRUNESCOPE_HOME``, else the user's
data folder), written atomically; they are registered again on the next start (lazily: a
factory is imported when the model is first built).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.errors import FOREIGN_ERRORS, ModelError, PrunescopeError, echo, first_line
from core.sources.readers import read_tensors
from core.sources.describe import DEFAULT_SEQ_LEN, HF_FACTORY, data_from_path, hf_default_task as _hf_default_task, hf_vocab_size, resolve_source as _resolve_source

STORE_NAME = "user_models.json"
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


def _check_entry(e: UserEntry) -> None:
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


# --- data --------------------------------------------------------------------

def _splits(name: str, x, y, classes: list[str], kind: str):
    """A fixed, seeded 75/25 split (stratified when there are labels)."""
    import torch

    from core.sources.datasets import DataSplits

    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    if y is not None:  # stratified: each class split 75/25 on its own
        test = torch.cat([perm[y[perm] == c][: max(1, round(0.25 * int((y == c).sum())))]
                          for c in range(len(classes))])
    else:
        test = perm[: max(1, round(0.25 * len(x)))]
    mask = torch.ones(len(x), dtype=torch.bool)
    mask[test] = False
    yy = y if y is not None else torch.zeros(len(x), dtype=torch.long)
    return DataSplits(name, x[mask], yy[mask], x[~mask], yy[~mask], classes, kind=kind,
                      description="a person's data" + ("" if y is not None else " (no labels: fidelity)"))


def _dataset_name(entry: UserEntry) -> str:
    return entry.data["name"] if entry.data["kind"] == "dataset" else f"user:{entry.name}"


def load_data(entry: UserEntry):
    """``(x, y or None, class names or None)`` of an entry's own data (not a registered
    dataset).

    Raises:
        FileError: the file or folder does not read (the reader says why)."""
    import torch

    from core.sources.readers import IMAGENET_MEAN, IMAGENET_STD, read_csv, read_image_folder

    d, kind = entry.data, entry.data["kind"]
    if kind == "tensors":
        x, y = read_tensors(d["path"])
        return x, y, None
    if kind == "images":
        return read_image_folder(d["path"], tuple(d["size"]), int(d.get("channels", 3)),
                                 tuple(d.get("mean", IMAGENET_MEAN)), tuple(d.get("std", IMAGENET_STD)))
    if kind == "csv":
        return read_csv(d["path"], d.get("label_column") or None)
    if kind == "text":
        from core.sources.hf import read_text

        t = read_text(d["path"], entry.kwargs["path"], seq_len=int(d.get("seq_len", DEFAULT_SEQ_LEN)),
                      task=entry.task, classes=d.get("classes"))
        return t.x, t.y, t.classes or None
    g = torch.Generator().manual_seed(0)
    if entry.factory == HF_FACTORY:  # token ids, uniform over the vocabulary
        vocab = int(d.get("vocab") or hf_vocab_size(entry.kwargs["path"]))
        return torch.randint(0, vocab, (d["n"], *entry.input_shape), generator=g), None, None
    return torch.randn(d["n"], *entry.input_shape, generator=g), None, None


def _register_data(entry: UserEntry, spec_name: str, outputs: int | None, loaded=None) -> None:
    """Register the entry's data as a dataset (lazily loaded; ``loaded`` is what
    :func:`load_data` already returned at registration)."""
    from core.sources.datasets import register_dataset

    if entry.data["kind"] == "dataset":
        return
    name = _dataset_name(entry)

    def load():
        x, y, classes = loaded if loaded is not None else load_data(entry)
        if classes is None:
            k = int(y.max()) + 1 if y is not None else (outputs or _outputs(spec_name))
            classes = [str(i) for i in range(k)]
        kind = "text" if not x.is_floating_point() else "image" if x.dim() == 4 else "tabular"
        return _splits(name, x, y, classes, kind)

    register_dataset(name)(load)


def _outputs(name: str) -> int:
    import torch

    from core.sources.models import build_model, get_spec

    spec = get_spec(name)
    with torch.inference_mode():
        return int(build_model(spec, load_weights=False)(torch.zeros(1, *spec.input_shape)).shape[1])


# --- the store -----------------------------------------------------------------

# factories of our own that moved: a store written before the move still opens
_MOVED_FACTORIES = {"core.hf:hf_model": HF_FACTORY}


def _store() -> Path:
    return home() / STORE_NAME


def list_user_models() -> list[UserEntry]:
    """The stored entries (an unreadable store reads as none, with a warning)."""
    p = _store()
    if not p.exists():
        return []
    try:
        raw = json.loads(p.read_bytes().decode("utf-8"))
        fields = {f.name for f in dataclasses.fields(UserEntry)}
        if not isinstance(raw, dict) or not isinstance(raw.get("models"), list) or not all(
                isinstance(e, dict) and {"name", "factory"} <= set(e) <= fields
                and isinstance(e.get("input_shape") or [], list) for e in raw["models"]):
            raise PrunescopeError(f"expected {{'models': [entries with the fields {sorted(fields)}]}}")
        return [UserEntry(**{**e, "input_shape": tuple(e["input_shape"]) if e.get("input_shape") else None,
                             "factory": _MOVED_FACTORIES.get(e["factory"], e["factory"])})
                for e in raw["models"]]
    except (OSError, ValueError) as exc:  # the file's fault (unreadable, not JSON, a wrong shape): said, not fatal
        import warnings

        warnings.warn(f"prunescope: {p} could not be read ({first_line(exc)}); no user models loaded")
        return []


def _save(entries: list[UserEntry]) -> None:
    from core.ground.files import atomic_write_text

    p = _store()
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, json.dumps({"format": "prunescope.user_models/1",
                                     "models": [asdict(e) for e in entries]}, indent=2))


def _extra(entry: UserEntry) -> dict:
    """The spec's extra: where it came from; a Hugging Face model's folder (its tokenizer
    turns token ids back into text for the views)."""
    return {"source": "user", **({"tokenizer": entry.kwargs["path"], "weights_in_folder": True}
                                 if entry.factory == HF_FACTORY else {})}


def has_random_weights(spec) -> bool:
    """A person's model built with random weights (no weights file, none in its folder)."""
    return spec.extra.get("source") == "user" and not spec.weights and not spec.extra.get("weights_in_folder")


def _spec_of(entry: UserEntry, lazy: bool):
    from core.sources.models import ModelSpec, register_factory
    from core.ground.registry import import_object

    task = entry.task or "fidelity"  # register() resolves the task before this
    if lazy:  # at start: import the person's package only when the model is built
        def factory():
            return import_object(entry.factory)(**entry.kwargs)

        spec = ModelSpec(name=entry.name, factory=factory, input_shape=tuple(entry.input_shape), dataset=_dataset_name(entry),
                         weights=entry.weights, task=task, description=f"your model: {entry.source()}",
                         extra=_extra(entry))
        from core.sources.models import register_model

        return register_model(spec, overwrite=True)
    spec = register_factory(entry.factory, weights=entry.weights, dataset=_dataset_name(entry),
                            input_shape=tuple(entry.input_shape), name=entry.name, task=task,
                            kwargs=entry.kwargs or None)
    from core.sources.models import register_model

    spec = dataclasses.replace(spec, description=f"your model: {entry.source()}", extra=_extra(entry))
    return register_model(spec, overwrite=True)


def _restore(name: str, old) -> None:
    from core.sources.bases import forget_base
    from core.sources.models import MODELS

    if old is not None:
        MODELS.register(name, old, overwrite=True)
    elif name in MODELS.names():
        MODELS.unregister(name)
    forget_base(name)


def _images_entry(entry: UserEntry, default_shape) -> UserEntry:
    """Fill an image folder's size/channels from the input shape (given, the model's
    default, else 3x224x224), and unpack a zip into the entry's upload folder."""
    from core.sources.readers import default_normalisation, safe_unzip

    d = dict(entry.data)
    shape = entry.input_shape or default_shape
    if "size" not in d:
        d["size"] = list(shape[-2:]) if shape and len(shape) == 3 else [224, 224]
    if "channels" not in d:
        d["channels"] = shape[0] if shape and len(shape) == 3 and shape[0] in (1, 3) else 3
    mean, std = default_normalisation(d["channels"])
    d.setdefault("mean", list(mean))
    d.setdefault("std", list(std))
    if Path(d["path"]).suffix.lower() == ".zip":
        d["path"] = str(safe_unzip(d["path"], home() / "uploads" / entry.name / "images"))
    return dataclasses.replace(entry, data=d)


def register(name: str, *, factory: str | None = None, torchvision: str | None = None, timm: str | None = None,
             hf: str | None = None, kwargs: dict | None = None, weights: str | None = None, data: dict | None = None,
             input_shape: tuple[int, ...] | None = None, task: str | None = None, save: bool = True):
    """Register a person's model (and data) under ``name``, check that it runs, and
    remember it (``save``). Registering a name again replaces that entry (a notebook cell
    run twice). Returns the spec.

    The model: ``factory`` (``package.module:function``), or ``torchvision`` / ``timm``
    (an architecture name; random weights unless ``weights``; the default input shape is
    the architecture's). ``kwargs`` go to the factory. ``data``: a description (see the
    module's docstring), or a path read by :func:`data_from_path`; None: 256 synthetic inputs.

    Raises:
        PrunescopeError: a bad name, factory, data description or task; the name of a
            bundled model; a factory that does not build a module; weights that do not fit;
            a model that does not take the data's inputs or does not return (N, K) outputs.
    """
    import torch

    from core.sources.models import MODELS, build_model
    from core.sources.weights import load_state_dict_file

    if isinstance(data, (str, Path)):  # a path: its kind from what it is (data_from_path)
        data = data_from_path(str(data))
    data = dict(data or {"kind": "synthetic", "n": 256})
    if hf and not task:
        task = _hf_default_task(hf)
    factory, kwargs, default_shape = _resolve_source(factory, kwargs, torchvision, timm, hf, task,
                                                     data.get("seq_len") if hf else None)
    entry = UserEntry(name, factory, dict(kwargs or {}), str(Path(weights).resolve()) if weights else None,
                      data, tuple(input_shape) if input_shape else None, task)
    _check_entry(dataclasses.replace(entry, input_shape=entry.input_shape or default_shape))
    if data["kind"] in ("tensors", "images", "csv", "text"):
        data["path"] = str(Path(data["path"]).expanduser().resolve())
    if name in MODELS.names() and MODELS.get(name).extra.get("source") != "user":
        raise PrunescopeError(f"{name!r} is a bundled model; choose another name")
    if entry.weights:
        load_state_dict_file(entry.weights)  # refuses pickles and missing files before anything is registered
    if data["kind"] == "images":
        entry = _images_entry(entry, default_shape)
    loaded, labels, n_classes = None, data["kind"] == "dataset", 0
    if data["kind"] in ("tensors", "images", "csv", "text"):
        loaded = load_data(entry)
        x, y, classes = loaded
        labels = y is not None
        n_classes = len(classes) if classes else int(y.max()) + 1 if labels else 0
        shape = tuple(x.shape[1:])
        if entry.input_shape and entry.input_shape != shape:
            raise PrunescopeError(f"input shape {entry.input_shape} does not match the data's examples {shape}")
        entry = dataclasses.replace(entry, input_shape=shape)
    elif data["kind"] == "dataset":
        from core.sources.datasets import get_dataset

        shape = tuple(get_dataset(data["name"]).x_test.shape[1:])
        entry = dataclasses.replace(entry, input_shape=entry.input_shape or shape)
    else:
        entry = dataclasses.replace(entry, input_shape=entry.input_shape or default_shape)
    x = loaded[0] if loaded is not None else None
    if entry.task == "classification" and not labels:
        raise PrunescopeError("task 'classification' needs labels; this data has none (use fidelity, or data "
                              "with labels: y in a tensors file, class folders, a CSV label column)")
    entry = dataclasses.replace(entry, task=entry.task or ("classification" if labels else "fidelity"))
    old = MODELS._items.get(name)
    spec = _spec_of(entry, lazy=False)
    try:
        model = build_model(spec)
        probe = x[:2] if x is not None else torch.zeros(2, *entry.input_shape, dtype=torch.long
                                                        if factory == HF_FACTORY else torch.float32)
        try:
            with torch.inference_mode():
                out = model(probe)
        except FOREIGN_ERRORS as exc:  # the person's model's forward: its failure is theirs to see
            raise ModelError(f"model {name!r} does not run on inputs of shape {entry.input_shape}: "
                             f"{type(exc).__name__}: {first_line(exc)}") from exc
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise ModelError(f"model {name!r} returned {type(out).__name__}"
                             f"{' of shape ' + str(tuple(out.shape)) if isinstance(out, torch.Tensor) else ''}; "
                             "prunescope needs (N, K) outputs (class scores, or any K features for fidelity)")
    except BaseException:  # nothing half-registered, whatever failed; the failure goes on as it is
        _restore(name, old)
        raise
    if entry.task == "classification" and int(out.shape[1]) < n_classes:
        _restore(name, old)
        raise PrunescopeError(f"model {name!r} returns {int(out.shape[1])} scores per example but the data has "
                              f"{n_classes} classes; give the factory the number of classes (e.g. kwargs "
                              "{\"num_classes\": K}) or choose task fidelity")
    _register_data(entry, name, int(out.shape[1]), loaded)
    if save:
        _save([e for e in list_user_models() if e.name != name] + [entry])
    return spec


def unregister(name: str) -> None:
    """Forget a person's model (registry and store).

    Raises:
        PrunescopeError: not a user model.
    """
    from core.sources.datasets import DATASETS, get_dataset
    from core.sources.bases import forget_base
    from core.sources.models import MODELS

    entries = list_user_models()
    if name not in {e.name for e in entries}:
        raise PrunescopeError(f"{name!r} is not one of your models; yours: "
                              f"{', '.join(e.name for e in entries) or 'none'}")
    _save([e for e in entries if e.name != name])
    if name in MODELS.names():
        MODELS.unregister(name)
    if f"user:{name}" in DATASETS.names():
        DATASETS.unregister(f"user:{name}")
        get_dataset.cache_clear()
    forget_base(name)


def load_user_models() -> list[str]:
    """Register every stored entry (lazily; an entry that fails is skipped with a warning).
    Returns the names registered."""
    import warnings

    names = []
    for e in list_user_models():
        try:
            _check_entry(e)
            if not (isinstance(e.input_shape, tuple) and e.input_shape and isinstance(e.kwargs, dict)
                    and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in e.input_shape)):
                raise PrunescopeError(f"the stored entry needs an input shape of positive whole numbers and "
                                      f"kwargs as an object, got {echo(e.input_shape)} and {echo(e.kwargs)}")
            _spec_of(e, lazy=True)
            _register_data(e, e.name, None)
            names.append(e.name)
        except PrunescopeError as exc:  # one bad entry must not hide the others; a bug is a bug
            warnings.warn(f"prunescope: your model {e.name!r} was not loaded: {first_line(exc)}")
    return names


__all__ = ["UserEntry", "DATA_KINDS", "has_random_weights", "data_from_path", "load_data", "home", "parse_shape", "register", "unregister", "list_user_models", "load_user_models", "read_tensors"]
