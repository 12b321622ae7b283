import os

import pytest
import torch

torch.manual_seed(0)
os.environ.setdefault("PRUNESCOPE_TEST", "1")
# a person's stored models live here during the tests (never the real user data folder)
os.environ["PRUNESCOPE_HOME"] = __import__("tempfile").mkdtemp(prefix="prunescope-test-home-")

# Tests import core's modules directly, below the entry points: register what an entry
# point would (the built-in step kinds, the demo models, a person's saved models).
from core.startup import register_all  # noqa: E402

register_all()

DEMO_MODELS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_vit"]


@pytest.fixture(scope="session")
def demo_names():
    from core.sources.models import list_models

    names = list_models()
    assert set(DEMO_MODELS) <= set(names), names
    return DEMO_MODELS


@pytest.fixture
def fidelity_mlp():
    """A registered copy of the digits MLP judged by fidelity (no labels), random weights;
    removed from the registry afterwards. Yields its name."""
    from core.sources.models import MODELS, register_factory

    name = "fidelity_mlp_test"
    register_factory("demo_models.nets:digits_mlp", weights=None, dataset="digits", input_shape=(1, 8, 8),
                     name=name, task="fidelity")
    yield name
    MODELS.unregister(name)


def structured_prune(model, example, *, granularity: str, criterion: str = "l1", sparsity=None, threshold=None,
                     layers=(), seed: int = 0, calib=None):
    """A structured ``Prune`` step on ``model`` without a plan or an apply context, its
    fields given as arguments: ``(pruned copy, selection)``; ``selection.warnings`` names
    the groups left out. ``example`` traces the graph and checks the pruned copy runs;
    ``calib`` is ``(x, y)`` for data-driven criteria."""
    from core.prune import Prune
    from core.prune.structured.analysis import Analysis, nonempty
    from core.prune.structured.prune import remove_units
    from core.prune.structured.scores import score_groups

    step = Prune(criterion=criterion, granularity=granularity, sparsity=sparsity, threshold=threshold,
                 layers=tuple(layers), seed=seed)
    an = Analysis(model, example)
    groups = nonempty(an.groups(granularity), granularity, an.skipped[granularity])
    scores = score_groups(an.copy, groups, criterion, seed, calib)
    new, sel, warns = remove_units(model, example, step, groups, scores, an.skipped[granularity])
    sel.warnings = warns + list(sel.warnings)
    return new, sel


def small_mlp(seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 48), torch.nn.ReLU(),
                            torch.nn.Linear(48, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m.eval()


@pytest.fixture
def own_home(tmp_path, monkeypatch):
    """A fresh folder for a person's stored models; yields a list: the names appended to
    it are unregistered afterwards."""
    from core.errors import PrunescopeError
    from core.sources.entries import unregister

    monkeypatch.setenv("PRUNESCOPE_HOME", str(tmp_path / "home"))
    names: list[str] = []
    yield names
    for n in names:
        try:
            unregister(n)
        except PrunescopeError:
            pass
