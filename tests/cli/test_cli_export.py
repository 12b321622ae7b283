"""CLI `apply` and `export`: in process through core.cli.main, plus one real `python -m core`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.io import state_dict_hash
from core.plan import Plan, apply
from core.prune import LayerOverride, Prune
from tests.helpers.exports import full_plan

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, (json.loads(cap.out) if code == 0 and cap.out.strip() else None), cap.err


@pytest.fixture(scope="module")
def cnn_recipe(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("recipes") / "cnn.plan.json"
    full_plan("digits_cnn").save(p)
    return p


@pytest.mark.slow
def test_apply_reproduces_the_plan_with_the_same_hash_every_time(cnn_recipe, capsys):
    hashes = []
    for _ in range(2):
        code, out, err = run(capsys, "apply", "digits_cnn", "--plan", str(cnn_recipe), "--json", "--no-latency")
        assert code == 0, err
        hashes.append(out["state_dict_hash"])
        assert Plan.from_dict(out["plan"]) == Plan.load(cnn_recipe)
    assert hashes[0] == hashes[1] == state_dict_hash(apply(Plan.load(cnn_recipe)))
    base_params = sum(p.numel() for p in apply(Plan("digits_cnn")).parameters())
    assert 0 < out["accuracy"] <= 1 and out["params"] < base_params


def test_apply_can_export_and_verify(cnn_recipe, tmp_path, capsys):
    target = tmp_path / "out" / "cnn.pt2"
    code, out, err = run(capsys, "apply", "digits_cnn", "--plan", str(cnn_recipe), "--export", str(target),
                         "--verify", "--json", "--no-latency")
    assert code == 0, err
    ex = out["export"]
    assert ex["format"] == "pt2" and ex["verified"] and ex["path"] == str(target)  # format from the suffix
    assert ex["state_dict_hash"] == out["state_dict_hash"]
    assert Plan.load(tmp_path / "out" / "cnn.plan.json") == Plan.load(cnn_recipe)


def test_export_prints_path_format_bytes_diff_agreement_verified(cnn_recipe, tmp_path, capsys):
    target = tmp_path / "m.onnx"
    code, out, err = run(capsys, "export", "digits_cnn", "--plan", str(cnn_recipe), "--format", "onnx",
                         "--out", str(target), "--verify", "--json")
    assert code == 0, err
    assert {"path", "format", "bytes", "max_abs_diff", "agreement", "verified", "seconds"} <= set(out)
    assert out["path"] == str(target) and out["format"] == "onnx" and out["bytes"] == target.stat().st_size
    assert out["verified"] and out["max_abs_diff"] <= 1e-4 and out["agreement"] == 1.0
    assert (tmp_path / "m.plan.json").exists()


def test_export_without_verify_reports_unverified(tmp_path, capsys):
    code, out, err = run(capsys, "export", "digits_mlp", "--format", "safetensors", "--out",
                         str(tmp_path / "base.safetensors"), "--json")
    assert code == 0, err
    assert out["verified"] is False and out["max_abs_diff"] is None and out["bytes"] > 0
    assert Plan.load(tmp_path / "base.plan.json") == Plan("digits_mlp")


def test_a_recipe_for_another_model_is_refused_without_running_it(cnn_recipe, tmp_path, capsys, monkeypatch):
    import core.plan.build as build
    import core.workspace.plans as workspace

    def never(*a, **k):
        raise AssertionError("a foreign recipe's steps ran")

    for mod in (build, workspace):
        monkeypatch.setattr(mod, "apply_with_reports", never)
        monkeypatch.setattr(mod, "apply", never)
    code, out, err = run(capsys, "apply", "digits_mlp", "--plan", str(cnn_recipe), "--json")
    monkeypatch.undo()
    assert code == 2 and out is None
    assert "made for model 'digits_cnn', not 'digits_mlp'" in err
    assert "prunescope apply digits_cnn --plan" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    code, _, err = run(capsys, "export", "digits_mlp", "--plan", str(cnn_recipe), "--format", "onnx",
                       "--out", str(tmp_path / "x.onnx"))
    assert code == 2 and "not 'digits_mlp'" in err and not (tmp_path / "x.onnx").exists()


def test_a_step_that_does_not_fit_its_own_model_is_named(tmp_path, capsys):
    p = tmp_path / "p.json"
    Plan("digits_mlp", (Prune(sparsity=0.3),
                        Prune(sparsity=0.2, layers=(LayerOverride(layer="features.9", sparsity=0.5),)))).save(p)
    code, _, err = run(capsys, "apply", "digits_mlp", "--plan", str(p), "--json")
    assert code == 2
    assert "does not fit 'digits_mlp': step 2 (prune weight" in err and "features.9" in err


def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "export", "digits_mlp", "--format", "tflite", "--out", str(tmp_path / "x"))
    assert code == 2 and "invalid choice: 'tflite'" in err
    code, _, err = run(capsys, "apply", "digits_mlp", "--plan", str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in err
    Plan("digits_mlp").save(tmp_path / "p.json")
    code, _, err = run(capsys, "apply", "digits_mlp", "--plan", str(tmp_path / "p.json"), "--export",
                       str(tmp_path / "m.bin"), "--no-latency")
    assert code == 2 and "cannot tell the format from" in err and "--format" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def test_a_failed_export_exits_2_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    from core.io import EXPORTERS
    from tests.helpers.exports import HalfWrite

    monkeypatch.setitem(EXPORTERS._items, "torchscript", HalfWrite())
    code, _, err = run(capsys, "export", "digits_mlp", "--format", "torchscript", "--out", str(tmp_path / "m.pt"))
    assert code == 2 and "No space left on device" in err and "nothing written" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["under a file", "too long"])
def test_an_export_path_that_cannot_be_written_exits_2_with_one_line(tmp_path, capsys, where):
    """Issue 22: a path under a file, or a name too long for the file system, was a traceback."""
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "m.onnx" if where == "under a file" else tmp_path / ("m" * 250 + ".onnx")
    code, _, err = run(capsys, "export", "digits_mlp", "--format", "onnx", "--out", str(out))
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert ("is a file, not a folder" if where == "under a file" else "choose a shorter name") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_export_whose_recipe_cannot_be_written_keeps_the_previous_pair_and_says_so(tmp_path, capsys):
    """Issue 22: a folder at x.plan.json: "no file written" although x.onnx was replaced."""
    out = tmp_path / "x.onnx"
    code, _, err = run(capsys, "export", "digits_mlp", "--format", "onnx", "--out", str(out), "--json")
    assert code == 0, err
    before = out.read_bytes()
    rp = tmp_path / "x.plan.json"
    rp.unlink()
    rp.mkdir()
    code, _, err = run(capsys, "export", "digits_mlp", "--format", "onnx", "--out", str(out),
                       "--plan", str(_mlp_plan(tmp_path)))
    assert code == 2 and "x.plan.json" in err and "is a folder" in err and "Traceback" not in err
    assert out.read_bytes() == before and rp.is_dir()


def _mlp_plan(folder: Path) -> Path:
    p = folder / "other.json"
    Plan("digits_mlp", (Prune(sparsity=0.5),)).save(p)
    return p


@pytest.mark.slow
def test_python_m_core_export_runs_and_its_hash_matches_this_process(tmp_path):
    plan = full_plan("digits_mlp")
    recipe = tmp_path / "mlp.json"
    plan.save(recipe)
    target = tmp_path / "mlp.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "core", "export", "digits_mlp", "--plan", str(recipe),
                           "--format", "torchscript", "--out", str(target), "--verify", "--json",
                           "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["verified"] and Path(out["path"]) == target and target.exists()
    assert out["state_dict_hash"] == state_dict_hash(apply(plan))  # identical across processes
