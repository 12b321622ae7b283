import json

import pytest

from core.errors import StepError
from core.plan import FORMAT, Fraction, Plan
from core.prune import LayerOverride, Prune


def sample_plan():
    return Plan("digits_cnn", (Prune(sparsity=0.6),
                               Prune(threshold=0.02, layers=(LayerOverride("features.0.0", sparsity=0.3),))))


def test_recipe_survives_json_round_trip():
    p = sample_plan()
    text = p.to_json()
    assert json.loads(text)["format"] == FORMAT
    assert Plan.from_json(text) == p
    assert Plan.from_json(text).key() == p.key()


def test_save_and_load(tmp_path):
    p = sample_plan()
    p.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == p


@pytest.mark.parametrize("bad, match", [
    ({"format": "other/1", "model": "x", "steps": []}, "format must be"),
    ({"format": FORMAT, "steps": []}, "needs a 'model'"),
    ({"format": FORMAT, "model": "x", "steps": {}}, "must be a list"),
    ({"format": FORMAT, "model": "x", "steps": [{"op": "explode"}]},
     r"step 0: unknown op 'explode'; valid ops: .*\bprune\b"),
    ({"format": FORMAT, "model": "x", "steps": [{"op": "prune", "sparsity": 1.5}]}, r"step 0 \(prune\).*\[0, 1\]"),
    ({"format": FORMAT, "model": "x", "steps": [{"op": "prune", "sparsity": 0.5, "bogus": 1}]}, "unknown field"),
    ([1, 2], "JSON object"),
])
def test_malformed_recipes_fail_with_clear_messages(bad, match):
    with pytest.raises(ValueError, match=match):
        Plan.from_dict(bad)


def test_invalid_json_text():
    with pytest.raises(ValueError, match="not valid JSON"):
        Plan.from_json("{nope")


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsity=-0.1), r"\[0, 1\]"),
    (dict(sparsity=0.5, threshold=0.1), "not both"),
    (dict(), "needs a sparsity"),
    (dict(sparsity=0.5, granularity="pixel"), "granularity must be one of"),
    (dict(sparsity=float("nan")), r"\[0, 1\]"),
])
def test_prune_step_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Prune(**kwargs)


def test_override_needs_exactly_one_amount():
    with pytest.raises(ValueError, match="exactly one"):
        LayerOverride("a")
    with pytest.raises(ValueError, match="exactly one"):
        LayerOverride("a", sparsity=0.1, threshold=0.2)


def test_with_override_sets_and_clears():
    s = Prune(sparsity=0.5).with_override("a", sparsity=0.2)
    assert s.override_for("a").sparsity == 0.2
    assert s.with_override("a").layers == ()


def test_fraction_constraint_is_the_one_meaning_of_an_amount():
    f = Fraction()
    assert f.accepts(0) and f.accepts(1.0) and f.accepts(0.25)
    assert not any(f.accepts(v) for v in ("0.5", True, -0.1, 1.5, float("nan"), float("inf"), None))
    with pytest.raises(StepError, match=r"prune.sparsity must be a finite number in \[0, 1\] or null, got '0.5'"):
        Prune(sparsity="0.5")


def test_plan_editing_returns_new_plans():
    p = sample_plan()
    assert len(p.without(0).steps) == 1 and len(p.steps) == 2
    assert p.replace(0, Prune(sparsity=0.1)).steps[0].sparsity == 0.1
    with pytest.raises(StepError, match="no step 5"):
        p.without(5)
