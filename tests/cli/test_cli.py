import json
import subprocess
import sys

import pytest

from core.cli import main
from core.plan import Plan
from tests.helpers.cli import run


def test_models_json_lists_name_params_task(capsys):
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    rows = json.loads(out)
    names = {r["name"] for r in rows}
    assert {"digits_mlp", "digits_cnn", "digits_resnet", "digits_vit"} <= names
    assert all(isinstance(r["params"], int) and r["task"] == "classification" for r in rows)


def test_evaluate_json_has_the_metrics_object(capsys):
    code, out, _ = run(capsys, "evaluate", "digits_mlp", "--json", "--device", "cpu")
    assert code == 0
    d = json.loads(out)
    for k in ("model", "accuracy", "loss", "per_class_accuracy", "params", "nonzero_params", "macs",
              "size_bytes", "latency_ms"):
        assert k in d
    assert set(d["latency_ms"]) >= {"median", "iqr", "batch_size", "threads", "device"}
    assert d["model"] == "digits_mlp" and d["accuracy"] > 0.9


def test_prune_saves_a_plan_that_evaluate_replays(capsys, tmp_path):
    plan = tmp_path / "p.json"
    code, out, _ = run(capsys, "prune", "digits_mlp", "--sparsity", "0.5", "--layer", "layers.3=0.9",
                       "--save-plan", str(plan), "--json", "--no-latency", "--full")
    assert code == 0
    d = json.loads(out)
    assert 0.5 < d["sparsity"] < 0.9  # half of the others, 90% of layers.3
    p = Plan.load(plan)
    assert p.steps[0].override_for("layers.3").sparsity == 0.9
    code, out2, _ = run(capsys, "evaluate", "digits_mlp", "--plan", str(plan), "--json", "--no-latency", "--full")
    assert code == 0 and json.loads(out2)["accuracy"] == d["accuracy"]


def test_prune_by_threshold(capsys):
    code, out, _ = run(capsys, "prune", "digits_mlp", "--threshold", "0.05", "--json", "--no-latency")
    assert code == 0 and 0 < json.loads(out)["sparsity"] < 1


@pytest.mark.parametrize("argv, msg", [
    (["evaluate", "nope", "--json"], "unknown model 'nope'"),
    (["prune", "digits_mlp", "--sparsity", "1.5", "--json"], "prune.sparsity must be a finite number in [0, 1]"),
    (["prune", "digits_mlp", "--json"], "give --sparsity"),
    (["prune", "digits_mlp", "--sparsity", "0.5", "--criterion", "nope"], "unknown criterion 'nope'"),
    (["prune", "digits_mlp", "--sparsity", "0.5", "--layer", "oops"], "--layer expects NAME=S"),
    (["prune", "digits_mlp", "--sparsity", "0.5", "--layer", "nope=0.5", "--no-latency"], "not prunable layers"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, msg):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert msg in err and len(err.strip().splitlines()) == 1


def test_malformed_plan_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "prunescope.plan/1", "model": "digits_mlp", "steps": [{"op": "prune"}]}')
    code, _, err = run(capsys, "evaluate", "digits_mlp", "--plan", str(bad))
    assert code == 2 and "step 0 (prune)" in err
    bad.write_text("not json")
    code, _, err = run(capsys, "evaluate", "digits_mlp", "--plan", str(bad))
    assert code == 2 and "not valid JSON" in err
    code, _, err = run(capsys, "evaluate", "digits_mlp", "--plan", str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in err


def test_plan_for_another_model_exits_2(capsys, tmp_path):
    p = tmp_path / "p.json"
    Plan("digits_cnn").save(p)
    code, _, err = run(capsys, "evaluate", "digits_mlp", "--plan", str(p))
    assert code == 2 and "is for model 'digits_cnn'" in err


def test_console_entry_points_run():
    out = subprocess.run([sys.executable, "-m", "core", "prune", "digits_mlp", "--sparsity", "0.3", "--json",
                          "--no-latency"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sparsity"] == pytest.approx(0.3, abs=0.05)
    bad = subprocess.run([sys.executable, "-m", "core", "prune", "nope", "--sparsity", "0.3"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown model" in bad.stderr


def test_a_bug_exits_1_with_its_traceback_and_a_user_error_exits_2(capsys, monkeypatch):
    from core.cli import COMMANDS
    from core.errors import ModelError

    def buggy(args):
        raise KeyError("internal")

    def mistaken(args):
        raise ModelError("the model has no such layer; layers: a, b")

    fn = COMMANDS.get("criteria")
    monkeypatch.setitem(COMMANDS._items, "criteria", buggy)
    buggy.cli_help, buggy.cli_arguments = fn.cli_help, fn.cli_arguments
    assert main(["criteria", "--json"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback" in err and "KeyError: 'internal'" in err
    monkeypatch.setitem(COMMANDS._items, "criteria", mistaken)
    mistaken.cli_help, mistaken.cli_arguments = fn.cli_help, fn.cli_arguments
    assert main(["criteria", "--json"]) == 2
    err = capsys.readouterr().err
    assert err == "prunescope criteria: error: the model has no such layer; layers: a, b\n"


def test_prune_prints_what_the_step_decided(capsys):
    assert main(["prune", "digits_mlp", "--sparsity", "0.5", "--criterion", "wanda", "--no-latency", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["step"]["threshold_unit"] == "score" and d["step"]["global_threshold"] > 0
    assert "set to zero by this step" in d["step"]["summary"]


def test_autoplan_max_drop_says_its_unit_and_warns_when_it_looks_like_a_fraction(capsys):
    """Issue 22: --max-drop is in points while the CLI prints accuracies as fractions."""
    from core.cli import build_parser

    sub = next(a for a in build_parser()._actions if getattr(a, "choices", None) and "autoplan" in a.choices)
    assert "percentage points" in sub.choices["autoplan"].format_help()
    code, out, err = run(capsys, "autoplan", "digits_mlp", "--max-drop", "0.02", "--amounts", "0.1,0.5",
                         "--json", "--no-latency", "--device", "cpu")
    assert code == 0, err
    assert "warning: --max-drop 0.02 is in percentage points" in err and "give --max-drop 2" in err
    d = json.loads(out)
    assert d["unit"] == "percentage points of accuracy" and d["value"] == 0.02
    code, out, err = run(capsys, "autoplan", "digits_mlp", "--max-drop", "2", "--amounts", "0.1,0.5",
                         "--json", "--no-latency", "--device", "cpu")
    assert code == 0 and "warning" not in err
