"""Small seeded models whose forward returns a nest of tensors (issue 24): two heads in a dict,
a segmenter returning torchvision's ``OrderedDict(out=, aux=)``, a backbone returning a tuple
of feature maps, and torchvision's ``lraspp_mobilenet_v3_large`` without any weights."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

IMAGE = (3, 16, 16)  # (C, H, W) of the inputs the small models take


def _seeded(m: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m.eval()


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU())


class TwoHeads(nn.Module):
    """A CNN with two heads: ``{"out": (N, 10), "aux": (N, 4)}``."""

    def __init__(self):
        super().__init__()
        self.stem = _block(3, 16)
        self.body = nn.Sequential(_block(16, 24, 2), _block(24, 24), _block(24, 24))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 10))
        self.aux = nn.Linear(24, 4)

    def forward(self, x):
        f = self.pool(self.body(self.stem(x))).flatten(1)  # (N, 24)
        return {"out": self.head(f), "aux": self.aux(f)}


class TinySegmenter(nn.Module):
    """A conv encoder, a 1x1 classifier and a bilinear upsample to the input size, returning
    ``OrderedDict(out=(N, C, H, W), aux=(N, C, H, W))`` like torchvision's segmenters."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.encoder = nn.Sequential(_block(3, 16), _block(16, 24, 2), _block(24, 32, 2))
        self.classifier = nn.Sequential(_block(32, 16), nn.Conv2d(16, classes, 1))
        self.aux_classifier = nn.Sequential(_block(32, 8), nn.Conv2d(8, classes, 1))

    def forward(self, x):
        size = x.shape[-2:]
        f = self.encoder(x)  # (N, 32, H/4, W/4)
        out = F.interpolate(self.classifier(f), size=size, mode="bilinear", align_corners=False)
        aux = F.interpolate(self.aux_classifier(f), size=size, mode="bilinear", align_corners=False)
        return OrderedDict(out=out, aux=aux)


class Pyramid(nn.Module):
    """A backbone returning a tuple of feature maps at three strides (a feature pyramid),
    with a residual block in the middle stage."""

    def __init__(self, as_list: bool = False):
        super().__init__()
        self.as_list = as_list
        self.stage1 = nn.Sequential(_block(3, 16), _block(16, 16))
        self.stage2 = _block(16, 24, 2)
        self.res = nn.Sequential(nn.Conv2d(24, 12, 3, 1, 1), nn.ReLU(), nn.Conv2d(12, 24, 3, 1, 1))
        self.stage3 = nn.Sequential(_block(24, 32, 2), _block(32, 32))

    def forward(self, x):
        a = self.stage1(x)  # (N, 16, H, W)
        b = self.stage2(a)
        b = torch.relu(b + self.res(b))  # (N, 24, H/2, W/2)
        c = self.stage3(b)  # (N, 32, H/4, W/4)
        return [a, b, c] if self.as_list else (a, b, c)


def two_heads(seed: int = 0) -> nn.Module:
    return _seeded(TwoHeads(), seed)


def segmenter(seed: int = 0, classes: int = 5) -> nn.Module:
    return _seeded(TinySegmenter(classes), seed)


def pyramid(seed: int = 0, as_list: bool = False) -> nn.Module:
    return _seeded(Pyramid(as_list), seed)


def lraspp(classes: int = 3) -> nn.Module:
    """torchvision's LR-ASPP MobileNetV3-Large, random weights, nothing downloaded."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=classes).eval()


NEST_MODELS = {"two_heads": two_heads, "segmenter": segmenter, "pyramid": pyramid}


def images(n: int = 4, seed: int = 0, size: tuple = IMAGE) -> torch.Tensor:
    return torch.randn((n, *size), generator=torch.Generator().manual_seed(seed))


NEST_DATA = "nest_images_test"  # random (3, 16, 16) images with labels 0..9


def register_nest(name: str, factory, *, task: str = "fidelity", output: str = "logits") -> str:
    """Register ``factory`` as model ``name`` on a dataset of random images (registered too), so plans,
    apply contexts and exports run on it; ``unregister_nest(name)`` takes the model away again."""
    from core.sources.datasets import DataSplits, register_dataset
    from core.sources.models import ModelSpec, register_model

    @register_dataset(NEST_DATA)
    def _data():
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn((96, *IMAGE), generator=g), torch.arange(96) % 10
        return DataSplits(NEST_DATA, x[:64], y[:64], x[64:], y[64:], [str(i) for i in range(10)])

    register_model(ModelSpec(name=name, factory=factory, input_shape=IMAGE, dataset=NEST_DATA, task=task,
                             output=output), overwrite=True)
    return name


def unregister_nest(name: str) -> None:
    from core.sources.models import MODELS

    MODELS.unregister(name)
