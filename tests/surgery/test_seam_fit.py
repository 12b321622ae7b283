"""The bridge fit's speed-ups keep its result: the normal-equations solve against the
ridge-augmented least squares it replaces, sampled rows gathered in place against the full
layout, a stitch against a plain reference fit of the same seams, and the calibration trace
kept in the apply context's memo (reused by the next edit, dropped when the model changes)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.plan import ApplyContext
from core.sources.bases import clone_model, load_base
from core.surgery import Cut, Paste
from core.surgery import bridges as B
from core.surgery import traces as TR
from core.surgery.blocks import block_activations

MODEL = "digits_resnet"  # layers.0 .. layers.3; layers.2 halves the maps and doubles the channels


def _reference_ridge(x: torch.Tensor, y: torch.Tensor, ridge: float = B.RIDGE) -> tuple[torch.Tensor, torch.Tensor]:
    """The fit as it was solved before: float64 least squares (gelsd) on the centred system
    with ``sqrt(lam * n) * I`` rows appended."""
    x64, y64 = x.double(), y.double()
    xm, ym = x64.mean(0), y64.mean(0)
    xc, yc = x64 - xm, y64 - ym
    d = xc.shape[1]
    lam = ridge * float((xc * xc).sum()) / max(1, xc.shape[0]) / max(1, d) + 1e-12
    a = torch.cat([xc, math.sqrt(lam * xc.shape[0]) * torch.eye(d, dtype=xc.dtype)])
    bb = torch.cat([yc, torch.zeros(d, yc.shape[1], dtype=yc.dtype)])
    w = torch.linalg.lstsq(a, bb, driver="gelsd").solution
    return w.float(), (ym - xm @ w).float()


def _reference_seam(a: torch.Tensor, target: torch.Tensor, seed: int = 0) -> tuple[nn.Module, float]:
    """A bridge fitted as before (all rows laid out, then sampled) and its 1 - R^2 in float64."""
    br = B.make_bridge(tuple(a.shape[1:]), tuple(target.shape[1:]), "reference")
    src = br.resample(a)
    xin = src.permute(0, 2, 3, 1).reshape(-1, src.shape[1])
    yt = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1])
    if len(xin) > B.MAX_FIT_ROWS:
        idx = torch.randperm(len(xin), generator=torch.Generator().manual_seed(seed))[:B.MAX_FIT_ROWS]
        xin, yt = xin[idx], yt[idx]
    w, b = _reference_ridge(xin, yt)
    with torch.no_grad():
        br.proj.weight.copy_(w.t().reshape(br.proj.weight.shape))
        br.proj.bias.copy_(b)
        y = target.double()
        res = float(((br(a).double() - y) ** 2).sum())
        var = float(((y - y.mean(0, keepdim=True)) ** 2).sum())
    return br, res / var


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _assert_same_model(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)


# --------------------------------------------------------------------- the solve
@pytest.mark.parametrize("case", ["plain", "collinear", "large_scale", "more_features_than_rows"])
def test_the_normal_equations_solve_equals_the_ridge_augmented_least_squares_it_replaces(case):
    g = torch.Generator().manual_seed(1)
    n, d = (20, 48) if case == "more_features_than_rows" else (3000, 24)
    x = torch.randn(n, d, generator=g) + 0.5
    if case == "collinear":
        x[:, 5] = 2 * x[:, 3]  # an exact copy: the ridge alone keeps the system solvable
    if case == "large_scale":
        x = x * 1e4
    y = x[:, :7] @ torch.randn(7, 5, generator=g) + 0.1 * torch.randn(n, 5, generator=g)
    w, b = B.ridge_lstsq(x, y)
    w_ref, b_ref = _reference_ridge(x, y)
    torch.testing.assert_close(w, w_ref, rtol=1e-4, atol=1e-6 * float(w_ref.abs().max()))
    torch.testing.assert_close(b, b_ref, rtol=1e-4, atol=1e-5 * float(b_ref.abs().max()))


@pytest.mark.parametrize("shape, channels_last", [((3, 5, 4, 6), False), ((3, 4, 6, 5), True),
                                                  ((3, 7, 5), False), ((9, 5), False)])
def test_sampled_rows_are_gathered_in_place_as_the_full_layout_would_give_them(shape, channels_last):
    t = torch.randn(*shape)
    full = B._rows(t, channels_last)
    assert B._row_count(t, channels_last) == len(full)
    idx = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))[: len(full) // 2]
    assert torch.equal(B._rows(t, channels_last, idx), full[idx])


# --------------------------------------------------------------------- a stitch against the reference fit
def test_a_paste_from_a_donor_fits_the_bridges_a_plain_reference_fit_gives():
    base = load_base(MODEL)
    ctx = ApplyContext(MODEL)
    x = ctx.calibration(0)[0]
    acts = block_activations(clone_model(base), "layers", x)  # r_0 .. r_4 of the host (the donor is the same model)
    model, report = Paste(block="layers.1", source=MODEL, at=2, adapter="lstsq").build(base, ctx)
    # seam 1: what leaves the host's layers.1 -> what the donor's layers.1 saw
    ref1, err1 = _reference_seam(acts[2], acts[1])
    # seam 2: the donor's layers.1 on the bridged activation -> what the host's layers.2 saw
    with torch.no_grad():
        mid = base.layers[1](ref1(acts[2]))
    ref2, err2 = _reference_seam(mid, acts[2])
    got = [m for n, m in model.layers.named_children() if n.startswith("bridge")]
    assert len(got) == 2
    for br, ref in zip(got, (ref1, ref2)):
        torch.testing.assert_close(br.proj.weight, ref.proj.weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(br.proj.bias, ref.proj.bias, rtol=1e-4, atol=1e-5)
    assert [s.fit_error for s in report.seams] == pytest.approx([err1, err2], rel=1e-6)


def test_a_cut_where_the_shapes_change_fits_the_bridge_the_reference_fit_gives():
    base = load_base(MODEL)
    ctx = ApplyContext(MODEL)
    acts = block_activations(clone_model(base), "layers", ctx.calibration(0)[0])
    model, report = Cut(("layers.2",), bridge="lstsq").build(base, ctx)
    ref, err = _reference_seam(acts[2], acts[3])  # layers.1's output -> what layers.3 saw (64 x 16 x 16)
    br = model.layers.bridge
    torch.testing.assert_close(br.proj.weight, ref.proj.weight, rtol=1e-4, atol=1e-5)
    assert report.seams[0].fit_error == pytest.approx(err, rel=1e-6)


# --------------------------------------------------------------------- the trace kept in the memo
@pytest.fixture
def traces(monkeypatch):
    """Counts the calibration traces taken (one forward of a source model each)."""
    calls = []
    real = TR.trace_blocks

    def counted(model, container, x):
        calls.append(container)
        return real(model, container, x)

    monkeypatch.setattr(TR, "trace_blocks", counted)
    return calls


def test_the_edit_after_a_cut_reuses_the_calibration_trace_and_builds_the_same_model(traces):
    base = load_base(MODEL)
    ctx = ApplyContext(MODEL)
    Cut(("layers.1",), bridge="lstsq").build(base, ctx)
    assert len(traces) == 1  # the host, traced once
    paste = Paste(block="layers.1", source=MODEL, at=2, adapter="lstsq")  # the donor is the host's own base
    warm, warm_report = paste.build(base, ctx)
    assert len(traces) == 1  # host and donor activations both from the memo
    cold, cold_report = paste.build(base, ApplyContext(MODEL))
    assert len(traces) == 2
    _assert_same_model(warm, cold)
    assert [s.fit_error for s in warm_report.seams] == pytest.approx([s.fit_error for s in cold_report.seams])


def test_another_calibration_seed_is_traced_anew(traces):
    base = load_base(MODEL)
    ctx = ApplyContext(MODEL)
    Cut(("layers.1",), bridge="lstsq").build(base, ctx)
    Cut(("layers.1",), bridge="lstsq", seed=1).build(base, ctx)
    assert len(traces) == 2


def test_an_in_place_edit_of_the_model_drops_its_kept_trace(traces):
    host = clone_model(load_base(MODEL))
    ctx = ApplyContext(MODEL)
    cut = Cut(("layers.1",), bridge="lstsq")
    before, _ = cut.build(host, ctx)
    with torch.no_grad():
        host.layers[0].conv1.weight.mul_(0.5)  # what a stale trace would not see
    after, _ = cut.build(host, ctx)
    assert len(traces) == 2
    fresh, _ = cut.build(host, ApplyContext(MODEL))
    _assert_same_model(after, fresh)
    assert not torch.allclose(after.layers.bridge.proj.weight, before.layers.bridge.proj.weight)


def test_a_trace_over_the_memo_budget_is_not_kept_and_the_result_is_the_same(traces, monkeypatch):
    base = load_base(MODEL)
    want, _ = Cut(("layers.2",), bridge="lstsq").build(base, ApplyContext(MODEL))
    monkeypatch.setattr(TR, "MEMO_BYTES", 0)
    ctx = ApplyContext(MODEL)
    got, _ = Cut(("layers.2",), bridge="lstsq").build(base, ctx)
    Cut(("layers.2",), bridge="lstsq").build(base, ctx)
    assert len(traces) == 3 and (TR.SEAM_ACTS, "layers") not in ctx.memo(base)
    _assert_same_model(got, want)
