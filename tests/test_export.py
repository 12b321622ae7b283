import json
import urllib.error
import urllib.request

import pytest
import torch

from core.apply import apply
from core.export import EXPORTERS, export_all, export_model, load, read_recipe, state_dict_hash
from core.models import load_base
from core.plan import Plan, Prune
from tests.conftest import DEMO_MODELS

FORMATS = ["safetensors", "onnx", "pt2", "torchscript"]


def _plan(name: str) -> Plan:
    steps = [Prune(sparsity=0.5)]
    structured = {"digits_mlp": "neuron", "digits_cnn": "channel", "digits_resnet": "channel",
                  "digits_vit": "head"}[name]
    steps.append(Prune(granularity=structured, sparsity=0.25))
    if name == "digits_resnet":
        from core.surgery import Cut

        steps.append(Cut(blocks=("layers.3",)))
    return Plan(name, tuple(steps))


def _example(name):
    from core.data import get_dataset
    from core.models import get_spec

    return get_dataset(get_spec(name).dataset).x_test[:8]


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_every_demo_model_exports_to_every_format_and_verifies(name, tmp_path):
    plan = _plan(name)
    model = apply(plan)
    base_params = sum(p.numel() for p in load_base(name).parameters())
    assert sum(p.numel() for p in model.parameters()) < base_params  # smaller shapes
    results = export_all(model, plan, tmp_path, name, FORMATS, _example(name))
    for r in results:
        assert r.error is None, (r.format, r.error)
        assert r.verified and r.max_abs_diff <= 1e-4 and r.agreement == 1.0, r
        assert r.bytes > 0 and (tmp_path / f"{name}{EXPORTERS.get(r.format).suffix}").exists()
        assert read_recipe(tmp_path / f"{name}{EXPORTERS.get(r.format).suffix}") == plan
    reloaded = load(tmp_path / f"{name}.safetensors")
    assert state_dict_hash(reloaded) == state_dict_hash(model)


def test_onnx_has_a_dynamic_batch(tmp_path):
    import onnxruntime as ort

    model = apply(Plan("digits_cnn", (Prune(sparsity=0.3),)))
    r = export_model(model, Plan("digits_cnn"), "onnx", tmp_path / "m.onnx", _example("digits_cnn"))
    sess = ort.InferenceSession(r.path, providers=["CPUExecutionProvider"])
    x = _example("digits_cnn")[:5].numpy()
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert out.shape == (5, 10)


def test_recipe_replay_gives_the_same_hash_twice():
    plan = _plan("digits_cnn")
    assert state_dict_hash(apply(plan)) == state_dict_hash(apply(Plan.from_json(plan.to_json())))


def test_a_failed_export_leaves_no_file(tmp_path, monkeypatch):
    from core import export as ex

    def boom(model, example, path, plan):
        path.write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setitem(ex.EXPORTERS._items, "torchscript",
                        ex.Exporter("torchscript", ".pt", boom, ex._run_torchscript))
    r = export_model(load_base("digits_mlp"), Plan("digits_mlp"), "torchscript", tmp_path / "m.pt",
                     _example("digits_mlp"))
    assert r.error and "disk full" in r.error and not r.verified
    assert list(tmp_path.iterdir()) == []


def test_one_failing_format_does_not_stop_the_others(tmp_path, monkeypatch):
    from core import export as ex

    def boom(*a):
        raise ValueError("nope")

    monkeypatch.setitem(ex.EXPORTERS._items, "pt2", ex.Exporter("pt2", ".pt2", boom, ex._run_pt2))
    rs = export_all(load_base("digits_mlp"), Plan("digits_mlp"), tmp_path, "m", ["pt2", "torchscript"],
                    _example("digits_mlp"))
    assert rs[0].error and rs[1].verified


def test_unknown_format_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid export format names: onnx, pt2, safetensors, torchscript"):
        export_model(load_base("digits_mlp"), Plan("digits_mlp"), "tflite", tmp_path / "x", _example("digits_mlp"))


def test_netron_serves_only_the_model_and_stops(tmp_path):
    from core.netron_view import _servers, onnx_for_view, serve_file, stop_all

    p = onnx_for_view(load_base("digits_mlp"), _example("digits_mlp"), tmp_path, "digits_mlp")
    (tmp_path / "secret.txt").write_text("sibling")
    url = serve_file(p)
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url) as r:
        assert r.status == 200
    with urllib.request.urlopen(url + "data/digits_mlp.onnx") as r:
        assert r.read() == p.read_bytes()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url + "data/secret.txt")
    folder = _servers[-1][1]
    assert [f.name for f in folder.iterdir()] == ["digits_mlp.onnx"]
    stop_all()
    assert not folder.exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_cli_apply_and_export(tmp_path, capsys):
    from core.cli import main

    plan = tmp_path / "p.json"
    _plan("digits_cnn").save(plan)
    hashes = []
    for _ in range(2):
        assert main(["apply", "digits_cnn", "--plan", str(plan), "--json", "--no-latency"]) == 0
        hashes.append(json.loads(capsys.readouterr().out)["state_dict_hash"])
    assert hashes[0] == hashes[1]
    out = tmp_path / "m.onnx"
    assert main(["export", "digits_cnn", "--plan", str(plan), "--format", "onnx", "--out", str(out),
                 "--verify", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["verified"] and d["path"] == str(out) and d["bytes"] == out.stat().st_size
    assert (tmp_path / "m.plan.json").exists()


def test_cli_recipe_for_the_wrong_model_fails_clearly(tmp_path, capsys):
    from core.cli import main

    plan = tmp_path / "p.json"
    _plan("digits_cnn").save(plan)
    assert main(["apply", "digits_mlp", "--plan", str(plan), "--json"]) == 2
    err = capsys.readouterr().err
    assert "made for model 'digits_cnn', not 'digits_mlp'" in err and "first step that does not fit" in err
