"""Export of models whose output is a nest of tensors (issue 24): ONNX with outputs named after the
leaves, every format verified against PyTorch leaf by leaf."""
import onnx
import onnxruntime as ort
import pytest
import torch

from core.ground.outputs import leaves
from core.io import export_model
from core.plan import Plan, apply
from core.prune import Prune
from core.sources.bases import load_base
from tests.helpers.nest_models import NEST_MODELS, images, register_nest, unregister_nest

SUFFIX = {"onnx": ".onnx", "safetensors": ".safetensors", "pt2": ".pt2", "torchscript": ".pt"}
NAMES = {"two_heads": ["out", "aux"], "segmenter": ["out", "aux"], "pyramid": ["0", "1", "2"]}


@pytest.fixture(scope="module", params=sorted(NEST_MODELS))
def pruned(request):
    name = register_nest(f"nest_{request.param}_export_test", NEST_MODELS[request.param])
    plan = Plan(name, (Prune(sparsity=0.5),))
    yield request.param, plan, apply(plan, load_base(name))
    unregister_nest(name)


@pytest.mark.parametrize("fmt", sorted(SUFFIX))
def test_every_format_verifies_every_leaf_of_a_nest_model(pruned, fmt, tmp_path):
    kind, plan, model = pruned
    r = export_model(model, plan, fmt, tmp_path / f"m{SUFFIX[fmt]}", images(4))
    assert r.error is None and r.verified and r.dynamic_batch
    assert list(r.leaf_diffs) == NAMES[kind] and r.max_abs_diff == max(r.leaf_diffs.values())
    assert r.agreement is None  # no single class-score output to take an argmax agreement of


def test_onnx_outputs_are_named_after_the_leaves_and_match_torch(pruned, tmp_path):
    kind, plan, model = pruned
    r = export_model(model, plan, "onnx", tmp_path / "m.onnx", images(4))
    assert [o.name for o in onnx.load(r.path).graph.output] == NAMES[kind]
    sess = ort.InferenceSession(r.path, providers=["CPUExecutionProvider"])
    x = images(3, seed=5)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x.numpy()})))
    with torch.no_grad():
        want = leaves(model(x))
    for k, t in want.items():
        assert torch.allclose(torch.from_numpy(got[k]), t, atol=1e-4)


def test_a_file_whose_leaf_differs_is_not_verified(pruned, tmp_path, monkeypatch):
    from core.io import exporters

    kind, plan, model = pruned
    real = exporters.OnnxExporter.reload

    def shifted(self, path, device):
        run = real(self, path, device)
        return lambda x: {k: v + 1 for k, v in run(x).items()}

    monkeypatch.setattr(exporters.OnnxExporter, "reload", shifted)
    r = export_model(model, plan, "onnx", tmp_path / "m.onnx", images(4))
    assert not r.verified and all(v == pytest.approx(1.0, abs=1e-4) for v in r.leaf_diffs.values())


def test_a_single_tensor_model_keeps_its_one_output_named_output(tmp_path):
    from core.sources.datasets import get_dataset

    plan, model = Plan("digits_mlp", ()), load_base("digits_mlp")
    r = export_model(model, plan, "onnx", tmp_path / "m.onnx", get_dataset("digits").x_test[:8])
    assert r.verified and r.leaf_diffs.keys() == {"output"} and r.agreement == 1.0
    assert [o.name for o in onnx.load(r.path).graph.output] == ["output"]
