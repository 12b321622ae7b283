"""A person's data: read the file or folder an entry describes, split it, register it.

The kinds of data are the :class:`~core.sources.describe.DataSource` classes of
``core/sources/describe.py``; readers of each file format are in ``core/sources/readers.py``.
The split is a fixed, seeded 75/25, stratified by label when there are labels.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from core.errors import PrunescopeError
from core.sources.boxes import box_layout, read_box_folder
from core.sources.datasets import label_classes, strata
from core.sources.describe import (
    DEFAULT_SEQ_LEN,
    HF_FACTORY,
    CsvSource,
    DatasetSource,
    ImagesSource,
    TensorsSource,
    TextSource,
    hf_vocab_size,
)
from core.sources.frames import PAIR_MEAN, PAIR_STD, is_pair_shape, read_frame_pairs
from core.sources.masks import mask_layout, read_mask_folder
from core.sources.readers import read_tensors
from core.sources.user_entry import UserEntry, home


def _splits(name: str, x, y, classes: list[str], kind: str):
    """A fixed, seeded 75/25 split (stratified when there are labels)."""
    import torch

    from core.sources.datasets import DataSplits

    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    if y is not None:  # stratified: each class (of a mask: its most frequent class) split 75/25 on its own
        s = strata(y) if y.dim() > 1 else y
        test = torch.cat([perm[s[perm] == c][: max(1, round(0.25 * int((s == c).sum())))]
                          for c in range(len(classes))])
    else:
        test = perm[: max(1, round(0.25 * len(x)))]
    mask = torch.ones(len(x), dtype=torch.bool)
    mask[test] = False
    yy = y if y is not None else torch.zeros(len(x), dtype=torch.long)
    return DataSplits(name, x[mask], yy[mask], x[~mask], yy[~mask], classes, kind=kind,
                      description="a person's data" + ("" if y is not None else " (no labels: fidelity)"))


def dataset_name(entry: UserEntry) -> str:
    """The dataset an entry's model is evaluated on: the registered one it names, else
    ``user:<name>`` (its own data, registered by :func:`register_data`)."""
    src = entry.data_source()
    return src.name if isinstance(src, DatasetSource) else f"user:{entry.name}"


def load_data(entry: UserEntry):
    """``(x, y or None, class names or None)`` of an entry's own data (not a registered
    dataset).

    Raises:
        FileError: the file or folder does not read (the reader says why).
        PrunescopeError: image data without its size (:func:`images_entry` fills it)."""
    import torch

    from core.sources.readers import default_normalisation, read_csv, read_image_folder

    src = entry.data_source()
    if isinstance(src, TensorsSource):
        x, y = read_tensors(src.path)
        return x, y, None
    if isinstance(src, ImagesSource):
        if src.size is None:
            raise PrunescopeError(f"data.size must be given for images (height and width, e.g. 224,224) in "
                                  f"{entry.name!r}; register it again")
        channels = src.channels or 3
        mean, std = default_normalisation(channels)
        if is_pair_shape(entry.input_shape):  # an optical-flow model: consecutive frames as its pairs
            pairs = read_frame_pairs(src.path, src.size, channels, src.mean or PAIR_MEAN, src.std or PAIR_STD)
            return pairs, None, None
        if box_layout(src.path) is not None:  # images/ and a COCO-style JSON: labelled boxes (detection)
            return read_box_folder(src.path, src.size, channels, src.mean or mean, src.std or std)
        if mask_layout(src.path) is not None:  # images/ and masks/: a label per pixel (segmentation)
            return (*read_mask_folder(src.path, src.size, channels, src.mean or mean, src.std or std), None)
        return read_image_folder(src.path, src.size, channels, src.mean or mean, src.std or std)
    if isinstance(src, CsvSource):
        return read_csv(src.path, src.label_column)
    if isinstance(src, TextSource):
        from core.sources.hf import read_text

        t = read_text(src.path, entry.kwargs["path"], seq_len=src.seq_len or DEFAULT_SEQ_LEN, task=entry.task,
                      classes=list(src.classes) if src.classes else None)
        return t.x, t.y, t.classes or None
    assert not isinstance(src, DatasetSource), "a registered dataset is not read here"
    g = torch.Generator().manual_seed(0)  # synthetic: seeded random inputs of the input shape
    if entry.factory == HF_FACTORY:  # token ids, uniform over the vocabulary
        vocab = src.vocab or hf_vocab_size(entry.kwargs["path"])
        return torch.randint(0, vocab, (src.n, *entry.input_shape), generator=g), None, None
    return torch.randn(src.n, *entry.input_shape, generator=g), None, None


def register_data(entry: UserEntry, spec_name: str, outputs: int | None, loaded=None) -> None:
    """Register the entry's own data as a dataset (lazily loaded: ``loaded`` is what
    :func:`load_data` already returned at registration, else the data is read on first
    use); nothing for an entry naming a registered dataset. ``outputs``: the model's
    output count, the classes of data without labels (None: built to find out)."""
    from core.sources.datasets import register_dataset

    if isinstance(entry.data_source(), DatasetSource):
        return
    name = dataset_name(entry)

    def load():
        x, y, classes = loaded if loaded is not None else load_data(entry)
        if classes is None:
            k = (label_classes(y) if y.dim() > 1 else int(y.max()) + 1) if y is not None else (
                outputs or _outputs(spec_name))
            classes = [str(i) for i in range(k)]
        kind = "text" if not x.is_floating_point() else "image" if x.dim() == 4 else "tabular"
        return _splits(name, x, y, classes, kind)

    register_dataset(name)(load)


def _outputs(name: str) -> int:
    import torch

    from core.sources.models import build_model, get_spec

    spec = get_spec(name)
    from core.ground.outputs import class_count

    with torch.inference_mode():
        out = build_model(spec, load_weights=False)(torch.zeros(1, *spec.input_shape))
    return class_count(out, spec.output if spec.output in ("dense", "nest") else "logits")


def images_entry(entry: UserEntry, default_shape: tuple[int, ...] | None) -> UserEntry:
    """The entry with its image folder's size and channels filled from the input shape
    (given, the model's default, else 3x224x224) and its normalisation defaulted; a zip
    is unpacked (side effect) into the entry's upload folder under :func:`home`.

    Raises:
        FileError: the zip does not unpack safely (``safe_unzip`` says why).
    """
    from core.sources.readers import default_normalisation, safe_unzip

    src = entry.data_source()
    assert isinstance(src, ImagesSource), src
    shape = entry.input_shape or default_shape
    pairs = is_pair_shape(shape)  # an optical-flow model's (2, C, H, W): frames read as pairs
    size = src.size or (tuple(shape[-2:]) if shape and (len(shape) == 3 or pairs) else (224, 224))
    channels = src.channels or (shape[-3] if shape and (len(shape) == 3 or pairs) and shape[-3] in (1, 3) else 3)
    mean, std = (PAIR_MEAN, PAIR_STD) if pairs else default_normalisation(channels)
    path = src.path
    if Path(path).suffix.lower() == ".zip":
        path = str(safe_unzip(path, home() / "uploads" / entry.name / "images"))
    src = dataclasses.replace(src, path=path, size=size, channels=channels, mean=src.mean or mean, std=src.std or std)
    if pairs:  # the loader reads the frames as pairs by this shape (the model's default, when none was given)
        entry = dataclasses.replace(entry, input_shape=tuple(int(v) for v in shape))
    return dataclasses.replace(entry, data=src.to_dict())


__all__ = ["load_data", "register_data", "dataset_name", "images_entry"]
