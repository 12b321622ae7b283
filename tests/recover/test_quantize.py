"""Quantize: int8 with onnxruntime on every demo model, agreement with the float model,
a smaller file, the last step of a plan, ONNX export, recipe replay."""
from __future__ import annotations

import pytest
import torch

from core.errors import PlanError, PrunescopeError
from core.plan import Plan, apply
from core.prune import Prune
from core.recover import Finetune, OrtModule, Quantize
from core.recover import training as ft_module


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_resnet", "digits_vit"])
def test_int8_agrees_with_the_float_model_on_the_full_split_and_is_smaller(name):
    from core.workspace import Workspace

    ws = Workspace(name)
    float_m = ws.base_metrics("full", latency=False)
    ws.add_step(Quantize())
    assert isinstance(ws.model, OrtModule)
    m = ws.metrics("full", latency=False)
    assert m.agreement >= 0.99, m.agreement  # predictions equal to the float model's
    assert abs(m.accuracy - float_m.accuracy) <= 0.01
    assert m.size_bytes <= 0.4 * float_m.size_bytes  # int8 weights (the benchmark reports the ratio)
    assert m.macs == float_m.macs and m.params == float_m.params


def test_quantize_must_be_the_last_step():
    plan = Plan("digits_mlp").then(Quantize()).then(Prune(sparsity=0.5))
    with pytest.raises(PlanError, match="must be the plan's last step"):
        apply(plan)


def test_a_recipe_with_prune_finetune_and_quantize_replays_and_exports_as_onnx(tmp_path):
    from core.io.export import export_model, state_dict_hash

    plan = (Plan("digits_cnn").then(Prune(criterion="l1", granularity="channel", sparsity=0.5))
            .then(Finetune(steps=30, loss="both", threads=torch.get_num_threads())).then(Quantize()))
    model = apply(plan)
    ft_module._MEMO.clear()
    again = apply(Plan.from_json(plan.to_json()))
    assert state_dict_hash(again) == state_dict_hash(model)  # the same weights and the same int8 file
    assert again.onnx_bytes == model.onnx_bytes
    x = torch.randn(8, 1, 8, 8)
    res = export_model(model, plan, "onnx", tmp_path / "m.onnx", x)
    assert res.verified and res.error is None and res.bytes == model.file_bytes and res.dynamic_batch
    with pytest.raises(PrunescopeError, match="exports as onnx only"):
        export_model(model, plan, "safetensors", tmp_path / "m.safetensors", x)
