"""The Prune page shows a person's own metric beside the built-in figures (issue 24)."""
import numpy as np
import torch

from core.plan import Plan
from core.prune import Prune
from core.sources.entries import register
from tests.helpers.app import new_app, ok, workspace


def test_prune_page_shows_each_figure_of_an_own_metric_with_its_change(own_home, tmp_path):
    g = torch.Generator().manual_seed(0)
    np.savez(tmp_path / "d.npz", x=torch.rand(64, 1, 8, 8, generator=g).numpy(), y=(np.arange(64) % 10))
    spec = register("app_own_metric", factory="demo_models.nets:DigitsCNN", metric="tests.helpers.own_metrics:top2",
                    data={"kind": "tensors", "path": str(tmp_path / "d.npz")})
    own_home.append(spec.name)
    at = new_app(spec.name)
    workspace(at).set_plan(Plan(spec.name, (Prune(sparsity=0.9),)))
    at.run()
    ok(at)
    cards = {m.label: m for m in at.metric}
    assert "top2" in cards and "mean top score" in cards and "Accuracy" in cards
    assert cards["mean top score"].delta  # against the base's figure on the same examples
    assert any("tests.helpers.own_metrics:top2" in c.value for c in at.caption)
