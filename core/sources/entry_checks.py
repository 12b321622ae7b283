"""The checks a person's model entry passes at registration: its data (input shape, labels and
the task they allow) and its output (the kind of output its forward returns, and the task that
kind can be judged by). ``entries.register`` runs them in that order."""
from __future__ import annotations

import dataclasses

from core.errors import ModelError, PrunescopeError
from core.sources.datasets import is_boxes, label_classes
from core.sources.describe import DatasetSource, SyntheticSource
from core.sources.user_data import load_data
from core.sources.user_entry import UserEntry


def with_data(entry: UserEntry):
    """``(entry with its input shape and task, what load_data read or None, classes in the data)``.

    Raises:
        PrunescopeError: the data's examples do not have the input shape given, or task
            classification asked for data without labels.
    """
    src = entry.data_source()
    loaded, labels, n_classes, masks, boxes = None, isinstance(src, DatasetSource), 0, False, False
    if not isinstance(src, (DatasetSource, SyntheticSource)):  # a file or folder of examples
        loaded = load_data(entry)
        x, y, classes = loaded
        boxes = is_boxes(y)
        labels, masks = y is not None, y is not None and y.dim() > 1 and not boxes
        n_classes = len(classes) if classes else label_classes(y) if masks else int(y.max()) + 1 if labels else 0
        shape = tuple(x.shape[1:])
        if entry.input_shape and entry.input_shape != shape:
            raise PrunescopeError(f"input shape {entry.input_shape} does not match the data's examples {shape}")
        entry = dataclasses.replace(entry, input_shape=shape)
    elif isinstance(src, DatasetSource):
        from core.sources.datasets import get_dataset

        shape = tuple(get_dataset(src.name).x_test.shape[1:])
        entry = dataclasses.replace(entry, input_shape=entry.input_shape or shape)
    # synthetic data: the input shape given or the architecture's, filled by _new_entry
    if entry.task == "classification" and not labels:
        raise PrunescopeError("task 'classification' needs labels; this data has none (use fidelity, or data "
                              "with labels: y in a tensors file, class folders, a CSV label column)")
    if entry.task == "segmentation" and not masks:
        raise PrunescopeError("task 'segmentation' needs label masks (y of shape N x H x W in a tensors file, or a "
                              "folder of images/ and masks/); this data has none (use fidelity)")
    if entry.task == "detection" and not boxes:
        raise PrunescopeError("task 'detection' needs labelled boxes (a folder or .zip of images/ and one COCO-style "
                              ".json); this data has none (use fidelity: the base detector's boxes)")
    if boxes and entry.task not in (None, "detection", "fidelity"):
        raise PrunescopeError(f"this data holds labelled boxes: task {entry.task!r} cannot read them; leave the task "
                              "out, or choose detection or fidelity")
    if masks and entry.task not in (None, "segmentation", "fidelity"):
        raise PrunescopeError(f"this data holds label masks (a class per pixel): task {entry.task!r} cannot read "
                              "them; leave the task out, or choose segmentation or fidelity")
    entry = dataclasses.replace(entry, task=entry.task or (
        "detection" if boxes else "segmentation" if masks else "classification" if labels else "fidelity"))
    return entry, loaded, n_classes


def with_output_kind(entry: UserEntry, spec, out, asked_output: str | None, asked_task: str | None):
    """``(entry, spec)`` with the output kind ``out`` (the model's output on two examples)
    calls for, when the person named none and it is not one (N, K) tensor: "dense" or "nest",
    judged against the base (task fidelity); the registry entry is replaced to match.

    Raises:
        ModelError: the person named an output kind or task this output cannot have.
    """
    from core.ground.outputs import output_kind
    from core.sources.models import MODELS

    kind = output_kind(out, entry.input_shape)
    if entry.task == "detection":  # labelled boxes: judged on a detector's boxes
        if kind != "detection":
            raise ModelError(f"model {entry.name!r} returns {shape_words(out)}; task detection needs a detector's "
                             "boxes (a list of dicts with boxes, labels and scores per image); choose task fidelity "
                             "for other outputs")
        entry, spec = dataclasses.replace(entry, output=kind), dataclasses.replace(spec, output=kind)
        MODELS.register(spec.name, spec, overwrite=True)
        return entry, spec
    if entry.task == "segmentation":  # label masks: judged on a class map
        if kind != "dense":
            raise ModelError(f"model {entry.name!r} returns {shape_words(out)}; task segmentation needs a class map "
                             "(N, C, H, W scores, alone or as the leaf 'out'); choose task fidelity for other outputs")
        entry = dataclasses.replace(entry, output=kind)
        spec = dataclasses.replace(spec, output=kind)
        MODELS.register(spec.name, spec, overwrite=True)
        return entry, spec
    if kind == "logits" or (asked_output in ("dense", "nest") and kind in ("dense", "nest")):
        return entry, spec
    if asked_output is not None or asked_task not in (None, "fidelity"):
        raise ModelError(f"model {entry.name!r} returns {shape_words(out)}: judged as output {kind!r} against the "
                         f"base model (task fidelity); you asked for output {asked_output!r}, task {asked_task!r}. "
                         "Leave both out, or give output='dense' / 'nest' with task 'fidelity'")
    entry = dataclasses.replace(entry, output=kind, task="fidelity")
    spec = dataclasses.replace(spec, output=kind, task="fidelity")
    MODELS.register(spec.name, spec, overwrite=True)
    return entry, spec


def shape_words(out) -> str:
    from core.ground.outputs import leaves

    named = leaves(out)
    return ", ".join(f"{k} {tuple(t.shape)}" for k, t in list(named.items())[:6]) + (" ..." if len(named) > 6 else "")


__all__ = ["with_data", "with_output_kind", "shape_words"]
