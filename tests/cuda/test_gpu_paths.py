"""Every capability on a CUDA GPU: evaluation and latency, weight and structured pruning,
every criterion, N:M, surgery with bridges and heal, fine-tune and distillation, sensitivity,
explain, export and the evaluation precision. Each test checks its work reached the GPU."""
from __future__ import annotations

import pytest
import torch

from core.io import export_all, list_exporters
from core.metrics.cost import measure_latency
from core.plan import Plan, apply
from core.prune import Prune
from core.prune.criteria import CRITERIA, get_criterion
from core.prune.masks import prunable_layers
from core.recover import Finetune, Heal
from core.surgery import Cut, Paste
from core.workspace import Workspace
from tests.helpers.cuda import CUDA, DEVICE, all_on_cuda, on_gpu

pytestmark = CUDA


@pytest.fixture(scope="module")
def cnn():
    return Workspace("digits_cnn", DEVICE, latency_time=0.05)


def _fresh(ws: Workspace) -> Workspace:
    ws.reset()
    return ws


# ------------------------------------------------------------ evaluation and latency
def test_evaluation_runs_on_the_gpu_and_latency_is_timed_with_cuda_events(cnn):
    ws = _fresh(cnn)
    assert ws.evalset.x.device.type == DEVICE and all_on_cuda(ws.base)
    with on_gpu("evaluation"):
        m = ws.metrics()
    assert m.accuracy > 0.9 and m.latency is not None
    assert m.latency.device.startswith(DEVICE)
    if DEVICE == "cuda":
        assert m.latency.method == "cuda events" and m.latency.runs >= 3
        assert m.peak_mem_bytes and m.peak_mem_bytes > 0


def test_cuda_event_latency_agrees_with_a_synchronised_wall_clock():
    model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(8)]).to(DEVICE).eval()
    x = torch.randn(8, 2048, device=DEVICE)
    lat = measure_latency(model, x, batch_size=256, min_run_time=0.2)
    import time

    with torch.inference_mode():
        xb = x.repeat(32, 1)
        for _ in range(3):
            model(xb)
        ts = []
        for _ in range(20):
            torch.cuda.synchronize() if DEVICE == "cuda" else None
            t0 = time.perf_counter()
            model(xb)
            torch.cuda.synchronize() if DEVICE == "cuda" else None
            ts.append(time.perf_counter() - t0)
    wall = sorted(ts)[len(ts) // 2] * 1e3
    assert 0.3 < lat.median_ms / wall < 2.0, (lat.median_ms, wall)


# ------------------------------------------------------------ pruning
def test_weight_pruning_on_the_gpu_matches_the_cpu(cnn):
    ws = _fresh(cnn)
    with on_gpu("weight prune"):
        ws.add_step(Prune(sparsity=0.5))
        m = ws.metrics(latency=False)
    assert all_on_cuda(ws.model) and m.sparsity == pytest.approx(0.5, abs=0.02)
    cpu = apply(Plan("digits_cnn").then(Prune(sparsity=0.5)))
    for name, layer in prunable_layers(ws.model).items():
        a = layer.weight.detach().cpu() == 0
        b = prunable_layers(cpu)[name].weight == 0
        assert (a == b).float().mean() > 0.999, name


@pytest.mark.parametrize("granularity,model,attr", [("channel", "digits_cnn", None), ("neuron", "digits_mlp", None),
                                                    ("head", "digits_vit", None)])
def test_structured_pruning_on_the_gpu_removes_units(granularity, model, attr):
    ws = Workspace(model, DEVICE, latency_time=0.05)
    base = ws.base_metrics(latency=False)
    with on_gpu(f"{granularity} prune"):
        ws.add_step(Prune(granularity=granularity, sparsity=0.5))
        m = ws.metrics()
    assert all_on_cuda(ws.model) and m.params < base.params and m.shapes_changed
    assert m.latency.device.startswith(DEVICE) and m.base_latency is not None


@pytest.mark.parametrize("criterion", CRITERIA.names())
def test_every_criterion_scores_and_prunes_on_the_gpu(cnn, criterion):
    ws = _fresh(cnn)
    gran = "weight" if "weight" in get_criterion(criterion).granularities else "channel"
    with on_gpu(f"{criterion} ({gran})"):
        ws.add_step(Prune(criterion=criterion, granularity=gran, sparsity=0.3))
        m = ws.metrics(latency=False)
    assert all_on_cuda(ws.model)
    if gran == "weight":
        assert m.sparsity == pytest.approx(0.3, abs=0.03)
    else:
        assert m.params < ws.base_metrics(latency=False).params


@pytest.mark.parametrize("backend", ["auto", "cutlass", "cusparselt"])
def test_two_four_sparsity_runs_with_pytorchs_sparse_kernels(backend):
    from core.errors import ModelError
    from core.prune.nm import nm_mask, to_semi_structured

    if DEVICE != "cuda":
        pytest.skip("the sparse kernels exist on CUDA only")
    if backend == "cusparselt" and not torch.backends.cusparselt.is_available():
        pytest.skip("this torch build has no cuSPARSELt")
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512))
    for layer in (model[0], model[2]):
        with torch.no_grad():
            layer.weight.mul_(nm_mask(layer.weight.abs(), 2, 4))
    try:
        sparse = to_semi_structured(model, backend)
    except ModelError as exc:
        if backend == "cutlass" and torch.cuda.get_device_capability()[0] != 8:
            assert "do not run on this GPU" in str(exc)  # refused clearly, not a crash
            return
        pytest.fail(f"2:4 kernels ({backend}) refused on this GPU: {exc}")
    x = torch.randn(256, 512, device="cuda", dtype=torch.half)
    with torch.inference_mode():
        dense = model.half().cuda()(x)
        out = sparse(x)
    assert torch.allclose(out.float(), dense.float(), atol=5e-2, rtol=5e-2)


# ------------------------------------------------------------ surgery and recovery
@pytest.fixture(scope="module")
def resnet():
    return Workspace("digits_resnet", DEVICE, latency_time=0.05)


def test_cut_with_a_least_squares_bridge_then_heal_on_the_gpu(resnet):
    ws = _fresh(resnet)
    with on_gpu("cut + lstsq bridge"):
        ws.add_step(Cut(blocks=("layers.1",), bridge="lstsq"))
    seam = ws.reports[-1].seams[0]
    assert all_on_cuda(ws.model) and seam is not None
    with on_gpu("heal"):
        ws.add_step(Heal(steps=5, train="adapters", batch_size=32))
    assert all_on_cuda(ws.model) and ws.metrics(latency=False).accuracy > 0.1


def test_paste_a_copy_of_a_block_on_the_gpu(resnet):
    ws = _fresh(resnet)
    with on_gpu("paste"):
        ws.add_step(Paste(block="layers.1", at=2))
        m = ws.metrics(latency=False)
    assert all_on_cuda(ws.model) and m.params > ws.base_metrics(latency=False).params


@pytest.mark.parametrize("loss", ["labels", "distill"])
def test_finetune_and_distillation_train_on_the_gpu_and_keep_masks(cnn, loss):
    ws = _fresh(cnn)
    ws.add_step(Prune(sparsity=0.6))
    zeros = {n: (layer.weight == 0) for n, layer in prunable_layers(ws.model).items()}
    with on_gpu(f"finetune ({loss})", at_least=10):
        ws.add_step(Finetune(steps=10, batch_size=32, loss=loss))
    assert all_on_cuda(ws.model)
    for n, layer in prunable_layers(ws.model).items():
        assert bool((layer.weight[zeros[n]] == 0).all()), f"{n}: a pruned weight came back"
    info = ws.reports[-1].info
    assert info["steps_run"] == 10


# ------------------------------------------------------------ sensitivity and plans
def test_sensitivity_and_an_automatic_plan_on_the_gpu(cnn):
    ws = _fresh(cnn)
    with on_gpu("sensitivity sweep"):
        s = ws.sensitivity("l1", "weight", (0.3, 0.6), executor="local")
    assert s.complete and s.layers
    with on_gpu("autoplan"):
        res = ws.autoplan(criterion="l1", granularity="weight", max_drop=2.0, sens=s)
    assert res.tries


# ------------------------------------------------------------ explain
def test_explain_changes_cka_and_gradients_on_the_gpu(cnn):
    ws = _fresh(cnn)
    ws.add_step(Prune(granularity="channel", sparsity=0.5))
    with on_gpu("explain"):
        ch = ws.changes()
        div = ws.divergence()
        grad = ws.attribution_pair(0, "gradient")
        cam = ws.attribution_pair(0, "gradcam")
    assert ch.changed() is not None and div and all(0 <= d["cka"] <= 1.0001 for d in div)
    assert grad and cam


# ------------------------------------------------------------ export
def test_export_from_a_gpu_model_verifies_every_format(cnn, tmp_path):
    ws = _fresh(cnn)
    ws.add_step(Prune(granularity="channel", sparsity=0.5))
    assert all_on_cuda(ws.model)
    example = ws.evalset.quick()[0][:16]
    results = export_all(ws.model, ws.plan, tmp_path, "cnn", list_exporters(), example, model_name=ws.name)
    bad = {r.format: r.error for r in results if not r.verified}
    assert not bad, bad
    assert all_on_cuda(ws.model), "export moved the workspace's model off the GPU"


# ------------------------------------------------------------ evaluation precision
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_evaluation_precision_states_its_fidelity_cost(precision):
    ws = Workspace("digits_vit", DEVICE, latency_time=0.05, precision=precision)
    base = ws.base_metrics()
    assert base.precision == precision and base.latency.precision == precision
    assert base.agreement > 0.95 and base.output_cosine > 0.99  # what the precision alone costs
    fp32 = Workspace("digits_vit", DEVICE, latency_time=0.05).base_metrics(latency=False)
    assert fp32.agreement == 1.0 and fp32.output_cosine == pytest.approx(1.0, abs=1e-5)
    ws.add_step(Prune(sparsity=0.3))
    assert ws.metrics(latency=False).precision == precision


# ------------------------------------------------------------ peak memory
def test_peak_memory_blocks_nest_and_never_go_negative():
    from core.ground.device import peak_memory

    if DEVICE != "cuda":
        pytest.skip("peak GPU memory exists on CUDA only")
    big = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")  # 256 MiB held, then freed in the block
    with peak_memory("cuda") as outer:
        del big
        with peak_memory("cuda") as inner:
            small = torch.empty(16 * 2**20, dtype=torch.uint8, device="cuda")
            del small
    assert inner["bytes"] >= 16 * 2**20
    assert outer["bytes"] >= 0 and outer["bytes"] < 64 * 2**20  # measured above what it started with
    with peak_memory("cuda") as outer:
        with peak_memory("cuda") as inner:
            pass
        x = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
        del x
    assert inner["bytes"] < 2**20 and outer["bytes"] >= 64 * 2**20
