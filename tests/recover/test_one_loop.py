"""One training loop: Heal is a preset of Finetune (pruned weights stay zero, one memo,
old heal recipes replay to the weights the old loop gave), the "stopped after k steps"
rule lives on the step, and training isolates itself from other threads (own generator,
no global seed, one run at a time)."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.io.export import state_dict_hash
from core.plan import ApplyContext, Plan, apply
from core.prune import Prune
from core.recover import Finetune, Heal
from core.recover import isolation as trained
from core.recover import training as T
from core.sources.bases import load_base
from core.sources.models import MODELS, register_factory
from core.surgery import Cut, heal_parameters


@pytest.fixture(autouse=True)
def fresh_memo():
    T._MEMO.clear()
    yield
    T._MEMO.clear()


def _sd(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_heal_after_a_weight_prune_keeps_the_neighbours_pruned_weights_at_zero():
    """Issue 22: 50% weight prune, cut layers.1 with a fitted bridge, heal adapters and
    neighbours: every weight zero before the heal is zero after it (layers.2.conv2 lost
    all its zeros when heal was a second loop without masks)."""
    plan = Plan("digits_resnet", (Prune(criterion="l1", granularity="weight", sparsity=0.5),
                                  Cut(("layers.1",), bridge="lstsq")))
    cut = apply(plan)
    healed = apply(plan.then(Heal(steps=3, train="adapters+neighbours", batch_size=16)))
    trainable = heal_parameters(cut, "adapters+neighbours")
    before, after = _sd(cut), _sd(healed)
    assert "layers.2.conv2.weight" in trainable
    zeros = 0
    for name in trainable:
        if name.endswith("weight") and before[name].dim() > 1:
            pruned = before[name] == 0
            zeros += int(pruned.sum())
            assert torch.all(after[name][pruned] == 0), f"{name}: a pruned weight came back"
    assert zeros > 10_000
    assert any(not torch.equal(before[n], after[n]) for n in trainable)  # it did train


def _old_heal(model: nn.Module, ctx: ApplyContext, steps: int, lr: float, train: str, seed: int,
              batch_size: int) -> nn.Module:
    """The heal loop as it was before it became a preset (the oracle for old recipes)."""
    import copy

    m = copy.deepcopy(model).eval()
    params = heal_parameters(m, train)
    for p in m.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    xt, yt = ctx.train_split()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(list(params.values()), lr=float(lr))
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (batch_size,), generator=g)
        loss = F.cross_entropy(m(xt[idx]).float(), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return m.eval()


@pytest.mark.parametrize("model,block,train", [("digits_cnn", "features.1", "adapters"),
                                               ("digits_resnet", "layers.1", "adapters+neighbours")])
def test_an_old_heal_recipe_replays_to_the_weights_of_the_old_loop(model, block, train):
    recipe = ('{"format": "prunescope.plan/1", "model": "%s", "steps": [{"op": "cut", "blocks": ["%s"], '
              '"bridge": "lstsq"}, {"op": "heal", "steps": 4, "lr": 0.002, "train": "%s", "seed": 3, '
              '"batch_size": 16}]}' % (model, block, train))
    plan = Plan.from_json(recipe)
    assert isinstance(plan.steps[-1], Heal)
    ctx = ApplyContext(model)
    cut = apply(plan.prefix(1), ctx=ctx)
    assert _same(apply(plan, ctx=ctx), _old_heal(cut, ctx, 4, 0.002, train, 3, 16))


def test_heal_is_finetune_with_heals_defaults_and_shares_its_memo(monkeypatch):
    step = Heal(steps=4, lr=2e-3, train="adapters+neighbours", seed=1, batch_size=16)
    ft = step.finetune(labelled=True)
    assert (ft.schedule, ft.mode, ft.loss, ft.train, ft.steps, ft.lr, ft.seed) == \
           ("constant", "eval", "labels", "adapters+neighbours", 4, 2e-3, 1)
    assert step.finetune(labelled=False).loss == "predictions"
    ctx = ApplyContext("digits_cnn")
    cut = Cut(("features.1",), bridge="lstsq").build(load_base("digits_cnn"), ctx)[0]
    healed, _ = step.run(cut, ctx)
    monkeypatch.setattr(T, "finetune", lambda *a, **k: pytest.fail("trained again"))
    again, _ = ft.run(cut, ctx)  # the same run, asked for as a Finetune: from the one memo
    assert _same(healed, again)


def test_the_stopped_after_k_rule_lives_on_the_step():
    assert Heal(steps=50).stopped_after(7) == Heal(steps=7)
    assert Heal(steps=5).stopped_after(5) == Heal(steps=5)
    assert Finetune(steps=50).stopped_after(7) == Finetune(steps=7, horizon=50)  # cosine keeps its length
    assert Finetune(steps=50, schedule="constant").stopped_after(7) == Finetune(steps=7, schedule="constant")
    assert Finetune(steps=9, horizon=20).stopped_after(3) == Finetune(steps=3, horizon=20)


def test_a_stopped_heal_is_committed_from_the_memo(monkeypatch):
    ctx = ApplyContext("digits_cnn")
    cut = Cut(("features.1",), bridge="lstsq").build(load_base("digits_cnn"), ctx)[0]
    calls = []
    step = Heal(steps=40, seed=2)
    stopped, info = step.run(cut, ctx, progress=lambda d, n, loss: calls.append(d), should_stop=lambda: len(calls) >= 3)
    assert info["steps_run"] == 3
    monkeypatch.setattr(T, "finetune", lambda *a, **k: pytest.fail("trained again"))
    replayed, report = step.stopped_after(3).build(cut, ctx)
    assert _same(stopped, replayed) and report.info["steps_run"] == 3


def test_the_mode_field_stays_out_of_old_finetune_recipes():
    assert "mode" not in Finetune().to_dict()
    assert Finetune(mode="eval").to_dict()["mode"] == "eval"
    assert Plan.from_json(Plan("digits_mlp", (Finetune(mode="eval"),)).to_json()).steps[0].mode == "eval"


def test_training_leaves_the_global_random_state_alone():
    ctx = ApplyContext("digits_mlp")
    apply(Plan("digits_mlp"), ctx=ctx)  # building a base draws initial weights: not training's doing
    state = torch.get_rng_state()
    apply(Plan("digits_mlp", (Finetune(steps=3),)), ctx=ctx)
    assert torch.equal(state, torch.get_rng_state())


def test_two_fine_tunes_at_once_in_two_threads_give_the_weights_of_each_run_alone():
    plans = [Plan("digits_mlp", (Prune(criterion="l1", granularity="weight", sparsity=0.5),
                                 Finetune(steps=15, lr=5e-3, threads=1))),
             Plan("digits_cnn", (Prune(criterion="l1", granularity="channel", sparsity=0.3),
                                 Finetune(steps=8, loss="both", threads=2, seed=4)))]
    alone = []
    for p in plans:
        alone.append(state_dict_hash(apply(p)))
        T._MEMO.clear()
    together: dict[int, str] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            together[i] = state_dict_hash(apply(plans[i]))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [together[0], together[1]] == alone


def test_a_run_waiting_for_the_training_lock_can_be_cancelled():
    ctx = ApplyContext("digits_mlp")
    model = load_base("digits_mlp")
    waited = []
    with trained.TRAINING_LOCK:  # another run holds it
        done = []
        t = threading.Thread(target=lambda: done.append(Finetune(steps=5).run(
            model, ctx, should_stop=lambda: bool(waited), on_wait=lambda: waited.append(1))))
        t.start()
        t.join(10)
    assert waited and done and done[0][1]["steps_run"] == 0 and done[0][1]["stopped"]


def dropout_mlp() -> nn.Module:
    """A digits MLP with dropout (random in train mode)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))


def test_a_model_with_dropout_trains_reproducibly_and_restores_the_global_generator():
    name = "dropout_mlp_test"
    register_factory("tests.recover.test_one_loop:dropout_mlp", weights=None, dataset="digits",
                     input_shape=(1, 8, 8), name=name, task="classification")
    try:
        assert trained.random_layers(load_base(name)) == ["3"]  # built (initial weights drawn) before
        state = torch.get_rng_state()
        plan = Plan(name, (Finetune(steps=5, lr=1e-2),))
        first = state_dict_hash(apply(plan))
        assert torch.equal(state, torch.get_rng_state())
        T._MEMO.clear()
        torch.manual_seed(123)  # another global state: the run seeds its own fork
        assert state_dict_hash(apply(plan)) == first
    finally:
        MODELS.unregister(name)
