"""Optical-flow data as image files: a folder (or a zip of one) of video frames, read as the
pairs an optical-flow model takes (an example is two images stacked, N x 2 x C x H x W, as
``flow.py`` opens torchvision's RAFT). Frames pair up in file-name order within each folder:
(frame 1, frame 2), (frame 2, frame 3), ...; a folder per video (Sintel's layout) or one folder of
frames. No flow labels are read: the model's flow is judged against the base's.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import FileError
from core.sources.readers import IMAGE_SUFFIXES, check_image_args, read_images

PAIR_MEAN = PAIR_STD = (0.5,)  # torchvision's optical-flow preset: pixels to [-1, 1], every channel


def is_pair_shape(shape) -> bool:
    """Whether an input shape is a pair of images, ``(2, C, H, W)``."""
    return shape is not None and len(shape) == 4 and int(shape[0]) == 2 and int(shape[1]) in (1, 3)


def _frames(folder: Path) -> list[Path]:
    """The images directly in ``folder``, in file-name order."""
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                  and not f.name.startswith("."))


def _folders(root: Path) -> list[Path]:
    """``root`` and every folder under it (hidden ones and a zip's ``__MACOSX`` left out), in order."""
    subs = [d for d in root.rglob("*") if d.is_dir()
            and not any(part.startswith((".", "__MACOSX")) for part in d.relative_to(root).parts)]
    return [root, *sorted(subs)]


def read_frame_pairs(path: str | Path, size: tuple[int, int], channels: int = 3, mean=PAIR_MEAN, std=PAIR_STD):
    """Consecutive frames of each folder under ``path`` as pairs ``(N, 2, channels, H, W)`` float32,
    each image resized bilinearly to ``size`` and normalised ``(pixel / 255 - mean) / std``.

    Raises:
        FileError: not a folder; no folder holding two frames or more; an image that does not decode
            (named); too many images or pixels; bad size, mean or std."""
    import torch

    p = Path(path)
    h, w = check_image_args(size, channels, mean, std)
    if not p.is_dir():
        raise FileError(f"frame data {str(p)!r} is not a folder or a .zip; accepted is a folder (or .zip) of video "
                        "frames, consecutive frames of a folder in file-name order making the pairs")
    runs = [f for f in (_frames(d) for d in _folders(p)) if len(f) >= 2]
    if not runs:
        raise FileError(f"frame data {p.name!r} has no folder with two frames or more; accepted is a folder (or "
                        f".zip) of video frames ({', '.join(IMAGE_SUFFIXES)}), a folder per video, consecutive "
                        "frames in file-name order making the pairs")
    files = [f for run in runs for f in run]
    x = read_images(p.name, files, channels, (h, w), mean, std, root=p)
    first, k = [], 0
    for run in runs:
        first += range(k, k + len(run) - 1)
        k += len(run)
    i = torch.tensor(first, dtype=torch.long)
    return torch.stack([x[i], x[i + 1]], 1)


__all__ = ["PAIR_MEAN", "PAIR_STD", "is_pair_shape", "read_frame_pairs"]
