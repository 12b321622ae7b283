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
- ``{"kind": "text", "path": P, "seq_len": T}``: a text file for a Hugging Face model;
- ``{"kind": "synthetic", "n": N}``: N seeded standard-normal inputs of the model's input
  shape (no labels).

Each kind is a frozen dataclass checked by its declared constraints
(``core/sources/describe.py``: :class:`DataSource`, read from its dict by :func:`data_source`,
which refuses unknown kinds and keys); the entry itself is a :class:`UserEntry`, checked
the same way. Both are stored as plain dicts.

The model comes from a factory, or by name from torchvision (``torchvision.models:get_model``)
or timm (``timm:create_model``) when those are installed (``prunescope[vision]``).

Without labels the model is judged by fidelity (agreement with and cosine to the base). Its
output is class scores ("logits"), or an embedding ("embedding": features, judged by output
cosine and nearest-neighbour recall@k against the base's): a Hugging Face encoder's pooled
output is one by default; a person's own model says so (``output="embedding"``, task fidelity).
Entries live in ``user_models.json`` in :func:`home` (``$PRUNESCOPE_HOME``, else the user's
data folder), written atomically; they are registered again on the next start (lazily: a
factory is imported when the model is first built).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

from core.errors import FOREIGN_ERRORS, ModelError, PrunescopeError, first_line
from core.ground.constraints import check_args
from core.sources.describe import (
    HF_FACTORY,
    ImagesSource,
    SyntheticSource,
    data_from_path,
    data_source,
    hf_default_task,
    resolve_source,
)
from core.sources.entry_checks import with_data, with_output_kind
from core.sources.readers import read_tensors
from core.sources.user_data import dataset_name, images_entry, load_data, register_data
from core.sources.user_entry import DATA_KINDS, INPUT_SHAPE, KWARGS, UserEntry, home, parse_shape

STORE_NAME = "user_models.json"


# --- the store -----------------------------------------------------------------

# factories of our own that moved: a store written before the move still opens
_MOVED_FACTORIES = {"core.hf:hf_model": HF_FACTORY}


def _store() -> Path:
    return home() / STORE_NAME


def _stored() -> list[dict]:
    """The stored entries as they are on disk (an unreadable store reads as none, with a warning).

    Entries that no longer check stay in the store (a later save keeps them): only
    :func:`list_user_models` leaves them out."""
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
        return raw["models"]
    except (OSError, ValueError) as exc:  # the file's fault (unreadable, not JSON, a wrong shape): said, not fatal
        import warnings

        warnings.warn(f"prunescope: {p} could not be read ({first_line(exc)}); no user models loaded")
        return []


def list_user_models() -> list[UserEntry]:
    """The stored entries that check (an unreadable store reads as none, an entry that does
    not check is left out; each with a warning)."""
    import warnings

    out = []
    for e in _stored():
        try:
            listed = {k: tuple(e[k]) for k in ("input_shape", "judged") if isinstance(e.get(k), list) and e[k]}
            out.append(UserEntry(**{**e, "input_shape": None, "judged": e.get("judged") or None, **listed,
                                    "factory": _MOVED_FACTORIES.get(e["factory"], e["factory"])}))
        except PrunescopeError as exc:  # one bad entry must not hide the others
            warnings.warn(f"prunescope: your model {e.get('name')!r} was not loaded: {first_line(exc)}")
    return out


def _save(entries: list[dict]) -> None:
    """Write the store: ``entries`` are stored dicts (``asdict`` of a :class:`UserEntry`)."""
    from core.ground.files import atomic_write_text

    p = _store()
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, json.dumps({"format": "prunescope.user_models/1", "models": entries}, indent=2))


def _extra(entry: UserEntry) -> dict:
    """The spec's extra: where it came from; a Hugging Face model's folder (its tokenizer
    turns token ids back into text for the views)."""
    extra = {"source": "user", **({"tokenizer": entry.kwargs["path"], "weights_in_folder": True}
                                  if entry.factory == HF_FACTORY else {})}
    return {**extra, **({"metric": entry.metric} if entry.metric else {}),
            **({"judged": list(entry.judged)} if entry.judged else {}),
            **({"score_threshold": entry.score_threshold} if entry.score_threshold is not None else {})}


def output_of(entry: UserEntry) -> str:
    """The entry's output kind: its own, else "embedding" for a Hugging Face model judged by
    fidelity that is not a causal LM (its pooled embedding), else "logits"."""
    if entry.output:
        return entry.output
    if entry.factory == HF_FACTORY and entry.task == "fidelity" and \
            hf_default_task(entry.kwargs.get("path", "")) != "language-model":
        return "embedding"
    return "logits"


def has_random_weights(spec) -> bool:
    """A person's model built with random weights (no weights file, none in its folder)."""
    return spec.extra.get("source") == "user" and not spec.weights and not spec.extra.get("weights_in_folder")


def _spec_of(entry: UserEntry, lazy: bool):
    from core.ground.registry import import_object
    from core.sources.models import ModelSpec, register_factory, register_model

    task = entry.task or "fidelity"  # register() resolves the task before this
    if lazy:  # at start: import the person's package only when the model is built
        def factory():
            return import_object(entry.factory)(**entry.kwargs)

        spec = ModelSpec(name=entry.name, factory=factory, input_shape=tuple(entry.input_shape),
                         dataset=dataset_name(entry), weights=entry.weights, task=task,
                         description=f"your model: {entry.source()}", extra=_extra(entry), output=output_of(entry))
        return register_model(spec, overwrite=True)
    spec = register_factory(entry.factory, weights=entry.weights, dataset=dataset_name(entry),
                            input_shape=tuple(entry.input_shape), name=entry.name, task=task,
                            kwargs=entry.kwargs or None, output=output_of(entry))
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


def register(name: str, *, factory: str | None = None, torchvision: str | None = None, timm: str | None = None,
             hf: str | None = None, kwargs: dict | None = None, weights: str | None = None, data: dict | None = None,
             input_shape: tuple[int, ...] | None = None, task: str | None = None, output: str | None = None,
             metric: str | None = None, judged: list[str] | tuple[str, ...] | None = None,
             score_threshold: float | None = None, save: bool = True):
    """Register a person's model (and data) under ``name``, check that it runs, and
    remember it (``save``). Registering a name again replaces that entry (a notebook cell
    run twice). Returns the spec.

    The model: ``factory`` (``package.module:function``), or ``torchvision`` / ``timm``
    (an architecture name; random weights unless ``weights``; the default input shape is
    the architecture's). ``kwargs`` go to the factory. ``data``: a description (see the
    module's docstring), or a path read by :func:`data_from_path`; None: 256 synthetic inputs.
    ``output``: "logits" (class scores) or "embedding" (features, task fidelity); None: an
    encoder folder's pooled output is an embedding, anything else logits (:func:`output_of`).
    ``score_threshold``: a detector's boxes scored below it are not detections (default 0.5).

    Raises:
        PrunescopeError: a bad name, factory, data description or task; the name of a
            bundled model; a factory that does not build a module; weights that do not fit;
            a model that does not take the data's inputs or does not return (N, K) outputs.
    """
    entry = _new_entry(name, factory, torchvision, timm, hf, kwargs, weights, data, input_shape, task, output)
    entry = dataclasses.replace(entry, metric=metric or None, judged=tuple(judged) if judged else None,
                                score_threshold=score_threshold)
    entry, loaded, n_classes = with_data(entry)
    from core.ground.outputs import class_count  # torch: not at import (the CLI's help stays light)

    # stored resolved: the JSON says what it is (label masks: a class map, checked once the model runs)
    entry = dataclasses.replace(entry, output={"segmentation": "dense", "detection": "detection"}.get(
        entry.task, output_of(entry)))
    from core.sources.models import MODELS

    old = MODELS.find(name)
    spec = _spec_of(entry, lazy=False)
    try:
        out = _run_once(spec, entry, loaded[0] if loaded is not None else None)
        entry, spec = with_output_kind(entry, spec, out, output, task)
    except BaseException:  # nothing half-registered, whatever failed; the failure goes on as it is
        _restore(name, old)
        raise
    if entry.task == "segmentation" and class_count(out, "dense") < n_classes:
        _restore(name, old)
        raise PrunescopeError(f"model {name!r} scores {class_count(out, 'dense')} classes per pixel but the masks "
                              f"hold {n_classes} (labels 0..{n_classes - 1}); give the factory the number of classes "
                              "(e.g. kwargs {\"num_classes\": K}) or choose task fidelity")
    if entry.task == "classification" and int(out.shape[1]) < n_classes:
        _restore(name, old)
        raise PrunescopeError(f"model {name!r} returns {int(out.shape[1])} scores per example but the data has "
                              f"{n_classes} classes; give the factory the number of classes (e.g. kwargs "
                              "{\"num_classes\": K}) or choose task fidelity")
    try:
        _check_judged_and_metric(entry, out, loaded)
    except BaseException:
        _restore(name, old)
        raise
    register_data(entry, name, class_count(out, entry.output), loaded)
    if save:
        _save([e for e in _stored() if e.get("name") != name] + [asdict(entry)])
    return spec


def _new_entry(name, factory, torchvision, timm, hf, kwargs, weights, data, input_shape, task,
               output=None) -> UserEntry:
    """The checked entry :func:`register` was asked for (paths resolved, a zip of images
    unpacked; synthetic data with the architecture's input shape when none is given).

    Raises:
        PrunescopeError: an argument or entry field its constraint refuses (the message
            names it, what is accepted and what it got); a bundled model's name; weights
            that do not load."""
    from core.sources.models import MODELS
    from core.sources.weights import load_state_dict_file

    check_args("register", {"kwargs": KWARGS}, kwargs=kwargs if kwargs is not None else {})
    if isinstance(data, (str, Path)):  # a path: its kind from what it is (data_from_path)
        data = data_from_path(str(data))
    src = data_source(data if data is not None else {"kind": "synthetic", "n": 256})
    if hf and not task:
        task = hf_default_task(hf)
    if output == "embedding" and not task:
        task = "fidelity"
    factory, kwargs, default_shape = resolve_source(factory, kwargs, torchvision, timm, hf, task,
                                                    getattr(src, "seq_len", None) if hf else None)
    if hasattr(src, "path"):  # a file or folder: stored as an absolute path
        src = dataclasses.replace(src, path=str(Path(src.path).expanduser().resolve()))
    if isinstance(input_shape, list):
        input_shape = tuple(input_shape)
    # synthetic inputs take the architecture's shape now; data with inputs gives its own (with_data)
    shape = input_shape or (default_shape if isinstance(src, SyntheticSource) else None)
    if isinstance(weights, (str, Path)) and str(weights):
        weights = str(Path(weights).resolve())
    entry = UserEntry(name, factory, kwargs, weights or None, src.to_dict(), shape, task, output)
    if name in MODELS.names() and MODELS.get(name).extra.get("source") != "user":
        raise PrunescopeError(f"{name!r} is a bundled model; choose another name")
    if entry.weights:
        load_state_dict_file(entry.weights)  # refuses pickles and missing files before anything is registered
    if isinstance(src, ImagesSource):
        entry = images_entry(entry, default_shape)
    return entry


def _check_judged_and_metric(entry: UserEntry, out, loaded) -> None:
    """Check the judged leaves the entry names (if any) against the output ``out``, and call
    the entry's own metric (if any) once on the two examples' outputs (against their labels, or
    the outputs themselves for fidelity): an import error or a bad return is said now.

    Raises:
        PrunescopeError: a judged leaf the output does not have; as
            :func:`core.sources.own_metric.own_figures` says."""
    from core.ground.outputs import NEST_KINDS, judgeable, judged_outputs, leaves

    if entry.score_threshold is not None and entry.output != "detection":
        raise PrunescopeError(f"a score threshold is for a detector's boxes; model {entry.name!r} returns "
                              f"{entry.output} outputs: leave it out")
    if entry.judged and entry.output == "detection":
        raise PrunescopeError(f"model {entry.name!r} is a detector: its boxes, labels and scores are judged together "
                              f"(judged {list(entry.judged)}); leave judged out")
    if entry.judged and entry.output not in NEST_KINDS:
        raise PrunescopeError(f"model {entry.name!r} returns one {entry.output} tensor: there are no output leaves to "
                              f"choose (judged {list(entry.judged)}); leave judged out")
    if entry.judged and not set(entry.judged) <= set(judgeable(leaves(out))):
        raise PrunescopeError(f"judged leaves {sorted(set(entry.judged) - set(judgeable(leaves(out))))} are not among "
                              f"this model's output leaves {judgeable(leaves(out))}")
    if entry.judged and entry.task == "segmentation" and not any(leaves(out)[k].dim() >= 3 for k in entry.judged):
        raise PrunescopeError(f"task segmentation reads a class map (N, C, H, W) among the judged leaves; "
                              f"{list(entry.judged)} holds none")
    if not entry.metric:
        return
    from core.sources.own_metric import load_metric, own_figures

    outs = judged_outputs(out, entry.output, entry.judged)
    y = loaded[1] if loaded is not None else None
    from core.sources.models import LABELLED_TASKS

    labelled = y is not None and entry.task in LABELLED_TASKS  # as Evaluator.own_figures calls it
    own_figures(load_metric(entry.metric), entry.metric, outs, y[:2] if labelled else outs)


def _run_once(spec, entry: UserEntry, x):
    """Build the registered model and run two examples (``x[:2]``, else zeros) through it.

    Raises:
        ModelError: its forward fails (chained), or it does not return (N, K) outputs.
    """
    import torch

    from core.sources.models import build_model

    model = build_model(spec)
    probe = x[:2] if x is not None else torch.zeros(2, *entry.input_shape, dtype=torch.long
                                                    if entry.factory == HF_FACTORY else torch.float32)
    try:
        with torch.inference_mode():
            out = model(probe)
    except FOREIGN_ERRORS as exc:  # the person's model's forward: its failure is theirs to see
        raise ModelError(f"model {entry.name!r} does not run on inputs of shape {entry.input_shape}: "
                         f"{type(exc).__name__}: {first_line(exc)}") from exc
    from core.ground.outputs import output_kind

    if output_kind(out, entry.input_shape) is None:
        raise ModelError(f"model {entry.name!r} returned {type(out).__name__} with no floating-point tensor that has "
                         "a batch dimension; prunescope judges (N, K) outputs (class scores, or features), dense maps "
                         "(N, C, H, W) and any tuple, list or dict of such tensors")
    return out


def unregister(name: str) -> None:
    """Forget a person's model (registry and store).

    Raises:
        PrunescopeError: not a user model.
    """
    from core.sources.bases import forget_base
    from core.sources.datasets import DATASETS, get_dataset
    from core.sources.models import MODELS

    entries = _stored()
    names = [str(e.get("name")) for e in entries]
    if name not in names:
        raise PrunescopeError(f"{name!r} is not one of your models; yours: {', '.join(names) or 'none'}")
    _save([e for e in entries if e.get("name") != name])
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
    for e in list_user_models():  # entries that check; the others were left out with a warning
        try:
            if e.input_shape is None:  # register() always stores one
                raise PrunescopeError(f"the stored entry needs entry.input_shape, {INPUT_SHAPE.describe()}")
            _spec_of(e, lazy=True)
            register_data(e, e.name, None)
            names.append(e.name)
        except PrunescopeError as exc:  # one bad entry must not hide the others; a bug is a bug
            warnings.warn(f"prunescope: your model {e.name!r} was not loaded: {first_line(exc)}")
    return names


__all__ = ["UserEntry", "DATA_KINDS", "data_source", "STORE_NAME", "has_random_weights", "output_of", "data_from_path",
           "load_data", "home", "parse_shape", "register", "unregister", "list_user_models", "load_user_models",
           "read_tensors"]
