"""Every field of every registered step is declared with a constraint, and every
constraint rejects its bad values with one message shape: field, what is accepted, got."""
from __future__ import annotations

import dataclasses
import json

import pytest

import core  # noqa: F401 - registers every step kind
from core.errors import StepError, echo
from core.ground.constraints import MAX_NAME
from core.plan import STEPS, Plan
from core.prune import LayerOverride, NMSparsity, Prune, Reconstruct
from core.recover import Finetune, Heal, Quantize
from core.surgery import Compose, Cut, Paste, Segment

# One valid instance per step kind (and per nested record): a new kind must add one here.
VALID = {
    "prune": Prune(sparsity=0.5, layers=(LayerOverride("features.0.0", sparsity=0.2),)),
    "cut": Cut(("layers.1",)),
    "paste": Paste("layers.1", at=0),
    "compose": Compose((Segment("self", ("layers.0",)),)),
    "heal": Heal(steps=3),
    "finetune": Finetune(steps=3),
    "quantize": Quantize(),
    "nm_sparsity": NMSparsity(),
    "reconstruct": Reconstruct(layers=("layers.1",)),
}
NESTED = {"layer override": LayerOverride("features.0.0", sparsity=0.2),
          "segment": Segment("self", ("layers.0",))}


def _cases():
    for owner, obj in list(VALID.items()) + list(NESTED.items()):
        for f in dataclasses.fields(obj):
            c = type(obj).constraints[f.name]
            for bad in c.bad_values():
                yield pytest.param(owner, obj, f.name, bad, id=f"{owner}.{f.name}={echo(bad, 20)}")


def test_every_registered_step_has_an_example_and_every_field_a_constraint():
    assert set(STEPS.names()) == set(VALID)
    for obj in list(VALID.values()) + list(NESTED.values()):
        declared = set(type(obj).constraints)
        assert declared == {f.name for f in dataclasses.fields(obj)}, type(obj).__name__


@pytest.mark.parametrize("owner, obj, field, bad", list(_cases()))
def test_a_bad_value_names_the_field_what_is_accepted_and_what_it_got(owner, obj, field, bad):
    c = type(obj).constraints[field]
    with pytest.raises(StepError) as err:
        dataclasses.replace(obj, **{field: bad})
    assert str(err.value) == f"{owner}.{field} must be {c.text()}, got {echo(bad)}"


@pytest.mark.parametrize("op", sorted(VALID))
def test_a_bad_value_in_a_recipe_names_the_step_and_the_field(op):
    step = VALID[op]
    for f in dataclasses.fields(step):
        for bad in type(step).constraints[f.name].bad_values():
            try:
                json.dumps(bad, allow_nan=False)
            except (TypeError, ValueError):
                continue  # not something a JSON recipe can hold
            d = {"format": "prunescope.plan/1", "model": "digits_cnn",
                 "steps": [{**step.to_dict(), f.name: bad}]}
            with pytest.raises(StepError) as err:
                Plan.from_dict(d)
            assert str(err.value).startswith(f"step 0 ({op}): "), str(err.value)
            assert f.name in str(err.value)


def test_messages_cut_what_they_repeat():
    huge = "x" * 5_000_000
    with pytest.raises(StepError) as err:
        Prune(criterion=huge, sparsity=0.1)
    assert len(str(err.value)) < 1000 and "5000002 characters" in str(err.value)
    assert MAX_NAME < 5_000_000


def test_recipes_are_strict_json():
    with pytest.raises(StepError, match="strict JSON"):
        Plan.from_json('{"format": "prunescope.plan/1", "model": "m", "steps": '
                       '[{"op": "prune", "threshold": Infinity}]}')
    with pytest.raises(StepError, match="nested too deeply"):
        Plan.from_json("[" * 200_000 + "]" * 200_000)
