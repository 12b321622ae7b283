"""Issue 23 (12): example images are drawn as the person's files show them. The Model page
drew an uploaded image zip's thumbnails inverted (a colour scale from white to black)."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from core.sources.readers import default_normalisation, read_image_folder, safe_unzip
from core.viz.samples import channel_range, sample_figure, to_pixels
from tests.helpers.data import image_folder, zip_of


def drawn(fig) -> list[np.ndarray]:
    """The pictures a figure draws, decoded from its traces: (H, W, 3) uint8 each."""
    out = []
    for t in fig.data:
        assert t.type == "image"
        png = base64.b64decode(t.source.split(",", 1)[1])
        out.append(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    return out


def read_back(folder, size, channels):
    mean, std = default_normalisation(channels)
    return read_image_folder(folder, size, channels, mean, std)


def test_thumbnails_of_an_uploaded_rgb_zip_are_its_pixels(tmp_path):
    folder = image_folder(tmp_path / "pets", size=(12, 10))
    for name, v in (("black", 0), ("white", 255)):  # the set spans black to white: drawn exactly
        Image.fromarray(np.full((12, 10, 3), v, np.uint8)).save(folder / "cat" / f"{name}.png")
    root = safe_unzip(zip_of(folder, tmp_path / "pets.zip"), tmp_path / "unzipped")
    x, y, classes = read_back(root, (12, 10), 3)
    first = [int(np.nonzero(y.numpy() == c)[0][0]) for c in range(len(classes))]
    fig = sample_figure(to_pixels(x[first].numpy(), *channel_range(x)), [classes[int(y[i])] for i in first])
    # the first file of each class (the reader reads a class's files in sorted order)
    sources = [np.asarray(Image.open(sorted((root / c).iterdir())[0]).convert("RGB")) for c in classes]
    assert not (sources[0] == sources[0][0, 0]).all()  # an image, not the added black one
    for got, want in zip(drawn(fig), sources):
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_dark_digits_on_white_stay_dark_on_white(tmp_path):
    """Greyscale: the ink of a file keeps its darkness (the old colour scale drew it light)."""
    for c in ("zero", "one"):
        (tmp_path / "d" / c).mkdir(parents=True)
        a = np.full((8, 8), 255, np.uint8)
        a[2:6, 3 + (c == "one")] = 0  # a dark stroke on white paper
        Image.fromarray(a, "L").save(tmp_path / "d" / c / "0.png")
    x, _, classes = read_back(tmp_path / "d", (8, 8), 1)
    pics = drawn(sample_figure(to_pixels(x.numpy(), *channel_range(x)), classes))
    for got, c in zip(pics, classes):
        want = np.asarray(Image.open(tmp_path / "d" / c / "0.png"))
        assert (got[..., 0] == want).all() and (got[..., 0] == got[..., 2]).all()
        assert got[0, 0, 0] == 255 and got[3, 3 + (c == "one"), 0] == 0  # white paper, dark ink


def test_a_tensor_and_its_array_give_the_same_range():
    import torch

    x = torch.randn(5, 3, 4, 4)
    for a, b in zip(channel_range(x), channel_range(x.numpy())):
        assert a == pytest.approx(b)


def test_the_bundled_digits_are_drawn_from_their_values():
    """The demos' normalisation (p/16 - 0.5)/0.5 is undone: each pixel is p/16 of white."""
    from demo_models.data import digits

    d = digits()
    want = np.rint((d.x_test[:10, 0].numpy() * 0.5 + 0.5) * 255)
    got = to_pixels(d.x_test[:10].numpy(), *channel_range(d.x_test))
    assert np.abs(got[..., 0].astype(int) - want.astype(int)).max() <= 1
