"""The one-shot reconstruction step (SparseGPT): on every Linear layer it touches, the layer's
output on the calibration batch is closer to the base's than magnitude pruning at the same
sparsity gives; the zeros are where the mask accounting counts them; replay is exact."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import ModelError, StepError
from core.plan import Plan
from core.plan.build import ApplyContext, apply
from core.prune import NMSparsity, Reconstruct
from core.prune.nm import eligible_layers, nm_mask
from core.prune.reconstruct import sparsegpt_prune
from core.sources.bases import load_base
from core.workspace import Workspace


def _inputs(model: nn.Module, names, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What enters each named Linear layer of ``model`` on ``x`` (rows x in_features)."""
    got, mods = {}, dict(model.named_modules())

    def keep(name):
        def hook(mod, inp, out):
            got.setdefault(name, inp[0].reshape(-1, inp[0].shape[-1]))  # returns None: the output is unchanged
        return hook

    hs = [mods[n].register_forward_hook(keep(n)) for n in names]
    with torch.inference_mode():
        model(x)
    for h in hs:
        h.remove()
    return got


def _magnitude(w: torch.Tensor, sparsity: float, pattern: str) -> torch.Tensor:
    """``w`` with the smallest |w| zeroed: ``sparsity`` of the layer, or 2 of every 4 inputs."""
    if pattern == "2:4":
        return w * nm_mask(w.abs(), 2, 4)
    k = int(round(w.numel() * sparsity))
    out = w.clone().flatten()
    out[torch.sort(w.abs().flatten(), stable=True).indices[:k]] = 0
    return out.reshape(w.shape)


def _check_beats_magnitude(name: str, base: nn.Module, step: Reconstruct, ctx: ApplyContext) -> int:
    built = apply(Plan(name, (step,)), base, ctx=ctx)
    touched = list(eligible_layers(base, 4 if step.pattern == "2:4" else 1))
    x = ctx.calibration(step.seed)[0]
    seen = _inputs(built, touched, x)  # the inputs each layer has in the reconstructed model
    got, want = dict(built.named_modules()), dict(base.named_modules())
    for n in touched:
        w0, w = want[n].weight.detach().double(), got[n].weight.detach().double()
        mag = _magnitude(w0, step.sparsity, step.pattern)
        assert float((w == 0).double().mean()) == pytest.approx(step.amount, abs=2e-3), n
        xi = seen[n].double()
        err_rec = float((xi @ (w0 - w).T).square().sum())
        err_mag = float((xi @ (w0 - mag).T).square().sum())
        assert err_rec < err_mag, (n, err_rec, err_mag)
        if step.pattern == "2:4":
            assert bool(((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()), n
    head = [n for n, m in got.items() if isinstance(m, nn.Linear)][-1]
    assert head not in touched and torch.equal(got[head].weight, want[head].weight)
    return len(touched)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_each_touched_layer_loses_less_output_than_magnitude_on_an_mlp(pattern):
    ctx = ApplyContext("digits_mlp")
    assert _check_beats_magnitude("digits_mlp", load_base("digits_mlp"), Reconstruct(0.6, pattern), ctx) == 2


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_each_touched_layer_loses_less_output_than_magnitude_on_a_llama(tmp_path, own_home, pattern):
    pytest.importorskip("transformers")
    from core.sources.entries import data_from_path, register
    from tests.helpers.hf import build, save, sentences, tokenizer

    folder = save(tmp_path / "llama", build("llama"), tokenizer("lm"))
    (tmp_path / "lm.txt").write_text("\n".join(sentences(150, 3)) + "\n")
    own_home.append("recon_llama")
    register("recon_llama", hf=str(folder), data=data_from_path(str(tmp_path / "lm.txt"), seq_len=16))
    ctx = ApplyContext("recon_llama")
    n = _check_beats_magnitude("recon_llama", load_base("recon_llama"), Reconstruct(0.5, pattern, samples=32), ctx)
    assert n == 14  # 2 decoder layers x (q, k, v, o, gate, up, down): the output layer is left whole


def test_the_zeros_are_counted_the_report_says_what_it_did_and_the_recipe_replays_to_the_same_weights():
    ws = Workspace("digits_mlp", "cpu")
    dense = ws.metrics(latency=False)
    ws.add_step(Reconstruct(sparsity=0.7))
    rep = ws.reports[-1]
    assert set(rep.units) == {"layers.1", "layers.3"} and rep.pruned == pytest.approx(0.7 * rep.total, abs=2)
    assert set(rep.info["output_error"]) == set(rep.units) and all(0 < e < 1 for e in rep.info["output_error"].values())
    assert "SparseGPT" in rep.summary and "128 calibration example(s)" in rep.summary
    m = ws.metrics(latency=False)
    assert m.sparsity > dense.sparsity + 0.5 and m.params == dense.params  # zeros, shapes kept
    again = apply(Plan.from_dict(ws.plan.to_dict()), load_base("digits_mlp"), ctx=ApplyContext("digits_mlp"))
    got, want = again.state_dict(), ws.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(v, want[k]) for k, v in got.items())
    assert not torch.equal(ws.model.get_submodule("layers.3").weight,  # kept weights updated, not only masked
                           apply(Plan("digits_mlp", (NMSparsity(),)), ws.base).get_submodule("layers.3").weight)


def test_the_kept_weights_move_and_a_dead_input_loses_its_weights():
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    x[:, 3] = 0  # an input that never fires
    w = torch.randn(8, 16)
    new = sparsegpt_prune(w, x.T @ x / len(x), 0.5, block=8)
    assert bool((new[:, 3] == 0).all()) and int((new == 0).sum()) == 64
    kept = new != 0
    assert not torch.allclose(new[kept], w.double()[kept])  # the OBS update moved the weights that stay
    err = (x.double() @ (w.double() - new).T).square().sum()
    assert err < (x.double() @ (w.double() - _magnitude(w.double(), 0.5, "")).T).square().sum()


def test_bad_fields_and_layers_are_refused_with_what_is_accepted():
    with pytest.raises(StepError, match="pattern"):
        Reconstruct(pattern="3:3")
    with pytest.raises(StepError, match="multiple"):
        Reconstruct(pattern="2:4", block=6)
    with pytest.raises(StepError, match="twice"):
        Reconstruct(layers=("layers.1", "layers.1"))
    with pytest.raises(ModelError, match=r"not Linear layers; valid: layers.1, layers.3"):
        Reconstruct(layers=("layers.9",)).targets(load_base("digits_mlp"))
    assert Plan.from_dict({"format": "prunescope.plan/1", "model": "digits_mlp",
                           "steps": [{"op": "reconstruct", "pattern": "2:4"}]}).steps == (Reconstruct(pattern="2:4"),)
