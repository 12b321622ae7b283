"""``prunescope diff``: the table, the JSON's nodes, Model Explorer node data, and the usual
one-line errors for a bad plan."""
from __future__ import annotations

import json

from core.plan import Plan
from core.prune import Prune
from core.surgery import Cut
from tests.helpers.cli import run


def _plan(tmp_path, name, *steps):
    path = tmp_path / "plan.json"
    Plan(name, tuple(steps)).save(path)
    return str(path)


def test_diff_json_lists_every_node_with_status_and_figures(capsys, tmp_path):
    plan = _plan(tmp_path, "digits_cnn", Cut(("features.1",)))
    code, out, _ = run(capsys, "diff", "digits_cnn", "--plan", plan, "--json", "--device", "cpu")
    assert code == 0
    d = json.loads(out)
    nodes = {n["name"]: n for n in d["nodes"]}
    assert nodes["features.1.0"]["status"] == "removed" and nodes["features.1.0"]["after"] is None
    assert nodes["features.bridge"]["status"] == "added" and nodes["features.bridge"]["before"] is None
    assert nodes["features.0.0"]["status"] == "kept" and nodes["features.0.0"]["before"]["params"] == 288
    assert d["counts"]["removed"] == 5 and d["counts"]["added"] == 3


def test_diff_table_counts_statuses_and_lists_changed_nodes_only(capsys, tmp_path):
    plan = _plan(tmp_path, "digits_mlp", Prune(granularity="neuron", sparsity=0.25))
    code, out, _ = run(capsys, "diff", "digits_mlp", "--plan", plan, "--device", "cpu")
    assert code == 0
    assert "nodes by status: kept 4, narrowed 2" in out or "narrowed" in out.splitlines()[1]
    assert "out_features 256->" in out and "layers.2 " not in out  # a kept ReLU is summarised, not listed
    assert "MACs per example" in out and "not profiled" in out


def test_diff_writes_model_explorer_node_data_beside_an_onnx_export(capsys, tmp_path):
    plan = _plan(tmp_path, "digits_cnn", Prune(granularity="channel", sparsity=0.3))
    out_json = tmp_path / "me.json"
    code, out, _ = run(capsys, "diff", "digits_cnn", "--plan", plan, "--model-explorer", str(out_json), "--json",
                       "--device", "cpu")
    assert code == 0
    data = json.loads(out_json.read_text())
    assert (tmp_path / "me.onnx").exists() and len(data["results"]) == 4
    assert json.loads(out)["model_explorer"]["legend"]["1"] == "narrowed"


def test_diff_with_a_plan_for_another_model_is_a_one_line_error(capsys, tmp_path):
    plan = _plan(tmp_path, "digits_mlp", Prune(sparsity=0.5))
    code, _, err = run(capsys, "diff", "digits_cnn", "--plan", plan, "--device", "cpu")
    assert code == 2 and "is for model 'digits_mlp'" in err and "Traceback" not in err


def test_diff_with_a_missing_plan_file_is_a_one_line_error(capsys, tmp_path):
    code, _, err = run(capsys, "diff", "digits_cnn", "--plan", str(tmp_path / "nope.json"), "--device", "cpu")
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
