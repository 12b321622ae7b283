"""Data files made in the tests: class folders of small images, and zips of them."""
from __future__ import annotations

import zipfile

import numpy as np
from PIL import Image


def image_folder(root, classes=("cat", "dog", "fox"), per_class=8, size=(12, 10)):
    """Class folders of small PNGs whose brightness depends on the class (made here)."""
    rng = np.random.RandomState(0)
    for i, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for k in range(per_class):
            a = np.clip(rng.randint(0, 60, size=(*size, 3)) + 90 * i, 0, 255).astype("uint8")
            Image.fromarray(a).save(root / c / f"{k}.png")
    return root


def zip_of(folder, path):
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, f.relative_to(folder.parent))  # wrapped in the folder's own name
    return path


def frame_folder(root, videos=(("a", 4), ("b", 3)), size=(40, 60)):
    """A folder per video of numbered RGB frames (made here), each frame the one before shifted one pixel
    right: ``(video name, frames)`` pairs give ``frames - 1`` consecutive pairs each."""
    rng = np.random.RandomState(0)
    for v, n in videos:
        (root / v).mkdir(parents=True)
        a = rng.randint(0, 255, size=(*size, 3)).astype("uint8")
        for k in range(n):
            Image.fromarray(np.roll(a, k, axis=1)).save(root / v / f"frame_{k:04d}.png")
    return root


def mask_folder(root, n=24, size=(24, 24), classes=3):
    """A segmentation folder made here: ``images/`` of small PNGs and ``masks/`` of the same
    stems, greyscale PNGs of class indices (vertical bands, brighter images for higher
    classes; the top row is 255, not judged)."""
    rng = np.random.RandomState(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    h, w = size
    for k in range(n):
        mask = np.repeat((np.arange(w) * classes // w)[None, :], h, 0).astype("uint8")
        mask = np.roll(mask, k % w, axis=1)
        img = np.clip(rng.randint(0, 40, size=(h, w, 3)) + 100 * mask[..., None], 0, 255).astype("uint8")
        mask[0] = 255
        Image.fromarray(img).save(root / "images" / f"{k:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{k:03d}.png")
    return root


FIXED_BOXES = ((4, 4, 16, 16, 1), (24, 24, 16, 16, 2))  # x, y, width, height, category of every image (48 px)


def box_folder(root, n=16, size=(48, 48), boxes=FIXED_BOXES, json_name="annotations.json"):
    """A detection folder made here: ``images/`` of small PNGs and one COCO-style JSON giving
    every image the boxes ``boxes`` (in its own pixels), with a crowd box that is left out."""
    import json

    rng = np.random.RandomState(0)
    (root / "images").mkdir(parents=True)
    h, w = size
    images, anns = [], []
    for k in range(n):
        a = 90 + rng.randint(0, 30, size=(h, w, 3))  # grey, a shape drawn in each labelled box
        for x, y, bw, bh, c in boxes:
            a[y:y + bh, x:x + bw] = (220, 60, 60) if c == 1 else (60, 60, 220)
        Image.fromarray(a.astype("uint8")).save(root / "images" / f"{k:03d}.png")
        images.append({"id": 100 + k, "file_name": f"{k:03d}.png", "width": w, "height": h})
        anns += [{"id": len(anns) + j, "image_id": 100 + k, "bbox": list(b[:4]), "category_id": b[4]}
                 for j, b in enumerate(boxes)]
        anns.append({"id": 10_000 + k, "image_id": 100 + k, "bbox": [0, 0, 5, 5], "category_id": 1, "iscrowd": 1})
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    (root / json_name).write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root
