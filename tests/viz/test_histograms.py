import numpy as np
import torch

from core.sources.bases import load_base
from core.viz.histograms import histogram, weight_histograms


def test_counts_match_numpy_with_the_same_edges():
    v = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    h = histogram(v, bins=50, lo=-3, hi=3)
    ref, edges = np.histogram(np.clip(v.numpy(), -3, 3), bins=50, range=(-3, 3))
    assert np.allclose(h.edges, edges)
    assert np.abs(h.counts - ref).sum() <= 4  # float edge rounding only
    assert h.counts.sum() == h.total == 10_000


def test_weight_histograms_have_symmetric_fixed_edges_per_layer():
    hs = weight_histograms(load_base("digits_mlp"), bins=100)
    for h in hs.values():
        assert len(h.counts) == 100 and h.edges[0] == -h.edges[-1]
    edges = {n: (float(h.edges[0]), float(h.edges[-1])) for n, h in hs.items()}
    again = weight_histograms(load_base("digits_mlp"), bins=100, edges=edges)
    assert all(np.array_equal(again[n].edges, hs[n].edges) for n in hs)
