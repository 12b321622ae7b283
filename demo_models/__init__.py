"""Bundled demo models: small real networks trained on scikit-learn's digits.

Importing this package registers the ``digits`` and ``digits32`` datasets and four
models (``digits_mlp``, ``digits_cnn``, ``digits_resnet``, ``digits_vit``). It is cheap:
nothing is trained and no data are loaded at import time. Retrain with
``python -m demo_models.train``.
"""
from __future__ import annotations

from pathlib import Path

from core.sources.datasets import register_dataset
from core.sources.models import ModelSpec, register_model

# Nothing here imports torch: `prunescope models` lists the demos from the facts below
# without building them. The architectures (nets) and data (data) load on first use.


@register_dataset("digits")
def _digits():
    from demo_models.data import digits

    return digits()


@register_dataset("digits32")
def _digits32():
    from demo_models.data import digits32

    return digits32()


def _factory(name: str):
    """A zero-argument factory that imports ``nets`` when first called."""

    def build():
        from demo_models import nets

        return {"digits_mlp": nets.digits_mlp, "digits_cnn": nets.digits_cnn,
                "digits_resnet": nets.digits_resnet, "digits_vit": nets.digits_vit}[name]()

    build.__name__ = build.__qualname__ = name
    return build


try:
    from demo_models._results import RESULTS as _RESULTS
except ImportError:  # pragma: no cover - weights not trained yet
    _RESULTS = {}

HERE = Path(__file__).parent
WEIGHTS_DIR = HERE / "weights"
CARDS_DIR = HERE / "cards"

_SPECS = [
    # name, factory, input shape, dataset, block container, description
    ("digits_mlp", _factory("digits_mlp"), (1, 8, 8), "digits", "layers",
     "MLP 64-256-128-10 on 8x8 digits"),
    ("digits_cnn", _factory("digits_cnn"), (1, 8, 8), "digits", "features",
     "3 conv-BN-ReLU blocks (32/64/64) on 8x8 digits"),
    ("digits_resnet", _factory("digits_resnet"), (1, 32, 32), "digits32", "layers",
     "ResNet, 4 BasicBlocks (32@32x32, 64@16x16) on 32x32 digits"),
    ("digits_vit", _factory("digits_vit"), (1, 8, 8), "digits", "blocks",
     "ViT, 2x2 patches, width 64, 4 blocks x 4 heads on 8x8 digits"),
]

DEMO_MODELS = [s[0] for s in _SPECS]

for _name, _factory, _shape, _ds, _container, _desc in _SPECS:
    _facts = dict(_RESULTS.get(_name, {}))
    _extra = {"test_accuracy": float(_facts.get("test_accuracy", float("nan")))}
    _extra.update({k: v for k, v in _facts.items() if k != "test_accuracy"})
    _spec = ModelSpec(
        name=_name,
        factory=_factory,
        input_shape=_shape,
        dataset=_ds,
        weights=str(WEIGHTS_DIR / f"{_name}.safetensors"),
        task="classification",
        description=_desc,
        card=str(CARDS_DIR / f"{_name}.md"),
        block_container=_container,
        extra=_extra,
    )
    # overwrite: re-importing (e.g. importlib.reload) replaces our own entries
    register_model(_spec, overwrite=True)

__all__ = ["DEMO_MODELS"]
