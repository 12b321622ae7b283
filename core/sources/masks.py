"""Segmentation data as image files: a folder (or a zip of one) holding ``images/`` and a
matching ``masks/`` (or ``labels/``) folder, a mask per image with the same file stem.

A mask is a single-channel image whose pixel values are class indices 0..K-1 (a palette PNG
as Pascal VOC ships it reads as its indices; 255 marks pixels that are not judged). Images are
resized bilinearly to the model's input size, masks to the same size by nearest neighbour (a
class index is never blended).
"""
from __future__ import annotations

from pathlib import Path

from core.errors import FileError, first_line
from core.sources.readers import IMAGE_SUFFIXES, _images, check_image_args, read_images

MASK_DIRS = ("masks", "labels")


def mask_layout(path: str | Path) -> tuple[Path, Path] | None:
    """``(images folder, masks folder)`` when ``path`` is a folder laid out for segmentation
    (exactly ``images/`` and one of :data:`MASK_DIRS` inside), else None."""
    p = Path(path)
    if not p.is_dir():
        return None
    dirs = {d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith((".", "__MACOSX"))}
    masks = [m for m in MASK_DIRS if m in dirs]
    return (p / "images", p / masks[0]) if "images" in dirs and len(dirs) == 2 and masks else None


def read_mask_folder(path: str | Path, size: tuple[int, int], channels: int, mean, std):
    """``(x, y)``: images ``(N, channels, H, W)`` normalised as :func:`read_images` does, and
    label masks ``y`` ``(N, H, W)`` int64, of a folder with the :func:`mask_layout`.

    Raises:
        FileError: not that layout; an image without its mask (or a mask without its image);
            a mask that does not decode or is not one class index per pixel."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    h, w = check_image_args(size, channels, mean, std)
    found = mask_layout(path)
    if found is None:
        raise FileError(f"segmentation data {str(path)!r}: accepted is a folder (or .zip) holding images/ and masks/ "
                        "(or labels/), one mask per image with the same file name stem")
    images = {f.stem: f for f in _images(found[0])}
    masks = {f.stem: f for f in _images(found[1])}
    alone = sorted(set(images) ^ set(masks))
    if alone or not images:
        raise FileError(f"segmentation data {Path(path).name!r}: every image needs a mask of the same stem and the "
                        f"reverse; {len(images)} image(s), {len(masks)} mask(s), unmatched: "
                        f"{', '.join(alone[:8]) or 'none'}"
                        f"{' ...' if len(alone) > 8 else ''} (accepted: {', '.join(IMAGE_SUFFIXES)})")
    stems = sorted(images)
    x = read_images(Path(path).name, [images[s] for s in stems], channels, (h, w), mean, std, root=Path(path))
    y = torch.empty(len(stems), h, w, dtype=torch.long)
    for k, s in enumerate(stems):
        try:
            with Image.open(masks[s]) as im:
                if im.mode not in ("L", "P", "I", "I;16", "1"):
                    raise FileError(f"mask {masks[s].name} is a {im.mode} image; accepted is one class index per "
                                    "pixel (a greyscale or palette PNG)")
                a = np.asarray(im.resize((w, h), Image.Resampling.NEAREST), dtype=np.int64)
        except FileError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise FileError(f"mask {masks[s].name} could not be decoded ({first_line(exc)})") from exc
        if a.min() < 0 or a.max() > 255:
            raise FileError(f"mask {masks[s].name}: labels must be 0..254, or 255 for a pixel not judged")
        y[k] = torch.from_numpy(a)
    return x, y


__all__ = ["MASK_DIRS", "mask_layout", "read_mask_folder"]
