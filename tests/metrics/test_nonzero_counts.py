"""Non-zero counts: counted by numpy on the host, noted by the step that wrote the weights and
reused only while the tensor is the same object, unchanged (core/metrics/cost.py)."""
import torch
from torch import nn

from core.metrics.cost import nonzero_count, nonzero_counts, nonzero_of, note_nonzero
from core.plan import ApplyContext
from core.prune import Prune
from core.prune.masks import weight_prune


def _truth(model: nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(int(torch.count_nonzero(p)) for p in params)


def test_host_counts_equal_torch_for_every_dtype():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.bool):
        t = (torch.randn(64, 33, generator=g) > 0.3).to(dtype) * (torch.randn(64, 33, generator=g) > 0).to(dtype)
        assert int(nonzero_count(t)) == int(torch.count_nonzero(t)), dtype


def test_a_noted_count_is_reused_only_while_the_tensor_is_unchanged():
    t = nn.Parameter(torch.ones(10))
    note_nonzero(t, 3)  # deliberately wrong: proves the note is what is read
    assert nonzero_of([t]) == [3]
    with torch.no_grad():
        t[0] = 0.0  # an in-place change moves the version counter: counted again
    assert nonzero_of([t]) == [9]
    with torch.inference_mode():
        inf = torch.ones(4)
    note_nonzero(inf, 1)  # inference tensors have no version counter: never noted
    assert nonzero_of([inf]) == [4]


def test_the_readout_after_a_weight_prune_counts_what_is_there():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    ctx = ApplyContext("t")
    for step in (Prune(threshold=0.05), Prune(sparsity=0.6), Prune(threshold=0.12)):
        pruned, report = weight_prune(step, model, ctx)
        total, nz = _truth(pruned)
        got_total, got_nz, sparsity = nonzero_counts(pruned)
        assert (got_total, got_nz) == (total, nz)
        weights = [m.weight for m in pruned if isinstance(m, nn.Linear)]
        assert sparsity == sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        assert report.pruned == sum(int((w == 0).sum()) for w in weights)
        with torch.no_grad():  # a later in-place edit of the pruned model is seen
            pruned[0].weight.zero_()
        assert nonzero_counts(pruned)[1] == _truth(pruned)[1]
