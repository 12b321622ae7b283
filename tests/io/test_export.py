"""Export: every demo model, after weight + structured pruning and a cut, to every format,
verified against the in-memory model; atomic writes; recipes; ``core.load``."""
import json

import pytest
import torch
from safetensors import safe_open

from core.io import (
    EXPORTERS,
    Exporter,
    export_all,
    export_model,
    list_exporters,
    load,
    read_recipe,
    recipe_path,
    register_exporter,
    state_dict_hash,
)
from core.plan import Plan, apply
from core.prune import Prune
from core.sources.bases import load_base
from tests.helpers.exports import HalfWrite, WrongOutputs, full_plan
from tests.helpers.models import DEMO_MODELS

FORMATS = ["safetensors", "onnx", "pt2", "torchscript"]


def example(name: str, n: int = 16) -> torch.Tensor:
    from core.sources.datasets import get_dataset
    from core.sources.models import get_spec

    return get_dataset(get_spec(name).dataset).x_test[:n]


@pytest.fixture(scope="module", params=DEMO_MODELS)
def exported(request, tmp_path_factory):
    """(name, plan, model, folder, results): one export of each format per demo model."""
    name = request.param
    plan = full_plan(name)
    model = apply(plan)
    folder = tmp_path_factory.mktemp(f"export_{name}")
    results = export_all(model, plan, folder, name, FORMATS, example(name))
    return name, plan, model, folder, {r.format: r for r in results}


def test_every_format_is_registered():
    assert list_exporters() == FORMATS  # registration order: the order the app shows


def test_every_demo_model_exports_to_every_format_and_verifies(exported):
    name, plan, model, folder, results = exported
    assert set(results) == set(FORMATS)
    for fmt, r in results.items():
        assert r.error is None, (fmt, r.error)
        assert r.verified and r.max_abs_diff <= 1e-4 and r.agreement == 1.0, r
        assert r.dynamic_batch, (fmt, "a batch of another size should run")
        path = folder / f"{name}{EXPORTERS.get(fmt).suffix}"
        assert r.path == str(path) and r.bytes == path.stat().st_size > 0 and r.seconds > 0


def test_the_recipe_is_written_beside_every_export(exported):
    name, plan, model, folder, results = exported
    for r in results.values():
        assert r.recipe == str(folder / f"{name}.plan.json")
        assert Plan.load(r.recipe) == plan and read_recipe(r.path) == plan
    with safe_open(results["safetensors"].path, "pt") as f:  # and inside the safetensors file
        assert Plan.from_json(f.metadata()["prunescope.plan"]) == plan


def test_a_structurally_changed_model_exports_at_its_smaller_shapes(exported):
    import onnx

    name, plan, model, folder, results = exported
    base = load_base(name)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < sum(p.numel() for p in base.parameters())
    with safe_open(results["safetensors"].path, "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    onnx_model = onnx.load(results["onnx"].path)
    onnx_params = sum(int(torch.tensor(list(t.dims)).prod()) for t in onnx_model.graph.initializer)
    # the file holds the pruned weights (plus a few shape constants), not the base's
    assert n_params * 0.95 <= onnx_params <= n_params + 256
    assert onnx_params < sum(p.numel() for p in base.parameters())


def test_safetensors_load_rebuilds_base_plus_plan(exported):
    name, plan, model, folder, results = exported
    again = load(results["safetensors"].path)
    assert again is not model and state_dict_hash(again) == state_dict_hash(model)
    x = example(name, 4)
    with torch.inference_mode():
        assert torch.equal(again(x), model(x))


def test_onnx_is_one_file_with_a_symbolic_batch_dimension(tmp_path):
    import onnx
    import onnxruntime as ort

    model = apply(Plan("digits_cnn", (Prune(sparsity=0.3),)))
    r = export_model(model, Plan("digits_cnn", (Prune(sparsity=0.3),)), "onnx", tmp_path / "m.onnx",
                     example("digits_cnn"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.plan.json"]  # no external data
    dim0 = onnx.load(r.path).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value
    sess = ort.InferenceSession(r.path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: example("digits_cnn", 5).numpy()})[0]
    with torch.inference_mode():
        assert torch.allclose(torch.from_numpy(out), model(example("digits_cnn", 5)), atol=1e-4)


def test_masks_are_baked_into_the_exported_weights(tmp_path):
    plan = Plan("digits_mlp", (Prune(sparsity=0.7),))
    model = apply(plan)
    r = export_model(model, plan, "safetensors", tmp_path / "m.safetensors", example("digits_mlp"))
    with safe_open(r.path, "pt") as f:
        keys = list(f.keys())
        ws = [f.get_tensor(f"layers.{i}.weight") for i in (1, 3, 5)]
    zeros = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
    assert zeros == pytest.approx(0.7, abs=0.01) and not any("mask" in k or "orig" in k for k in keys)


def test_recipe_replay_gives_the_same_hash_twice():
    plan = full_plan("digits_cnn")
    replayed = Plan.from_json(plan.to_json())
    assert state_dict_hash(apply(plan)) == state_dict_hash(apply(replayed))


def test_state_dict_hash_sees_every_weight_name_and_dtype():
    m = load_base("digits_mlp")
    h = state_dict_hash(m)
    assert len(h) == 64 and h == state_dict_hash(load_base("digits_mlp"))
    changed = apply(Plan("digits_mlp", (Prune(sparsity=0.01),)))
    assert state_dict_hash(changed) != h
    assert state_dict_hash(torch.nn.Linear(2, 2).half()) != state_dict_hash(torch.nn.Linear(2, 2))
    bf = torch.nn.Linear(3, 2).to(torch.bfloat16)
    assert state_dict_hash(bf) == state_dict_hash(bf)


def test_export_does_not_change_the_model(tmp_path):
    model = apply(Plan("digits_mlp", (Prune(sparsity=0.5),)))
    before = state_dict_hash(model)
    model.train()
    export_model(model, Plan("digits_mlp"), "torchscript", tmp_path / "m.pt", example("digits_mlp"))
    assert state_dict_hash(model) == before and model.training


def test_a_failed_export_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setitem(EXPORTERS._items, "torchscript", HalfWrite())
    r = export_model(load_base("digits_mlp"), Plan("digits_mlp"), "torchscript", tmp_path / "m.pt",
                     example("digits_mlp"))
    assert r.error == "OSError: No space left on device" and not r.verified and r.path is None
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_keeps_the_previous_file(tmp_path, monkeypatch):
    (tmp_path / "m.pt").write_bytes(b"previous export")
    monkeypatch.setitem(EXPORTERS._items, "torchscript", WrongOutputs())
    r = export_model(load_base("digits_mlp"), Plan("digits_mlp"), "torchscript", tmp_path / "m.pt",
                     example("digits_mlp"))
    assert "shape" in r.error and r.path is None
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"] and (tmp_path / "m.pt").read_bytes() == b"previous export"


def test_one_failing_format_does_not_stop_the_others(tmp_path, monkeypatch):
    monkeypatch.setitem(EXPORTERS._items, "torchscript", HalfWrite())
    steps = []
    rs = export_all(load_base("digits_mlp"), Plan("digits_mlp"), tmp_path, "m", ["torchscript", "onnx"],
                    example("digits_mlp"), progress=lambda i, n, what: steps.append((i, n, what)))
    assert rs[0].error and rs[1].verified and rs[1].error is None
    assert steps == [(0, 2, "torchscript"), (1, 2, "onnx"), (2, 2, "done")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.plan.json"]


def test_unknown_format_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="onnx, pt2, safetensors, torchscript"):
        export_model(load_base("digits_mlp"), Plan("digits_mlp"), "tflite", tmp_path / "x", example("digits_mlp"))
    with pytest.raises(ValueError, match="tflite"):
        export_all(load_base("digits_mlp"), Plan("digits_mlp"), tmp_path, "x", ["onnx", "tflite"],
                   example("digits_mlp"))
    assert list(tmp_path.iterdir()) == []  # checked before anything is written


def test_a_new_exporter_joins_the_registry_with_the_decorator(tmp_path, monkeypatch):
    monkeypatch.setattr(EXPORTERS, "_items", dict(EXPORTERS._items))

    @register_exporter
    class Npz(Exporter):
        name, suffix = "npz_state", ".npz"

        def write(self, model, example, path, plan):
            import numpy as np

            with open(path, "wb") as f:
                np.savez(f, **{k: v.numpy() for k, v in model.state_dict().items()})

        def reload(self, path, device):
            import numpy as np

            from core.sources.models import build_model

            m = build_model("digits_mlp", load_weights=False)
            m.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(path).items()})
            return m.eval()

    assert "npz_state" in list_exporters()
    r = export_model(load_base("digits_mlp"), Plan("digits_mlp"), "npz_state", tmp_path / "w.npz",
                     example("digits_mlp"))
    assert r.verified and r.max_abs_diff == 0.0


def test_load_refuses_weights_that_do_not_fit_the_recipe(tmp_path):
    from safetensors.torch import save_file

    model = apply(Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.5),)))
    p = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(p),
              metadata={"prunescope.plan": Plan("digits_cnn").to_json()})
    with pytest.raises(ValueError, match="do not fit the model its recipe builds"):
        load(p)


def test_load_without_a_recipe_says_so(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(ValueError, match="carries no prunescope recipe and no bare.plan.json"):
        load(p)
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "missing.safetensors")


def test_recipe_path_is_beside_the_file():
    assert recipe_path("out/model.onnx").as_posix() == "out/model.plan.json"
    assert json.loads(full_plan("digits_mlp").to_json())["model"] == "digits_mlp"
