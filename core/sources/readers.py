"""Reading the evaluation data a person brings: files from elsewhere, read as data.

Every reader returns ``(x, y or None, class names or None)`` and raises
:class:`~core.errors.FileError` naming the file, what was wrong and what is accepted.

- :func:`read_image_folder`: a folder (or a ``.zip`` of one) with one subfolder per
  class; every image is decoded with Pillow, converted to RGB (or L for one channel),
  resized to ``size`` and normalised with ``mean``/``std``. A zip is unpacked by
  :func:`safe_unzip` (no paths outside its root, no links, bounded size and count).
- :func:`read_csv`: a table of numbers, one row per example, with an optional label
  column (whole numbers 0..K-1, or names, which become the classes in sorted order).
- :func:`read_tensors`: ``.npz`` (no pickles) / ``.safetensors`` holding ``x`` and ``y``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from core.errors import FOREIGN_ERRORS, FileError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGES = 20_000  # examples read from one folder
MAX_INPUT_BYTES = 4 << 30  # the decoded float tensor of all examples
MAX_ZIP_BYTES = 2 << 30  # uncompressed size of a zip's members
MAX_ZIP_MEMBERS = 50_000
MAX_CSV_BYTES = 512 << 20
MAX_DATA_BYTES = 2 << 30  # a tensors file larger than this is refused
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY_MEAN, GREY_STD = (0.449,), (0.226,)  # ImageNet's, averaged over the channels


def default_normalisation(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) used when none is given: ImageNet's statistics (averaged for grey)."""
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GREY_MEAN, GREY_STD)


def safe_unzip(path: str | Path, dest: str | Path) -> Path:
    """Unpack a zip into ``dest`` (emptied first) and return the folder that holds the
    class folders, or images/ with masks/ or a boxes JSON (``dest``, or its only subfolder when
    the zip wraps everything in one).

    Raises:
        FileError: not a zip; a member with an absolute path, ``..``, a drive or a link;
            more than :data:`MAX_ZIP_MEMBERS` members or :data:`MAX_ZIP_BYTES` unpacked.
    """
    import shutil

    p = Path(path)
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileError(f"{p.name} is not a readable zip file ({first_line(exc)}); accepted is a .zip of a folder "
                        "with one subfolder of images per class") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise FileError(f"{p.name} holds {len(infos):,} entries; at most {MAX_ZIP_MEMBERS:,} are accepted")
        total = 0
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise FileError(f"{p.name}: entry {name!r} points outside the zip's folder; accepted are relative "
                                "paths inside it")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise FileError(f"{p.name}: entry {name!r} is a symbolic link; links are not accepted")
            total += info.file_size
            if total > MAX_ZIP_BYTES:
                raise FileError(f"{p.name} unpacks to more than {MAX_ZIP_BYTES / 2**30:.0f} GiB; that is the limit")
        out = Path(dest)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        root = out.resolve()
        for info in infos:
            target = (out / info.filename).resolve()
            if root not in target.parents and target != root:  # belt and braces after the checks above
                raise FileError(f"{p.name}: entry {info.filename!r} points outside the zip's folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    entries = [c for c in out.iterdir() if not c.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():  # a zip of the folder itself: its class folders are inside
        inner = _class_dirs(entries[0])
        if len(inner) >= 2 and any(_images(d) for d in inner):
            return entries[0]
        if [d.name for d in inner] == ["images"] and any(f.suffix.lower() == ".json" for f in entries[0].iterdir()):
            return entries[0]  # images/ and a COCO-style JSON of boxes (sources/boxes.py)
    return out


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__MACOSX")))


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def check_image_args(size, channels: int, mean, std) -> tuple[int, int]:
    """``(height, width)`` of ``size``, with ``channels``, ``mean`` and ``std`` checked.

    Raises:
        FileError: channels not 1 or 3; a size out of 1..4096; mean or std of the wrong length, std <= 0."""
    if channels not in (1, 3):
        raise FileError(f"images: channels must be 1 (grey) or 3 (RGB), got {channels}")
    h, w = (int(size[0]), int(size[1]))
    if not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise FileError(f"images: size must be two whole numbers in 1..4096 (height, width), got {tuple(size)}")
    if len(mean) not in (1, channels) or len(std) not in (1, channels) or any(float(v) <= 0 for v in std):
        raise FileError(f"images: mean and std need one value, or one per channel ({channels}), std above 0; "
                        f"got mean {list(mean)}, std {list(std)}")
    return h, w


def read_images(name: str, files: list[Path], channels: int, size: tuple[int, int], mean, std,
                root: Path | None = None):
    """The images ``files`` (of data ``name``, in folder ``root``: named from it in errors) as
    ``(N, channels, H, W)`` float32, resized bilinearly to ``size`` and normalised
    ``(pixel / 255 - mean) / std``.

    Raises:
        FileError: too many images or pixels; an image that does not decode (named)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    h, w = size
    mean_t, std_t = (torch.tensor([float(v) for v in t]) for t in (mean, std))
    if len(files) > MAX_IMAGES:
        raise FileError(f"image data {name!r} holds {len(files):,} images; at most {MAX_IMAGES:,} are read "
                        "(use a smaller evaluation folder)")
    if len(files) * channels * h * w * 4 > MAX_INPUT_BYTES:
        raise FileError(f"image data {name!r}: {len(files):,} images at {h}x{w} need "
                        f"{len(files) * channels * h * w * 4 / 2**30:.1f} GiB; at most "
                        f"{MAX_INPUT_BYTES / 2**30:.0f} GiB (choose a smaller size or fewer images)")
    x = torch.empty(len(files), channels, h, w)
    mode = "RGB" if channels == 3 else "L"
    for k, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert(mode).resize((w, h), Image.Resampling.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise FileError(f"image {f.relative_to(root) if root else f.name} could not be decoded "
                            f"({first_line(exc)}); accepted are {', '.join(IMAGE_SUFFIXES)} images") from exc
        x[k] = torch.from_numpy(a.reshape(h, w, channels)).permute(2, 0, 1)
    return (x - mean_t.view(-1, 1, 1)) / std_t.view(-1, 1, 1)


def read_image_folder(path: str | Path, size: tuple[int, int], channels: int = 3,
                      mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                      unpack_to: str | Path | None = None):
    """``(x, y, classes)`` from a folder with one subfolder of images per class (or a
    ``.zip`` of one, unpacked into ``unpack_to``).

    ``x`` is ``(N, channels, H, W)`` float32, ``(pixel / 255 - mean) / std``; classes are
    the subfolder names in sorted order.

    Raises:
        FileError: no such folder; fewer than two classes; an empty class; an image that
            does not decode (named); too many images; bad size, mean or std.
    """
    import torch

    p = Path(path)
    h, w = check_image_args(size, channels, mean, std)
    if p.is_file() and p.suffix.lower() == ".zip":
        if unpack_to is None:
            raise FileError(f"{p.name}: a zip needs a folder to unpack into")
        p = safe_unzip(p, unpack_to)
    elif not p.is_dir():
        raise FileError(f"image data {str(p)!r} is not a folder or a .zip; accepted is a folder (or .zip) with one "
                        "subfolder of images per class")
    classes = _class_dirs(p)
    if len(classes) < 2:
        raise FileError(f"image data {p.name!r} has {len(classes)} class folder(s) "
                        f"({', '.join(d.name for d in classes) or 'none'}); accepted is one subfolder of images per "
                        "class, at least two classes")
    files = [(i, f) for i, d in enumerate(classes) for f in _images(d)]
    empty = [d.name for i, d in enumerate(classes) if not any(j == i for j, _ in files)]
    if empty:
        raise FileError(f"image data {p.name!r}: class folder(s) {', '.join(empty)} hold no images "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    x = read_images(p.name, [f for _, f in files], channels, (h, w), mean, std, root=p)
    y = torch.tensor([i for i, _ in files], dtype=torch.long)
    return x, y, [d.name for d in classes]


def read_tensors(path: str | Path) -> tuple:
    """``(x, y or None)`` from an ``.npz`` (no pickles) or ``.safetensors`` file.

    Raises:
        FileError: a missing, too large or unreadable file; no ``x``; ``y`` that is not one
            whole-number label 0..K-1 per example.
    """
    import numpy as np
    import torch
    from safetensors import SafetensorError

    p = _data_file(path, MAX_DATA_BYTES)
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        elif p.suffix == ".safetensors":
            from safetensors.torch import load_file

            arrays = load_file(str(p))
        else:
            raise FileError(f"data file {p.name}: accepted are .npz and .safetensors holding x (and optionally y)")
    except FileError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, SafetensorError, *FOREIGN_ERRORS) as exc:  # the readers'
        # failures on a file from elsewhere (a damaged archive, pickled objects, wrong dtypes)
        raise FileError(f"data file {p.name} could not be read ({type(exc).__name__}: {first_line(exc)}); "
                        "accepted are .npz (no pickled objects) and .safetensors holding x and optionally y") from exc
    if "x" not in arrays:
        raise FileError(f"data file {p.name} holds {sorted(arrays)}; it needs an array named x (inputs, one row per "
                        "example) and optionally y (labels)")
    x = arrays["x"]
    if x.dim() < 2 or len(x) < 8 or not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int64, torch.int32)):
        raise FileError(f"data file {p.name}: x must hold at least 8 examples of numbers, shape (N, ...), got "
                        f"{x.dtype} {tuple(x.shape)}")
    x = x.float()
    y = arrays.get("y")
    if y is not None and y.dim() == 3:  # label masks: a class per pixel (task segmentation)
        return x, _label_masks(y, x, p.name)
    if y is not None:
        if y.dim() != 1 or len(y) != len(x) or y.is_floating_point() and not torch.equal(y, y.round()):
            raise FileError(f"data file {p.name}: y must be one whole-number label per example, shape ({len(x)},), "
                            f"got {y.dtype} {tuple(y.shape)}")
        y = y.long()
        if int(y.min()) < 0 or len(torch.unique(y)) != int(y.max()) + 1:
            raise FileError(f"data file {p.name}: labels must be 0..K-1 with every class present; got "
                            f"{sorted(torch.unique(y).tolist())[:20]}")
    return x, y


def _data_file(path: str | Path, limit: int) -> Path:
    """``path`` as a Path, once it is an existing file of at most ``limit`` bytes.

    Raises:
        FileError: no such file, or a larger one (both sizes in the message)."""
    p = Path(path)
    if not p.is_file():
        raise FileError(f"data file {str(p)!r} does not exist")
    size = p.stat().st_size
    if size > limit:
        def unit(n: int) -> str:
            return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
        raise FileError(f"data file {p.name} is {unit(size)}; at most {unit(limit)} is accepted")
    return p


def _label_masks(y, x, name: str):
    """Label masks ``y`` (N x H x W whole numbers: classes 0..K-1, 255 not judged) checked
    against inputs ``x`` (N x C x H x W), as int64.

    Raises:
        FileError: masks of another count or size than the images, or labels that are not
            whole numbers in 0..254 or 255."""
    import torch

    if x.dim() != 4 or tuple(y.shape) != (len(x), *x.shape[-2:]):
        raise FileError(f"data file {name}: label masks y must be one class per pixel of each image, shape "
                        f"(N, H, W) = ({len(x)}, {', '.join(map(str, x.shape[-2:]))}) for x of shape "
                        f"{tuple(x.shape)}; got y {tuple(y.shape)}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise FileError(f"data file {name}: label masks y must hold whole-number classes, got {y.dtype}")
    y = y.long()
    if int(y.min()) < 0 or int(y.max()) > 255:
        raise FileError(f"data file {name}: mask labels must be classes 0..254, or 255 for a pixel not judged; got "
                        f"{int(y.min())}..{int(y.max())}")
    return y


def read_csv(path: str | Path, label_column: str | None = None):
    """``(x, y or None, classes or None)`` from a CSV of numbers, one row per example.

    Raises:
        FileError: a missing, too large or unreadable file; a label column that does not
            exist (the columns are listed); feature columns that are not numbers (named);
            missing values; fewer than 8 rows.
    """
    import pandas as pd
    import torch

    p = _data_file(path, MAX_CSV_BYTES)
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError) as exc:  # pandas' parser errors, a wrong encoding, an empty file
        raise FileError(f"data file {p.name} could not be read as CSV ({type(exc).__name__}: {first_line(exc)}); "
                        "accepted is a comma-separated table with a header row") from exc
    if label_column and label_column not in df.columns:
        raise FileError(f"data file {p.name} has no column {label_column!r}; its columns: "
                        f"{', '.join(map(str, df.columns[:30]))}")
    feats = df.drop(columns=[label_column]) if label_column else df
    bad = [str(c) for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if bad:
        raise FileError(f"data file {p.name}: column(s) {', '.join(bad[:10])} are not numbers; features must be "
                        f"numeric{'' if label_column else ' (is one of them the label column?)'}")
    if feats.shape[1] == 0 or len(df) < 8:
        raise FileError(f"data file {p.name}: needs at least 8 rows and one feature column, got "
                        f"{len(df)} rows, {feats.shape[1]} feature columns")
    if feats.isna().any().any():
        col = str(feats.columns[feats.isna().any()][0])
        raise FileError(f"data file {p.name}: column {col!r} has missing values; fill or drop them first")
    x = torch.tensor(feats.to_numpy(dtype="float32"))
    if not label_column:
        return x, None, None
    labels = df[label_column]
    if labels.isna().any():
        raise FileError(f"data file {p.name}: label column {label_column!r} has missing values")
    if pd.api.types.is_integer_dtype(labels) and int(labels.min()) >= 0:
        k = int(labels.max()) + 1
        present = set(labels.unique().tolist())
        if len(present) != k:
            raise FileError(f"data file {p.name}: whole-number labels must be 0..K-1 with every class present; "
                            f"got {sorted(present)[:20]}")
        return x, torch.tensor(labels.to_numpy(), dtype=torch.long), [str(i) for i in range(k)]
    names = sorted(labels.astype(str).unique().tolist())
    if len(names) < 2:
        raise FileError(f"data file {p.name}: label column {label_column!r} holds one class ({names}); "
                        "classification needs two or more")
    index = {n: i for i, n in enumerate(names)}
    return x, torch.tensor([index[v] for v in labels.astype(str)], dtype=torch.long), names


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MAX_DATA_BYTES", "default_normalisation", "read_tensors", "safe_unzip",
           "read_image_folder", "read_csv"]
