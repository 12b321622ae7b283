"""N:M (2:4) semi-structured sparsity: the pattern on CPU; the sparse kernels on CUDA."""
from __future__ import annotations

import pytest
import torch

from core.errors import ModelError, StepError
from core.plan import Plan, apply
from core.prune import NMSparsity
from core.prune.nm import eligible_layers, nm_mask, semi_structured_speedup, to_semi_structured


def test_the_mask_keeps_the_two_largest_of_every_four():
    s = torch.tensor([[0.1, 0.9, 0.5, 0.2, 4.0, 3.0, 2.0, 1.0]])
    assert nm_mask(s, 2, 4).tolist() == [[False, True, True, False, True, True, False, False]]


@pytest.mark.parametrize("name", ["digits_mlp", "digits_vit"])
def test_every_group_of_four_keeps_at_most_two_weights_and_the_output_layer_is_kept(name):
    model = apply(Plan(name).then(NMSparsity()))
    layers = eligible_layers(model, 4)
    assert layers
    for lname, layer in layers.items():
        nz = (layer.weight.reshape(layer.weight.shape[0], -1, 4) != 0).sum(-1)
        assert int(nz.max()) <= 2, lname
    base = apply(Plan(name))
    last = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    assert torch.equal(dict(model.named_modules())[last].weight, dict(base.named_modules())[last].weight)


def test_bad_patterns_are_refused():
    with pytest.raises(StepError, match="n must be smaller than m"):
        NMSparsity(n=4, m=4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_without_a_gpu_the_sparse_kernels_refuse_clearly():
    with pytest.raises(ModelError, match="need a CUDA GPU"):
        to_semi_structured(apply(Plan("digits_vit").then(NMSparsity())))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_the_2_4_model_runs_with_sparse_kernels_and_agrees():
    model = apply(Plan("digits_vit").then(NMSparsity()))
    x = torch.randn(256, 1, 8, 8)
    try:
        sparse = to_semi_structured(model)
    except ModelError as exc:  # the demo's widths may be too small for the kernels
        pytest.skip(str(exc))
    with torch.inference_mode():
        a = model.half().cuda()(x.half().cuda()).argmax(1)
        b = sparse(x.half().cuda()).argmax(1)
    assert (a == b).float().mean() > 0.95
    out = semi_structured_speedup(apply(Plan("digits_vit").then(NMSparsity())), x)
    assert out["dense_ms"] > 0 and out["sparse_ms"] > 0
