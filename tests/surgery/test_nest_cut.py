"""Surgery on models whose output is a nest of tensors (issue 24): blocks listed, a block cut with
its bridge, every leaf keeping its shape."""
import pytest
import torch

from core.ground.outputs import leaves
from core.plan import ApplyContext, Plan, apply
from core.sources.bases import load_base
from core.surgery import Cut
from core.surgery.blocks import list_blocks
from tests.helpers.nest_models import images, pyramid, register_nest, two_heads, unregister_nest

CASES = {"two_heads": (two_heads, "body", "body.1"), "pyramid": (pyramid, "stage1", "stage1.1")}


@pytest.fixture(params=sorted(CASES))
def case(request):
    cls, container, block = CASES[request.param]
    name = register_nest(f"nest_{request.param}_cut_test", cls)
    yield name, container, block
    unregister_nest(name)


def _shapes(m, x):
    with torch.no_grad():
        return {k: tuple(t.shape) for k, t in leaves(m(x)).items()}


@pytest.mark.parametrize("bridge", ["auto", "lstsq"])
def test_a_block_is_listed_and_cut_with_its_bridge(case, bridge):
    name, container, block = case
    base = load_base(name)
    blocks = list_blocks(base, images(2), container)
    assert block in [b.name for b in blocks] and all(b.macs > 0 for b in blocks)
    cut = apply(Plan(name, (Cut(blocks=(block,), bridge=bridge),)), base, ctx=ApplyContext(name, calib_size=16))
    assert _shapes(cut, images(2)) == _shapes(base, images(2))
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in base.parameters())
    assert block not in dict(cut.named_modules()) or type(dict(cut.named_modules())[block]) is not \
        type(dict(base.named_modules())[block])
