"""Architectures of the bundled demo models (plain PyTorch, random weights).

Every factory takes no arguments and returns an ``nn.Module`` whose forward has no
data-dependent Python control flow, so it traces with ``torch.export`` and ONNX.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10


# --------------------------------------------------------------------------- MLP
class DigitsMLP(nn.Module):
    """(1, 8, 8) -> Flatten -> 64-256-128-10 with ReLU; all layers in ``layers``."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, NUM_CLASSES),
        )

    def forward(self, x):
        return self.layers(x)


def digits_mlp() -> nn.Module:
    return DigitsMLP()


# --------------------------------------------------------------------------- CNN
def _conv_block(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    mods = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    if pool:
        mods.append(nn.MaxPool2d(2))
    return nn.Sequential(*mods)


class DigitsCNN(nn.Module):
    """(1, 8, 8): conv-BN-ReLU blocks 32 -> 64 (+maxpool to 4x4) -> 64, GAP, Linear(64, 10)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(1, 32),
            _conv_block(32, 64, pool=True),
            _conv_block(64, 64),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, NUM_CLASSES))

    def forward(self, x):
        return self.head(self.features(x))


def digits_cnn() -> nn.Module:
    return DigitsCNN()


# --------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    """Two conv3x3+BN with a residual add; a 1x1 conv+BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class DigitsResNet(nn.Module):
    """(1, 32, 32): stem 1->32, blocks 32@32x32 x2, 64@16x16 x2, GAP, Linear(64, 10)."""

    def __init__(self, widths=(32, 64)):
        super().__init__()
        c1, c2 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
        self.layers = nn.Sequential(
            BasicBlock(c1, c1),
            BasicBlock(c1, c1),
            BasicBlock(c1, c2, stride=2),
            BasicBlock(c2, c2),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, NUM_CLASSES))

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


def digits_resnet() -> nn.Module:
    return DigitsResNet()


# --------------------------------------------------------------------------- ViT
class Attention(nn.Module):
    """Multi-head self-attention written timm-style (``qkv``/``proj``, ``num_heads``, ``head_dim``)."""

    def __init__(self, dim: int, num_heads: int = 4):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class DigitsViT(nn.Module):
    """(1, 8, 8): 2x2 patches -> 16 tokens of width 64, learned pos embedding,
    4 transformer blocks (4 heads), final LayerNorm, mean pooling, Linear(64, 10)."""

    def __init__(self, dim: int = 64, depth: int = 4, num_heads: int = 4, patch: int = 2, img: int = 8):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        num_tokens = (img // patch) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, 16, D)
        x = x + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x).mean(dim=1)
        return self.head(x)


def digits_vit() -> nn.Module:
    return DigitsViT()


FACTORIES = {
    "digits_mlp": digits_mlp,
    "digits_cnn": digits_cnn,
    "digits_resnet": digits_resnet,
    "digits_vit": digits_vit,
}


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates for one example (FlopCounterMode flops / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    model.train(was_training)
    return int(fc.get_total_flops() // 2)
