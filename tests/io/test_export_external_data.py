"""ONNX weights over protobuf's 2 GB limit go to ``<name>.onnx.data`` beside ``<name>.onnx``.

No 2 GB model is built: the threshold is lowered so a demo model takes the same path."""
from __future__ import annotations

import shutil

import pytest
import torch

import core.io.exporters as E
from core.io import export_model
from core.io.exporters import onnx_external_data, relocate_external_data
from core.plan import Plan, apply
from core.prune import Prune


def _example(n: int = 8) -> torch.Tensor:
    from core.sources.datasets import get_dataset

    return get_dataset("digits").x_test[:n]


@pytest.fixture
def big(monkeypatch):
    """Every model counts as one whose weights need an external data file."""
    monkeypatch.setattr(E, "ONNX_EXTERNAL_DATA_BYTES", 0)


def test_external_weights_are_named_after_the_model_and_counted(tmp_path, big):
    plan = Plan("digits_cnn", (Prune(sparsity=0.3),))
    model = apply(plan)
    r = export_model(model, plan, "onnx", tmp_path / "m.onnx", _example())
    assert r.error is None and r.verified, r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data", "m.plan.json"]
    assert r.files == [str(tmp_path / "m.onnx"), str(tmp_path / "m.onnx.data")]
    assert r.bytes == (tmp_path / "m.onnx").stat().st_size + (tmp_path / "m.onnx.data").stat().st_size
    assert (tmp_path / "m.onnx.data").stat().st_size > (tmp_path / "m.onnx").stat().st_size  # the weights
    assert onnx_external_data(tmp_path / "m.onnx") == ["m.onnx.data"]


def test_the_exported_pair_runs_from_another_folder(tmp_path, big):
    import onnxruntime as ort

    plan = Plan("digits_cnn", (Prune(sparsity=0.3),))
    model = apply(plan)
    export_model(model, plan, "onnx", tmp_path / "a" / "m.onnx", _example())
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for f in ("m.onnx", "m.onnx.data"):
        shutil.copy(tmp_path / "a" / f, moved / f)
    sess = ort.InferenceSession(str(moved / "m.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: _example(5).numpy()})[0]
    with torch.inference_mode():
        assert torch.allclose(torch.from_numpy(out), model(_example(5)), atol=1e-4)


def test_a_one_file_export_removes_the_data_file_of_an_earlier_one(tmp_path, monkeypatch):
    plan = Plan("digits_mlp", (Prune(sparsity=0.3),))
    model = apply(plan)
    monkeypatch.setattr(E, "ONNX_EXTERNAL_DATA_BYTES", 0)
    export_model(model, plan, "onnx", tmp_path / "m.onnx", _example())
    assert (tmp_path / "m.onnx.data").exists()
    monkeypatch.setattr(E, "ONNX_EXTERNAL_DATA_BYTES", 1 << 40)
    r = export_model(model, plan, "onnx", tmp_path / "m.onnx", _example())
    assert r.verified and r.files == [str(tmp_path / "m.onnx")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.plan.json"]


def test_a_failed_export_with_external_data_leaves_nothing(tmp_path, big, monkeypatch):
    def broken(self, path, device):
        raise RuntimeError("cannot run it")

    monkeypatch.setattr(E.OnnxExporter, "reload", broken)
    plan = Plan("digits_cnn", (Prune(sparsity=0.3),))
    r = export_model(apply(plan), plan, "onnx", tmp_path / "m.onnx", _example())
    assert r.error and "cannot run it" in r.error and r.path is None
    assert list(tmp_path.iterdir()) == []


def test_relocate_gathers_per_tensor_files_into_one(tmp_path):
    """The TorchScript-based exporter writes one file per tensor for large models."""
    import onnx
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(torch.randn(4, 4).numpy(), "w")
    b = numpy_helper.from_array(torch.randn(4).numpy(), "b")
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], [w, b])
    m = helper.make_model(g)
    onnx.save_model(m, str(tmp_path / "t.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0)
    assert len(onnx_external_data(tmp_path / "t.onnx")) == 2
    relocate_external_data(tmp_path / "t.onnx", "final.onnx.data", tmp_path / "moved.bin")
    assert onnx_external_data(tmp_path / "t.onnx") == ["final.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved.bin", "t.onnx"]
