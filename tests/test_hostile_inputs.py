"""Hostile and mistaken input, table-driven: the CLI exits 2 with one line naming what was
wrong, the Python API raises a PrunescopeError, and nothing is written or deleted."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.errors import PrunescopeError
from core.plan import FORMAT, Plan
from core.prune import Prune

MODEL = "digits_mlp"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*")) if not p.is_fifo()}


@pytest.fixture
def files(tmp_path):
    """A folder of good and bad inputs; the test checks it is left exactly as it was."""
    good = tmp_path / "good.json"
    Plan(MODEL, (Prune(sparsity=0.3),)).save(good)
    (tmp_path / "cnn.json").write_text(Plan("digits_cnn", (Prune(sparsity=0.3),)).to_json())
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "notjson.json").write_text("{prune everything")
    (tmp_path / "latin1.json").write_bytes("{\"model\": \"caf\xe9\"}".encode("latin-1"))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "inf.json").write_text('{"format": "%s", "model": "%s", "steps": [{"op": "prune", '
                                       '"threshold": Infinity}]}' % (FORMAT, MODEL))
    (tmp_path / "heal_forever.json").write_text(json.dumps(
        {"format": FORMAT, "model": MODEL, "steps": [{"op": "heal", "steps": 10**9}]}))
    (tmp_path / "huge_batch.json").write_text(json.dumps(
        {"format": FORMAT, "model": MODEL, "steps": [{"op": "heal", "batch_size": 10**10}]}))
    (tmp_path / "many_steps.json").write_text(json.dumps(
        {"format": FORMAT, "model": MODEL, "steps": [{"op": "prune", "sparsity": 0.1}] * 20_000}))
    (tmp_path / "unknown_op.json").write_text(json.dumps({"format": FORMAT, "model": MODEL,
                                                          "steps": [{"op": "rm -rf"}]}))
    (tmp_path / "old_format.json").write_text(json.dumps({"format": "prunescope.plan/0", "model": MODEL}))
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    (tmp_path / "extra_field.json").write_text(json.dumps(
        {"format": FORMAT, "model": MODEL, "steps": [{"op": "prune", "sparsity": 0.1, "exec": "x"}]}))
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04\x95 a pickle, not safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "subdir").mkdir()
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "afile").write_text("a file, not a folder")
    return tmp_path


# (argv with {d} for the folder, what stderr must say)
CLI_CASES = [
    (["prune", MODEL, "--sparsity", "1.5"], "prune.sparsity must be a finite number in [0, 1]"),
    (["prune", MODEL, "--sparsity", "-0.1"], "prune.sparsity must be a finite number in [0, 1]"),
    (["prune", MODEL, "--sparsity", "nan"], "got nan"),
    (["prune", MODEL, "--threshold", "inf"], "prune.threshold must be a finite number"),
    (["prune", MODEL], "give --sparsity S"),
    (["prune", MODEL, "--sparsity", "0.5", "--criterion", "nope"], "unknown criterion 'nope'; valid criterion"),
    (["prune", MODEL, "--sparsity", "0.5", "--criterion", "x" * 5_000_000], "characters)"),
    (["prune", MODEL, "--sparsity", "0.5", "--seed", str(10**40)], "prune.seed must be an integer in [0,"),
    (["prune", MODEL, "--sparsity", "0.5", "--seed", "-1"], "prune.seed must be an integer in [0,"),
    (["prune", MODEL, "--layer", "noequals"], "--layer expects NAME=S"),
    (["prune", MODEL, "--layer", "layers.1=abc"], "is not a number"),
    (["prune", MODEL, "--layer", "nope=0.5"], "not prunable layers"),
    (["prune", MODEL, "--layer", "layers.1=2"], "must be a finite number in [0, 1]"),
    (["prune", MODEL, "--sparsity", "0.5", "--granularity", "head"], "no prunable attention modules"),
    (["prune", MODEL, "--sparsity", "0.5", "--granularity", "blocks"], "invalid choice"),
    (["prune", MODEL, "--sparsity", "0.5", "--granularity", "channel"], "no prunable convolutions"),
    (["prune", MODEL, "--sparsity", "0.5", "--device", "foo"], "device must be 'auto' or a device name"),
    (["prune", MODEL, "--sparsity", "0.5", "--device", "cuda:7"], "is not available"),
    (["prune", "no_such_model", "--sparsity", "0.5"], "unknown model 'no_such_model'"),
    (["prune", MODEL, "--sparsity", "0.5", "--save-plan", "{d}/subdir"], "cannot write the recipe"),
    (["prune", MODEL, "--sparsity", "0.5", "--save-plan", "{d}/afile/p.json"], "cannot write the recipe"),
    (["prune", MODEL, "--sparsity", "0.5", "--save-plan", "/proc/no/p.json"], "cannot write the recipe"),
    (["evaluate", MODEL, "--plan", "{d}/missing.json"], "does not exist"),
    (["evaluate", MODEL, "--plan", "{d}/subdir"], "is not a regular file"),
    (["evaluate", MODEL, "--plan", "{d}/fifo.json"], "is not a regular file"),
    (["evaluate", MODEL, "--plan", "/dev/zero"], "is not a regular file"),
    (["evaluate", MODEL, "--plan", "{d}/empty.json"], "is not valid JSON"),
    (["evaluate", MODEL, "--plan", "{d}/notjson.json"], "is not valid JSON"),
    (["evaluate", MODEL, "--plan", "{d}/latin1.json"], "is not UTF-8"),
    (["evaluate", MODEL, "--plan", "{d}/deep.json"], "nested too deeply"),
    (["evaluate", MODEL, "--plan", "{d}/inf.json"], "strict JSON"),
    (["evaluate", MODEL, "--plan", "{d}/heal_forever.json"], "heal.steps must be an integer in [0, 100000]"),
    (["evaluate", MODEL, "--plan", "{d}/huge_batch.json"], "heal.batch_size must be an integer in [1, 4096]"),
    (["evaluate", MODEL, "--plan", "{d}/many_steps.json"], "at most 1000 steps"),
    (["evaluate", MODEL, "--plan", "{d}/unknown_op.json"], "unknown op 'rm -rf'"),
    (["evaluate", MODEL, "--plan", "{d}/old_format.json"], "recipe format must be 'prunescope.plan/1'"),
    (["evaluate", MODEL, "--plan", "{d}/list.json"], "must be a JSON object"),
    (["evaluate", MODEL, "--plan", "{d}/extra_field.json"], "unknown field(s) ['exec']"),
    (["evaluate", MODEL, "--plan", "{d}/cnn.json"], "is for model 'digits_cnn', not 'digits_mlp'"),
    (["apply", MODEL, "--plan", "{d}/cnn.json"], "made for model 'digits_cnn', not 'digits_mlp'"),
    (["apply", MODEL, "--plan", "{d}/good.json", "--export", "{d}/good.json"], "is the --plan file"),
    (["apply", MODEL, "--plan", "{d}/good.json", "--export", "{d}/m.safetensors", "--format", "onnx"],
     "a onnx export must end in '.onnx'"),
    (["export", MODEL, "--format", "onnx", "--out", "{d}/m.safetensors"], "a onnx export must end in '.onnx'"),
    (["export", MODEL, "--plan", "{d}/good.json", "--format", "safetensors", "--out", "{d}/good.json"],
     "is the --plan file"),
    (["cut", "digits_resnet", "--block", "layers.9"], "not in the model"),
    (["cut", "digits_resnet", "--block", "layers.1", "--bridge", "magic"], "cut.bridge must be one of"),
    (["cut", "digits_resnet", "--block", "layers.1", "--block", "layers.1"], "no repeats"),
    (["paste", "digits_resnet", "--block", "layers.1", "--at", "-1"], "paste.at must be an integer in [0,"),
    (["paste", "digits_resnet", "--block", "layers.1", "--at", "99"], "paste.at must be in [0,"),
    (["paste", "digits_resnet", "--block", "layers.1", "--at", "1", "--from", "nope"], "unknown model 'nope'"),
    (["blocks", "digits_resnet", "--container", "nope"], "not found in the model"),
    (["register", "../x", "--factory", "torch.nn:Linear", "--synthetic", "20", "--input-shape", "16"],
     "entry.name must be 1 to 64 letters"),
    (["register", "hostile_n", "--factory", "torch.nn:Linear", "--synthetic", str(10**12), "--input-shape", "16"],
     "data.n must be an integer in [8, 100000], got 1000000000000"),
    (["register", "hostile_f", "--factory", "os.system", "--synthetic", "20", "--input-shape", "16"],
     "entry.factory must be an importable 'package.module:function'"),
    (["register", "hostile_sz", "--factory", "torch.nn:Linear", "--data", "{d}/subdir", "--image-size", "8,8,8"],
     "data.size must be 2 positive whole numbers, height and width"),
]


@pytest.mark.parametrize("argv, message", CLI_CASES, ids=[" ".join(a)[:60] for a, _ in CLI_CASES])
def test_cli_bad_input_exits_2_with_one_line_and_touches_no_file(files, capsys, argv, message):
    before = _snapshot(files)
    code = main([a.format(d=files) for a in argv] + ["--no-latency"] * (argv[0] in ("prune", "evaluate",
                                                                                      "cut", "paste")))
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[:2000]
    assert message in lines[0], lines[0][:500]
    assert len(lines[0]) < 2_600
    assert _snapshot(files) == before


def _api_cases(d: Path):
    from core.io import export_model, load
    from core.sources.entries import data_from_path, register
    from core.sources.models import register_factory
    from core.sources.weights import load_state_dict_file
    from core.workspace import Workspace

    ws = Workspace(MODEL, "cpu", latency_time=0.01)
    x = ws.evalset.quick()[0][:4]
    return [
        (lambda: Workspace(MODEL, device=3), "device must be 'auto' or a device name"),
        (lambda: Workspace(MODEL, device="foo"), "device must be 'auto' or a device name"),
        (lambda: Workspace(MODEL, latency_batch=0), "latency_batch must be an integer in [1, 65536]"),
        (lambda: Workspace(MODEL, quick_size=-5), "quick_size must be an integer"),
        (lambda: Workspace("nope"), "unknown model 'nope'"),
        (lambda: ws.set_plan(Plan("digits_cnn", (Prune(sparsity=0.5),))), "this plan is for model 'digits_cnn'"),
        (lambda: ws.evaluate_plan(Plan("digits_cnn", (Prune(sparsity=0.5),))), "this plan is for model"),
        (lambda: ws.set_plan("not a plan"), "set_plan needs a Plan"),
        (lambda: ws.remove_step(3), "there is no step 3"),
        (lambda: ws.model_before(9), "no model before step 9"),
        (lambda: Prune(sparsity=math.inf), "prune.sparsity must be"),
        (lambda: Prune(sparsity=0.1, seed=10**40), "prune.seed must be"),
        (lambda: Prune(criterion="l1", granularity="everything", sparsity=0.1), "prune.granularity must be"),
        (lambda: Plan(MODEL, (Prune(sparsity=0.1),) * 2000), "at most 1000 steps"),
        (lambda: Plan.from_json("{" * 10), "is not valid JSON"),
        (lambda: export_model(ws.model, Plan("digits_cnn"), "onnx", d / "m.onnx", x, model_name=MODEL),
         "the plan is for model 'digits_cnn'"),
        (lambda: export_model(ws.model, ws.plan, "onnx", d / "m.safetensors", x), "must end in '.onnx'"),
        (lambda: export_model(ws.model, Plan("digits_resnet"), "onnx", d / "m.onnx", x),  # the model's own name
         "the plan is for model 'digits_resnet', the model exported is 'digits_mlp'"),
        (lambda: export_model(ws.model, Plan("digits_resnet"), "onnx", d / "m.onnx", x, model_name="digits_resnet"),
         "takes inputs of shape (1, 32, 32)"),
        (lambda: load(d / "pickle.safetensors"), "not a readable safetensors file"),
        (lambda: load(d / "empty.safetensors"), "not a readable safetensors file"),
        (lambda: load(d / "missing.safetensors"), "does not exist"),
        (lambda: load_state_dict_file(d / "pickle.safetensors"), "not a readable safetensors file"),
        (lambda: register_factory("demo_models.nets:DigitsMLP", weights=None, dataset="digits", input_shape="abc",
                                  name="hostile_shape"), "input_shape must be a tuple of positive integers"),
        (lambda: register_factory("builtins:dict", weights=None, dataset="digits", input_shape=(1, 8, 8),
                                  name="hostile_dict") and Workspace("hostile_dict"), "returned a dict, not a torch"),
        (lambda: register_factory("os:system", weights=None, dataset="digits", input_shape=(1, 8, 8),
                                  name="hostile_fn") and Workspace("hostile_fn"), "raised TypeError: system()"),
        (lambda: register_factory("no.such.module:fn", weights=None, dataset="digits", input_shape=(1, 8, 8)),
         "cannot import module 'no.such.module'"),
        (lambda: register_factory("nocolon", weights=None, dataset="digits", input_shape=(1, 8, 8)),
         "expected 'package.module:function'"),
        (lambda: register("hostile_name\n", factory="torch.nn:Flatten", data={"kind": "synthetic", "n": 20},
                          input_shape=(4,)), "entry.name must be 1 to 64 letters"),
        (lambda: register("hostile_keys", factory="torch.nn:Flatten", data={"kind": "tensors", "path": str(d / "x.npz"),
                                                                              "exec": "rm -rf"}),
         "tensors data takes the keys path; unknown: ['exec']"),
        (lambda: register("hostile_kind", factory="torch.nn:Flatten", data={"kind": "http", "path": "http://x"}),
         "data.kind must be one of dataset, tensors, images, csv, text, synthetic"),
        (lambda: register("hostile_path", factory="torch.nn:Flatten", data={"kind": "csv", "path": "a\x00b"}),
         "data.path must be the path of a file or folder"),
        (lambda: register("hostile_shape2", factory="torch.nn:Flatten", data={"kind": "synthetic", "n": 20},
                          input_shape=(10**40,) * 20), "entry.input_shape must be 1 to 8 positive whole numbers"),
        (lambda: register("hostile_kwargs", factory="torch.nn:Flatten", kwargs="start_dim=1",
                          data={"kind": "synthetic", "n": 20}, input_shape=(4,)), "register: kwargs must be a dict"),
        (lambda: data_from_path(str(d / "subdir"), size=(0, 8)), "data.size must be 2 positive whole numbers"),
    ]


@pytest.fixture
def no_hostile_models_left():
    yield
    from core.sources.bases import forget_base
    from core.sources.models import MODELS

    for name in [n for n in MODELS.names() if n.startswith("hostile_") or n in ("no.such.module:fn", "nocolon")]:
        MODELS.unregister(name)
        forget_base(name)


def test_python_api_bad_input_raises_one_error_family(files, no_hostile_models_left):
    before = _snapshot(files)
    cases = _api_cases(files)
    for fn, message in cases:
        with pytest.raises(PrunescopeError) as err:
            fn()
        assert message in str(err.value), (message, str(err.value)[:500])
    assert len(cases) + len(CLI_CASES) >= 60
    assert _snapshot(files) == before


def test_the_app_shows_bad_input_as_an_error_and_keeps_the_plan(monkeypatch):
    from core.errors import PlanError
    from core.workspace import Workspace
    from tests.helpers.app import new_app, workspace

    at = new_app(MODEL)
    at.slider(key="global_sparsity").set_value(0.4).run()
    ws = workspace(at)
    plan, history = ws.plan, list(ws.history)
    real = Workspace.set_plan

    def refuse(self, new, **kw):  # what any step that does not fit raises
        raise PlanError(0, new.steps[-1], "layer override(s) ['nope'] are not prunable layers")

    monkeypatch.setattr(Workspace, "set_plan", refuse)
    at.slider(key="global_sparsity").set_value(0.7).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "step 1 (prune weight by l1: sparsity 70.0%): layer override(s) ['nope'] are not prunable layers"]
    assert not any("Traceback" in x.label for x in at.expander)  # a mistake, not a bug
    assert workspace(at).plan == plan and workspace(at).history == history
    monkeypatch.setattr(Workspace, "set_plan", real)


def test_torch_state_dict_shape_mismatch_names_the_key(tmp_path):
    from core.sources.weights import load_error_summary

    m = torch.nn.Sequential(torch.nn.Linear(4, 3))
    try:
        m.load_state_dict({"0.weight": torch.zeros(5, 4), "0.bias": torch.zeros(3)})
    except RuntimeError as exc:
        text = load_error_summary(exc)
    assert "size mismatch for 0.weight" in text and "Error(s)" not in text


def test_apply_refuses_a_base_of_another_model():
    from core.plan import apply
    from core.sources.bases import load_base

    with pytest.raises(PrunescopeError, match="the plan is for model 'digits_cnn', but the base given has other"):
        apply(Plan("digits_cnn", (Prune(sparsity=0.5),)), load_base(MODEL))


def test_a_reader_that_closes_early_is_not_an_error():
    import subprocess
    import sys

    p = subprocess.run(f"{sys.executable} -m core criteria --json | head -c1", shell=True, capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parents[1])
    assert p.stdout == "[" and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
