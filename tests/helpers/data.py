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
