"""The bundled demo models: registered, committed weights load, accuracy, cost, export."""
from __future__ import annotations

import pytest
import torch

from core.sources.datasets import get_dataset
from core.sources.models import build_model, get_spec, list_models

NAMES = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_vit"]
MIN_ACC = {"digits_mlp": 0.95, "digits_cnn": 0.97, "digits_resnet": 0.97, "digits_vit": 0.95}


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_accurate(name):
    assert name in list_models()
    spec = get_spec(name)
    import demo_models

    assert name in demo_models.DEMO_MODELS
    model = build_model(name)  # loads the committed weights
    assert not model.training
    ds = get_dataset(spec.dataset)
    assert tuple(ds.x_test.shape[1:]) == tuple(spec.input_shape)
    with torch.no_grad():
        pred = torch.cat([model(ds.x_test[i:i + 256]).argmax(1) for i in range(0, len(ds.x_test), 256)])
    acc = (pred == ds.y_test).float().mean().item()
    assert acc >= MIN_ACC[name], f"{name}: test accuracy {acc:.4f}"
    assert abs(acc - spec.extra["test_accuracy"]) < 1e-3  # the recorded figure matches the weights
    assert spec.card_text().startswith(f"# {name}")
    assert spec.block_container and hasattr(model, spec.block_container)


def test_digits_split_deterministic_and_stratified():
    from demo_models.data import load_splits

    a, b = load_splits("digits"), load_splits("digits")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (1347, 1, 8, 8) and a.x_test.shape == (450, 1, 8, 8)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.classes == [str(i) for i in range(10)] and a.kind == "image"
    assert float(a.x_train.min()) >= -1.0 and float(a.x_train.max()) <= 1.0
    counts = torch.bincount(a.y_test, minlength=10)
    assert (counts > 0).all()
    frac_test = counts.float() / (counts + torch.bincount(a.y_train, minlength=10)).float()
    assert ((frac_test - 0.25).abs() < 0.02).all()  # stratified
    d32 = get_dataset("digits32")
    assert d32.x_test.shape == (450, 1, 32, 32)
    assert torch.equal(d32.y_test, a.y_test)


def test_resnet_costs_at_least_20m_macs():
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model("digits_resnet", load_weights=False)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 1, 32, 32))
    assert fc.get_total_flops() / 2 >= 20e6


@pytest.mark.parametrize("name", NAMES)
def test_torch_export(name):
    spec = get_spec(name)
    model = build_model(name)
    x = torch.randn(2, *spec.input_shape)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x), rtol=1e-4, atol=1e-4)
