"""The handle's share pruned, read from the bins (app/threshold_drag.py; main.js computes the
same while dragging), and the folder the component is served from."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app import threshold_drag as td
from core.viz.histograms import histogram


def _values(n: int = 20_000) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(0)) * 0.1


@pytest.mark.parametrize("k", [0, 13, 50, 87, 100])
def test_the_share_at_a_bin_edge_is_the_exact_fraction_below_it(k):
    v = _values()
    h = histogram(v, 100)
    t = float(h.edges[k])
    exact = float((v.double() < t).double().mean()) if k < 100 else 1.0
    assert td.share_pruned(h.edges, h.counts, t) == pytest.approx(exact, abs=1.0 / len(v))


@pytest.mark.parametrize("k", [0, 10, 33, 50])
def test_the_symmetric_share_at_an_edge_is_the_fraction_of_magnitudes_below_it(k):
    v = _values()
    a = float(v.abs().max())
    h = histogram(v, 100, -a, a)
    t = float(h.edges[50 + k])
    exact = float((v.double().abs() < t).double().mean())
    assert td.share_pruned(h.edges, h.counts, t, symmetric=True) == pytest.approx(exact, abs=2.0 / len(v))


def test_inside_a_bin_the_share_is_interpolated_and_monotone():
    edges, counts = np.array([0.0, 1.0, 2.0]), np.array([10, 30])
    assert td.share_pruned(edges, counts, 0.5) == pytest.approx(5 / 40)
    assert td.share_pruned(edges, counts, 1.5) == pytest.approx(25 / 40)
    assert td.share_pruned(edges, counts, -1.0) == 0.0 and td.share_pruned(edges, counts, 9.0) == 1.0
    assert td.share_pruned(edges, np.zeros(2), 1.0) == 0.0
    ts = np.linspace(-0.5, 2.5, 61)
    assert np.all(np.diff([td.share_pruned(edges, counts, t) for t in ts]) >= 0)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("share", [0.05, 0.3, 0.77])
def test_threshold_for_share_inverts_share_pruned(share, symmetric):
    v = _values()
    h = histogram(v, 100, -0.5, 0.5)
    t = td.threshold_for_share(h.edges, h.counts, share, symmetric=symmetric)
    assert td.share_pruned(h.edges, h.counts, t, symmetric=symmetric) == pytest.approx(share, abs=1e-9)


def test_the_served_folder_holds_the_assets_and_the_packages_plotly(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    td.site.cache_clear()
    try:
        root = td.site()
        assert root.parent == tmp_path / "prunescope"
        for name in td.FILES:
            assert (root / name).read_bytes() == (td.ASSETS / name).read_bytes()
        assert (root / "plotly.min.js").stat().st_size == td.plotly_js().stat().st_size
        td.site.cache_clear()
        assert td.site() == root  # assembled once per content
    finally:
        td.site.cache_clear()
