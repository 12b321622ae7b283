"""One error family: core raises PrunescopeError for a person's mistakes, the edges
catch only that, and anything else is shown as the bug it is."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from core.errors import FileError, PlanError, PrunescopeError, StepError, UnknownNameError
from core.plan import ApplyContext, Plan, Step, apply
from core.prune import Prune
from core.workspace import Workspace


@dataclass(frozen=True)
class _Buggy(Step):
    """A step kind with a bug: its build raises a ZeroDivisionError."""

    op: ClassVar[str] = "buggy_test_step"
    constraints = {}

    def build(self, model, ctx):
        return 1 / 0


def test_every_user_error_is_a_value_error_of_one_family():
    for cls in (StepError, PlanError, FileError, UnknownNameError):
        assert issubclass(cls, PrunescopeError) and issubclass(cls, ValueError)


def test_apply_names_the_step_that_does_not_fit():
    from core.prune import LayerOverride

    plan = Plan("digits_mlp", (Prune(sparsity=0.5), Prune(sparsity=0.2, layers=(LayerOverride("nope", 0.5),))))
    with pytest.raises(PlanError, match=r"^step 2 \(prune weight by l1: sparsity 20.0%, 1 layer override\(s\)\): "
                                        r"layer override\(s\) \['nope'\] are not prunable layers") as err:
        apply(plan, ctx=ApplyContext("digits_mlp"))
    assert err.value.index == 1


def test_a_bug_inside_a_step_is_not_turned_into_a_user_error():
    plan = Plan("digits_mlp", (_Buggy(),))
    with pytest.raises(ZeroDivisionError):
        apply(plan, ctx=ApplyContext("digits_mlp"))
    ws = Workspace("digits_mlp", "cpu", latency_time=0.01)
    with pytest.raises(ZeroDivisionError):
        ws.set_plan(plan)
    assert ws.plan.steps == ()  # the plan is kept


def test_files_that_cannot_be_read_are_file_errors(tmp_path):
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe not utf-8")
    for path, match in ((tmp_path, "not a regular file"), (tmp_path / "none.json", "does not exist"),
                        (tmp_path / "bad.json", "not UTF-8")):
        with pytest.raises(FileError, match=match) as err:
            Plan.load(path)
        assert str(path) in str(err.value)
    with pytest.raises(FileError, match="cannot write the recipe"):
        Plan("digits_mlp").save(tmp_path)  # a directory
    (tmp_path / "w.safetensors").write_bytes(b"not safetensors")
    from core.sources.weights import load_state_dict_file

    with pytest.raises(FileError, match="w.safetensors: not a readable safetensors file"):
        load_state_dict_file(tmp_path / "w.safetensors")


def test_model_before_and_reports_follow_the_plan():
    ws = Workspace("digits_mlp", "cpu", latency_time=0.01)
    ws.add_step(Prune(sparsity=0.5))
    ws.add_step(Prune(criterion="random", sparsity=0.7))
    assert ws.model_before(0) is ws.base and ws.model_before(2) is ws.model
    first = ws.model_before(1)
    zeros = sum(int((m.weight == 0).sum()) for n, m in first.named_modules() if hasattr(m, "weight")
                and n in ws.reports[0].units)
    assert zeros == ws.reports[0].pruned
    assert [r.threshold_unit for r in ws.reports] == ["|w|", "score"]
    with pytest.raises(PrunescopeError, match="no model before step 3"):
        ws.model_before(3)
    ws.undo()
    assert len(ws.reports) == 1


def test_unknown_names_list_the_valid_ones_and_cap_what_they_repeat():
    from core.prune import CRITERIA

    with pytest.raises(UnknownNameError, match="valid criterion names: apoz, entropy, l1,") as err:
        CRITERIA.get("x" * 100_000)
    assert len(str(err.value)) < 1000
