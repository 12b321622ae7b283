"""`prunescope finetune`: the metrics object plus before and seconds; a recipe that replays."""
from __future__ import annotations

import json

import pytest

from tests.helpers.cli import run


@pytest.mark.slow
def test_finetune_after_a_channel_prune_recovers_and_saves_a_replayable_plan(capsys, tmp_path):
    pruned = tmp_path / "pruned.json"
    code, _, err = run(capsys, "prune", "digits_cnn", "--granularity", "channel", "--criterion", "l1",
                       "--ratio", "0.5", "--no-latency", "--save-plan", str(pruned), "--json")
    assert code == 0, err
    tuned = tmp_path / "tuned.json"
    code, out, err = run(capsys, "finetune", "digits_cnn", "--plan", str(pruned), "--steps", "60", "--lr", "0.002",
                         "--distill", "--no-latency", "--save-plan", str(tuned), "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["accuracy"] > got["before"]["accuracy"] + 0.3 and got["seconds"] > 0
    assert len(got["losses"]) == 60
    step = got["plan"]["steps"][-1]
    assert step["op"] == "finetune" and step["loss"] == "both" and step["steps"] == 60
    code, out2, err = run(capsys, "apply", "digits_cnn", "--plan", str(tuned), "--no-latency", "--json")
    assert code == 0, err
    assert json.loads(out2)["accuracy"] == got["accuracy"]


def test_finetune_refuses_a_bad_train_choice_in_one_line(capsys):
    code, _, err = run(capsys, "finetune", "digits_mlp", "--steps", "1", "--train", "last:0")
    assert code == 2
    assert "--train must be all, adapters or last:K" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_quantize_prints_the_int8_metrics_with_before_and_replays(capsys, tmp_path):
    plan = tmp_path / "q.json"
    code, out, err = run(capsys, "quantize", "digits_cnn", "--no-latency", "--save-plan", str(plan), "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["plan"]["steps"][-1]["op"] == "quantize" and got["seconds"] > 0
    assert got["size_bytes"] < 0.4 * got["before"]["size_bytes"] and got["agreement"] >= 0.99
    assert "static int8 (onnxruntime)" in got["step"]["summary"]
    code, out2, err = run(capsys, "apply", "digits_cnn", "--plan", str(plan), "--no-latency", "--json")
    assert code == 0, err
    assert json.loads(out2)["accuracy"] == got["accuracy"]
    code, _, err = run(capsys, "finetune", "digits_cnn", "--plan", str(plan), "--steps", "1")
    assert code == 2 and "must be the plan's last step" in err
