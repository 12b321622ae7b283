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

from core.ground.memory import keep_freed_memory  # noqa: E402

keep_freed_memory()  # as the entry points do: evaluations reuse freed memory (PRUNESCOPE_KEEP_MEMORY=0: not)

from tests.helpers.models import DEMO_MODELS  # noqa: E402


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


@pytest.fixture
def own_home(tmp_path, monkeypatch):
    """A fresh folder for a person's stored models; yields a list: the names appended to
    it are unregistered afterwards."""
    from core.errors import PrunescopeError
    from core.sources.entries import unregister

    monkeypatch.setenv("PRUNESCOPE_HOME", str(tmp_path / "home"))
    names: list[str] = []
    yield names
    from core.sources.models import MODELS

    for n in names:
        try:
            unregister(n)
        except PrunescopeError:  # registered with save=False: in the registry only
            if n in MODELS.names():
                MODELS.unregister(n)
