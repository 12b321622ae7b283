"""The scikit-learn digits dataset (8x8 grey images of handwritten digits, 1797 examples).

Data come only from the copy bundled with scikit-learn (``sklearn.datasets.load_digits``),
so nothing is downloaded. Two datasets (registered by ``demo_models/__init__.py``) share one split:

* ``"digits"``: images as float32 ``(N, 1, 8, 8)``.
* ``"digits32"``: the same images bilinearly upsampled to ``(N, 1, 32, 32)``
  (``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``).

Preprocessing: pixel values 0..16 are divided by 16 (to [0, 1]) and then normalised with
the fixed constants ``MEAN = 0.5``, ``STD = 0.5``, i.e. ``x = (p / 16 - 0.5) / 0.5`` in
[-1, 1]. The constants are deliberately simple and not fitted to the data.

Split: ``train_test_split(test_size=0.25, random_state=0, stratify=y)`` -> 1347 train,
450 test examples, every class in both.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from core.sources.datasets import DataSplits

MEAN = 0.5  # normalisation constants applied after scaling to [0, 1]
STD = 0.5
TEST_SIZE = 0.25
SPLIT_SEED = 0
CLASSES = [str(i) for i in range(10)]


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """The fixed split as CPU tensors: (x_train, y_train, x_test, y_test), x (N, 1, 8, 8)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0 - MEAN) / STD
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    return t(x_tr).unsqueeze(1), t(y_tr), t(x_te).unsqueeze(1), t(y_te)


def upsample32(x: torch.Tensor) -> torch.Tensor:
    """Bilinearly upsample ``(N, 1, 8, 8)`` images to ``(N, 1, 32, 32)``."""
    return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).contiguous()


def digits() -> DataSplits:
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    return DataSplits(
        name="digits", x_train=x_tr.clone(), y_train=y_tr.clone(), x_test=x_te.clone(), y_test=y_te.clone(),
        classes=list(CLASSES), kind="image",
        description="scikit-learn digits, 8x8 grey, (p/16-0.5)/0.5, stratified 75/25 split (seed 0)",
    )


def digits32() -> DataSplits:
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    return DataSplits(
        name="digits32", x_train=upsample32(x_tr), y_train=y_tr.clone(), x_test=upsample32(x_te),
        y_test=y_te.clone(), classes=list(CLASSES), kind="image",
        description="scikit-learn digits bilinearly upsampled to 32x32, same split as 'digits'",
    )


def load_splits(name: str) -> DataSplits:
    """``"digits"`` or ``"digits32"`` as :class:`DataSplits` (fresh tensors each call)."""
    fns = {"digits": digits, "digits32": digits32}
    if name not in fns:
        raise ValueError(f"unknown demo dataset {name!r}; valid: {', '.join(fns)}")
    return fns[name]()
