"""Invariants over compositions of steps (hypothesis): random plans from the registered
step kinds on the demo models, checked after every step.

- a weight pruned (zero) by an earlier step stays zero: every step kind keeps it, since
  none says it re-grows weights (a pasted or composed block is a copy under a new name);
- a removed unit stays removed: a parameter never grows under its own name;
- the base is untouched;
- replay gives the same ``state_dict_hash`` (in process here, in a new process below);
- step reports add up to what the model holds: a weight step's zero counts and newly
  zeroed weights, a structured step's removed units against widths and parameter count,
  a training step's trained and kept-at-zero counts.

Bounded: few examples (``derandomize=True``: the same plans on every run), training
steps of two batches of eight examples; the module runs in well under a minute.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

from core.errors import PrunescopeError
from core.ground.layers import prunable_layers
from core.io.export import state_dict_hash
from core.plan import ApplyContext, Plan, apply
from core.prune import NMSparsity, Prune
from core.prune.criteria import CRITERIA
from core.recover import Finetune, Heal, Quantize, gradual_steps, trainable_parameters
from core.recover import training as T
from core.recover.isolation import digest
from core.sources.bases import load_base
from core.surgery import Compose, Cut, Paste, Segment, block_names, default_container

MODELS = ("digits_mlp", "digits_cnn", "digits_resnet", "digits_vit")
GRANULARITIES = {"digits_mlp": ("weight", "neuron"), "digits_cnn": ("weight", "channel"),
                 "digits_resnet": ("weight", "channel"), "digits_vit": ("weight", "neuron", "head")}
TINY = {"steps": 2, "batch_size": 8}  # training steps: two batches of eight examples

PROPERTY = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- plans: abstract moves resolved against the model each step is applied to ----------
@st.composite
def prune_move(draw, model: str):
    gran = draw(st.sampled_from(GRANULARITIES[model]))
    crit = draw(st.sampled_from([n for n, c in CRITERIA.items() if gran in c.granularities]))
    return ("prune", gran, crit, draw(st.sampled_from([0.1, 0.3, 0.5])))


def moves(model: str):
    return st.one_of(
        prune_move(model),
        st.just(("nm",)),
        st.tuples(st.just("cut"), st.integers(0, 5), st.sampled_from(["auto", "lstsq"])),
        st.tuples(st.just("paste"), st.integers(0, 5), st.integers(0, 6)),
        st.tuples(st.just("compose"), st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True)),
        st.tuples(st.just("heal"), st.sampled_from(["adapters", "adapters+neighbours"])),
        st.tuples(st.just("finetune"), st.sampled_from(["all", "last", "adapters", "adapters+neighbours"]),
                  st.sampled_from(["labels", "distill", "both", "predictions"]),
                  st.sampled_from(["cosine", "constant"])),
        st.tuples(st.just("gradual"), prune_move(model)),
    )


@st.composite
def plans(draw):
    model = draw(st.sampled_from(MODELS))
    return model, draw(st.lists(moves(model), min_size=1, max_size=4))


def resolve(move: tuple, model: nn.Module, name: str) -> list:
    """The concrete step(s) a move means on ``model`` (block indices taken modulo the
    current blocks, so a later move fits the model an earlier one built)."""
    kind = move[0]
    if kind == "prune":
        _, gran, crit, amount = move
        return [Prune(criterion=crit, granularity=gran, sparsity=amount)]
    if kind == "nm":
        return [NMSparsity(n=2, m=4)]
    if kind == "gradual":
        _, (_, gran, crit, amount) = move
        return gradual_steps(crit, gran, amount, 2, Finetune(**TINY))
    if kind == "heal":
        return [Heal(train=move[1], **TINY)]
    if kind == "finetune":
        return [Finetune(train=move[1], loss=move[2], schedule=move[3], **TINY)]
    names = block_names(model, default_container(model, name))
    if not names:
        return []
    if kind == "cut":
        return [Cut((names[move[1] % len(names)],), bridge=move[2])] if len(names) > 1 else []
    if kind == "paste":
        return [Paste(block=names[move[1] % len(names)], at=move[2] % (len(names) + 1))]
    picked = sorted({i % len(names) for i in move[1]})
    return [Compose(segments=(Segment("self", tuple(names[i] for i in picked)),))]


# --- what a model holds ----------------------------------------------------------------
def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{n}.weight" if n else "weight": m.weight.detach().clone() for n, m in prunable_layers(model).items()}


def zeros(model: nn.Module) -> int:
    return sum(int((w == 0).sum()) for w in prunable_weights(model).values())


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def removed_blocks(step, before: nn.Module, name: str) -> set[str]:
    """Blocks a surgery step takes out: a module under one of these names afterwards is a
    new one (a bridge the step fitted may take the name of a bridge it cut)."""
    if isinstance(step, Cut):
        return set(step.blocks)
    if isinstance(step, Compose):
        kept = {b for seg in step.segments for b in seg.blocks}
        return set(block_names(before, default_container(before, name))) - kept
    return set()


def check_step(step, before: nn.Module, after: nn.Module, report, name: str) -> None:
    """The invariants of one step: ``before`` -> ``after`` with ``report``."""
    wb, wa = prunable_weights(before), prunable_weights(after)
    shapes_b = {k: v.shape for k, v in before.state_dict().items()}
    new = removed_blocks(step, before, name)

    def same_module(k: str) -> bool:
        return k in shapes_b and not any(k.startswith(b + ".") for b in new)

    for k, v in after.state_dict().items():  # a removed unit stays removed
        if same_module(k):
            assert v.numel() <= torch.Size(shapes_b[k]).numel(), f"{step.describe()}: {k} grew back"
    for k, w in wb.items():  # a pruned weight stays zero
        if k in wa and same_module(k) and wa[k].shape == w.shape:
            assert torch.all(wa[k][w == 0] == 0), f"{step.describe()}: zeros of {k} came back"
    if isinstance(step, (Prune, NMSparsity)) and report.unit_name == "weight":
        layers = prunable_layers(after)
        for layer, (pruned, total) in report.units.items():
            w = layers[layer].weight
            assert (pruned, total) == (int((w == 0).sum()), w.numel()), f"{step.describe()}: {layer}"
        if report.newly_zeroed is not None:
            assert report.newly_zeroed == zeros(after) - zeros(before), step.describe()
    elif isinstance(step, Prune):  # units removed
        assert all(len(report.removed.get(g, ())) == p for g, (p, _) in report.units.items())
        assert (params(after) < params(before)) == (report.pruned > 0), step.describe()
        if step.granularity in ("neuron", "channel"):
            mods = dict(after.named_modules())
            for g, (p, total) in report.units.items():
                m = mods.get(g)
                if isinstance(m, (nn.Linear, nn.Conv2d)) and getattr(m, "groups", 1) == 1 and p:
                    assert m.weight.shape[0] == total - p, f"{step.describe()}: width of {g}"
    elif isinstance(step, (Finetune, Heal)):
        info = report.info
        ft = step if isinstance(step, Finetune) else step.finetune(True)
        trained = trainable_parameters(before, ft.train, ft.last, name)
        assert info["trained_params"] == sum(p.numel() for p in trained.values())
        assert info["masked_weights"] == sum(int((wb[k] == 0).sum()) for k in trained if k in wb)
        assert zeros(after) == zeros(before), step.describe()


def build_checked(name: str, move_list: list) -> tuple[Plan, nn.Module]:
    """Apply the moves one step at a time, checking each; a step that does not fit the
    model it meets (a ``PrunescopeError``: no adapters to heal, nothing left to cut) is
    left out of the plan. Any other exception is a bug and fails the test."""
    ctx = ApplyContext(name)
    model, plan = load_base(name), Plan(name)
    for move in move_list:
        for step in resolve(move, model, name):
            try:
                new, report = step.build(model, ctx)
            except PrunescopeError:
                continue
            new.eval()
            check_step(step, model, new, report, name)
            model, plan = new, plan.then(step)
    return plan, model


@pytest.mark.slow
@PROPERTY
@given(plans())
@example(("digits_resnet", [("prune", "weight", "l1", 0.5), ("cut", 1, "lstsq"), ("heal", "adapters+neighbours")]))
@example(("digits_mlp", [("cut", 0, "auto"), ("cut", 0, "auto"), ("prune", "weight", "l1", 0.3),
                         ("finetune", "adapters", "labels", "constant")]))
@example(("digits_cnn", [("gradual", ("prune", "channel", "taylor", 0.5)), ("paste", 1, 3),
                         ("heal", "adapters+neighbours")]))
def test_every_step_keeps_what_the_steps_before_it_decided(drawn):
    name, move_list = drawn
    base_digest = digest(load_base(name))
    plan, model = build_checked(name, move_list)
    assert digest(load_base(name)) == base_digest  # the base is untouched
    T._MEMO.clear()  # train again, not from the memo
    again = apply(Plan.from_json(plan.to_json()))
    assert state_dict_hash(again) == state_dict_hash(model), plan.describe()


# --- regressions found by the property test --------------------------------------------
def test_a_bridge_fitted_where_a_cut_bridge_was_is_a_new_module_under_its_name():
    """Found by the property test: cutting a bridge fits a new one under the same name
    (``layers.bridge``); its weights are new, not the old bridge's zeros brought back.
    What the invariants treat as the same module is decided by the step (the blocks it
    takes out), not by the name alone."""
    plan = Plan("digits_mlp", (Cut(("layers.0",), bridge="lstsq"), Prune(sparsity=0.5)))
    before = apply(plan)
    step = Cut(("layers.bridge",))
    after, report = step.build(before, ApplyContext("digits_mlp"))
    assert "layers.bridge" in dict(after.named_modules()) and removed_blocks(step, before, "digits_mlp") == \
           {"layers.bridge"}
    check_step(step, before, after, report, "digits_mlp")


# --- replay in a new process ------------------------------------------------------------
REPLAYED = [
    Plan("digits_resnet", (Prune(criterion="l1", granularity="weight", sparsity=0.5),
                           Cut(("layers.1",), bridge="lstsq"), Heal(train="adapters+neighbours", **TINY))),
    Plan("digits_cnn", (Prune(criterion="taylor", granularity="channel", sparsity=0.3), Paste(block="features.1", at=3),
                        Finetune(loss="both", **TINY), Quantize())),
    Plan("digits_vit", (Prune(criterion="l1", granularity="head", sparsity=0.25), NMSparsity(),
                        Finetune(train="last", **TINY))),
]


@pytest.mark.slow
def test_plans_replay_to_the_same_hash_in_a_new_process(tmp_path: Path):
    threads = torch.get_num_threads()
    here = {}
    for i, plan in enumerate(REPLAYED):
        T._MEMO.clear()
        here[str(i)] = state_dict_hash(apply(plan))
        (tmp_path / f"{i}.json").write_text(plan.to_json())
    code = ("import json, sys, torch; torch.set_num_threads(%d)\n"
            "from core import Plan, apply\nfrom core.io.export import state_dict_hash\n"
            "print(json.dumps({p.stem: state_dict_hash(apply(Plan.from_json(p.read_text())))\n"
            "                  for p in map(__import__('pathlib').Path, sys.argv[1:])}))" % threads)
    out = subprocess.run([sys.executable, "-c", code, *map(str, sorted(tmp_path.glob("*.json")))],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here
