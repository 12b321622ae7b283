"""Structured pruning where Torch-Pruning's graph cannot follow everything: groups it
cannot follow, or whose pruning breaks the forward pass, are left out with the reason in
the warnings; stored widths are updated; any failure inside the step is a PlanError."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import core.prune.structured.prune as SP
from core.errors import ModelError, PlanError
from core.plan import Plan, apply, apply_with_reports
from core.prune import Prune
from core.sources.models import MODELS, ModelSpec, register_model
from tests.helpers.models import structured_prune


def _x(n: int = 2, shape=(1, 8, 8)) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))


class StoredWidth(nn.Module):
    """Reshapes with a width kept in an attribute of its own name: pruning ``c`` breaks it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)
        self.magic = 16

    def forward(self, x):
        x = self.c(torch.relu(self.b(torch.relu(self.a(x))))).mean((2, 3))
        return self.fc(x.reshape(len(x), self.magic))


class TinyViT(nn.Module):
    """Like torchvision's ViT: patches by a conv, reshaped with the stored ``hidden_dim``."""

    def __init__(self):
        super().__init__()
        self.hidden_dim = 16
        self.conv_proj = nn.Conv2d(1, 16, 4, 4)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        n = len(x)
        x = self.conv_proj(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)  # (N, 4, hidden)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.head(self.norm(x).mean(1))


def test_a_group_that_breaks_the_forward_pass_is_left_out_and_named():
    torch.manual_seed(0)
    m = StoredWidth().eval()
    new, sel = structured_prune(m, _x(1), granularity="channel", sparsity=0.5)
    assert new(_x()).shape == (2, 10)
    assert new.c.out_channels == 16 and new.a.out_channels < 8  # c left out, the others pruned
    assert sel.pruned["c"] == [] and sel.pruned["a"]
    assert any(w.startswith("c: left out (pruning it breaks the forward pass") for w in sel.warnings)


def test_a_stored_width_is_updated_and_attention_keeps_whole_heads():
    torch.manual_seed(0)
    m = TinyViT().eval()
    new, sel = structured_prune(m, _x(1), granularity="channel", sparsity=0.3)
    assert new.conv_proj.out_channels < 16 and new.hidden_dim == new.conv_proj.out_channels
    assert new.attn.embed_dim == new.hidden_dim and new.hidden_dim % 4 == 0  # a multiple of num_heads
    assert not sel.warnings and new(_x()).shape == (2, 10)
    assert m.hidden_dim == 16 and m.conv_proj.out_channels == 16  # the input is not changed


class GroupNormed(nn.Module):
    """Convolutions followed by GroupNorms (FCOS' and RetinaNet v2's heads: 32 groups of 256 channels)."""

    def __init__(self):
        super().__init__()
        self.a, self.na = nn.Conv2d(1, 64, 3, padding=1), nn.GroupNorm(8, 64)
        self.b, self.nb = nn.Conv2d(64, 64, 3, padding=1), nn.GroupNorm(16, 64)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        return self.head(torch.relu(self.nb(self.b(torch.relu(self.na(self.a(x))))))).mean((2, 3))


def test_a_groupnorm_keeps_a_width_its_group_count_divides():
    """Issue 24: FCOS and RetinaNet v2 had every head convolution left out ("Expected number of
    channels in input to be divisible by num_groups"): the kept width is now a multiple of num_groups."""
    torch.manual_seed(0)
    new, sel = structured_prune(GroupNormed().eval(), _x(1), granularity="channel", sparsity=0.3)
    assert not sel.warnings and new(_x()).shape == (2, 10)
    assert new.a.out_channels < 64 and new.a.out_channels % 8 == 0 and new.na.num_channels == new.a.out_channels
    assert new.b.out_channels % 16 == 0 and new.nb.num_channels == new.b.out_channels


@pytest.fixture
def stored():
    register_model(ModelSpec(name="stored_width_test", factory=StoredWidth, input_shape=(1, 8, 8), dataset="digits",
                             task="fidelity"), overwrite=True)
    yield "stored_width_test"
    MODELS.unregister("stored_width_test")


def test_the_step_report_lists_the_groups_left_out(stored):
    model, reports = apply_with_reports(Plan(stored, (Prune(granularity="channel", sparsity=0.5),)))
    r = reports[-1]
    assert r.units["c"] == (0, 16) and r.units["a"][0] > 0
    assert any(w.startswith("c: left out") for w in r.warnings) and "left out" in r.summary
    assert model(_x()).shape == (2, 10)


def test_running_out_of_memory_inside_the_step_is_a_plan_error_naming_the_step(stored, monkeypatch):
    def boom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(SP, "_prune_groups", boom)
    with pytest.raises(PlanError, match=r"step 1 \(prune channel.*out of memory"):
        apply(Plan(stored, (Prune(granularity="channel", sparsity=0.5),)))


def test_a_bug_inside_the_step_propagates_as_itself_not_as_the_persons_mistake(stored, monkeypatch):
    """Issue 22: a ZeroDivisionError in our own code was a PlanError (exit 2, no traceback)."""
    monkeypatch.setattr(SP, "_prune_groups", lambda *a, **k: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        apply(Plan(stored, (Prune(granularity="channel", sparsity=0.5),)))
    with pytest.raises(ZeroDivisionError):
        structured_prune(StoredWidth().eval(), _x(1), granularity="channel", sparsity=0.5)


def test_torchvision_vit_and_shufflenet_prune_what_the_graph_can_follow():
    tv = pytest.importorskip("torchvision")
    from torchvision.models.shufflenetv2 import ShuffleNetV2
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    new, sel = structured_prune(vit, x[:1], granularity="channel", sparsity=0.3)
    assert new.hidden_dim == new.conv_proj.out_channels < 16 and new.hidden_dim % 2 == 0
    assert new(x).shape == (2, 10) and sel.n_pruned > 0
    # channel shuffle: Torch-Pruning's reshape mapping divides by zero for some groups
    sh = ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 128], num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    new, sel = structured_prune(sh, x[:1], granularity="channel", sparsity=0.3)
    assert new(x).shape == (2, 10) and sel.n_pruned > 0
    assert any("left out" in w for w in sel.warnings)
    assert tv is not None


@pytest.mark.parametrize("v2", [False, True])
def test_torchvision_swin_prunes_its_embedding_width_through_window_attention(v2):
    pytest.importorskip("torchvision")
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    torch.manual_seed(0)
    kw = dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2) if v2 else {}
    m = SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                        num_classes=10, **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    new, sel = structured_prune(m, x[:1], granularity="channel", sparsity=0.3)
    width = new.features[0][0].out_channels
    assert width < 24 and width % 2 == 0 and not sel.warnings  # whole heads' worth of channels
    attn = new.features[1][0].attn
    assert attn.qkv.in_features == attn.proj.out_features == width and attn.qkv.out_features == 3 * width
    assert new.features[2].reduction.in_features == 4 * width and new(x).shape == (2, 10)
    assert m.features[0][0].out_channels == 24  # the input is not changed
    with pytest.raises(ModelError, match="a head cannot go alone; narrow the width instead"):
        structured_prune(m, x[:1], granularity="head", sparsity=0.3)  # heads are width / num_heads wide
