import numpy as np
import pytest
import torch
from torch import nn

from core.metrics import Evaluator, arch_signature, count_macs, layer_macs, measure_latency, state_dict_bytes
from core.prune import Prune
from core.prune.masks import weight_prune
from core.sources.bases import load_base
from core.sources.datasets import EvalSet, get_dataset


@pytest.fixture(scope="module")
def evaluator():
    base = load_base("digits_cnn")
    ev = EvalSet.from_splits(get_dataset("digits"), "cpu", quick_size=128)
    return Evaluator(ev, base, latency_time=0.05, latency_batch=16)


def test_base_metrics_match_a_manual_count(evaluator):
    m = evaluator.evaluate(evaluator.base, "full")
    x, y = evaluator.evalset.full()
    with torch.no_grad():
        acc = float((evaluator.base(x).argmax(1) == y).float().mean())
    assert m.accuracy == pytest.approx(acc)
    assert m.agreement == 1.0 and m.output_cosine == pytest.approx(1.0, abs=1e-5)
    assert m.sparsity == 0.0 and m.n == len(y)
    assert len(m.per_class_accuracy) == 10
    # per-class accuracy averages back to accuracy, weighted by class counts
    counts = torch.bincount(y, minlength=10).numpy()
    assert np.dot(m.per_class_accuracy, counts) / counts.sum() == pytest.approx(m.accuracy)


def test_pruned_model_metrics_change_and_costs_are_cached_by_architecture(evaluator):
    base_m = evaluator.evaluate(evaluator.base, "quick")
    pruned, _ = weight_prune(Prune(sparsity=0.8), evaluator.base)
    m = evaluator.evaluate(pruned, "quick")
    assert m.sparsity == pytest.approx(0.8, abs=0.01)
    assert m.nonzero_params < base_m.nonzero_params
    assert m.macs == base_m.macs and m.size_bytes == base_m.size_bytes
    # masks keep the architecture: a reliable timing is not re-measured (a noisy one is, issue 23 (2))
    assert (m.latency is base_m.latency) == base_m.latency.reliable
    assert not m.shapes_changed
    assert arch_signature(pruned) == arch_signature(evaluator.base)


def test_macs_of_a_known_layer():
    lin = nn.Sequential(nn.Linear(64, 32))
    assert count_macs(lin, torch.randn(5, 64)) == 64 * 32
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
    assert count_macs(conv, torch.randn(1, 1, 8, 8)) == 4 * 9 * 64
    assert layer_macs(conv, torch.randn(1, 1, 8, 8))["0"] == 4 * 9 * 64


def test_latency_reports_its_conditions():
    lat = measure_latency(nn.Linear(8, 8), torch.randn(3, 8), batch_size=10, min_run_time=0.02)
    assert lat.batch_size == 10 and lat.threads == torch.get_num_threads() and lat.device == "cpu"
    assert lat.median_ms > 0 and lat.iqr_ms >= 0 and lat.runs >= 1


def test_state_dict_bytes_is_the_safetensors_size(tmp_path):
    from safetensors.torch import save_file

    m = nn.Linear(10, 3)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "m.safetensors"))
    assert state_dict_bytes(m) == (tmp_path / "m.safetensors").stat().st_size


def test_metrics_to_dict_has_the_cli_fields(evaluator):
    d = evaluator.evaluate(evaluator.base, "quick").to_dict()
    for k in ("accuracy", "loss", "per_class_accuracy", "params", "nonzero_params", "macs", "size_bytes",
              "latency_ms", "sparsity"):
        assert k in d
    for k in ("median", "iqr", "batch_size", "threads", "device"):
        assert k in d["latency_ms"]


def test_size_is_the_safetensors_file_size_without_writing_it(demo_names):
    """The size metric is computed from tensor sizes and the header, and equals the bytes the
    safetensors writer produces (mixed dtypes, shared storage and non-ASCII names too)."""
    from safetensors.torch import save

    from core.metrics.cost import _written_bytes, state_dict_bytes
    from core.sources.bases import load_base

    for name in demo_names:
        m = load_base(name, "cpu")
        assert state_dict_bytes(m) == _written_bytes(m.state_dict()), name
    odd = torch.nn.Module()
    odd.lin = torch.nn.Linear(7, 3)
    odd.half = torch.nn.Linear(5, 2).half()
    odd.register_buffer("ints", torch.arange(11, dtype=torch.int8))
    odd.register_buffer("flags", torch.ones(3, dtype=torch.bool))
    odd.register_buffer("größe", torch.zeros(2, dtype=torch.float64))
    odd.tied = odd.lin  # the same weight twice: the writer stores a copy for each name
    assert state_dict_bytes(odd) == len(save({k: v.clone() for k, v in odd.state_dict().items()}))


def test_layer_tables_count_removed_units_as_pruned_and_are_memoised():
    from core.ground.layers import prunable_layers
    from core.metrics import layer_sparsity, leaf_rows, shape_changes
    from core.plan import Plan, apply
    from core.prune import Prune
    from core.sources.bases import load_base

    base = load_base("digits_mlp")
    model = apply(Plan("digits_mlp", (Prune(granularity="neuron", sparsity=0.5),)))
    memo: dict = {}
    table = layer_sparsity(base, model, memo)
    assert table.names == list(prunable_layers(base)) and layer_sparsity(base, model, memo) is table
    cur = dict(model.named_modules())
    for n, s, p in zip(table.names, table.sparsity, table.params):
        assert p == dict(base.named_modules())[n].weight.numel()
        assert s == pytest.approx(1 - int(torch.count_nonzero(cur[n].weight)) / p)
    assert max(table.sparsity) > 0.4
    assert layer_sparsity(base, base).sparsity == [0.0] * len(table.names)
    rows = leaf_rows(base, model, torch.zeros(1, 1, 8, 8), memo)
    assert {r["layer"] for r in rows if r["prunable"]} == set(table.names)
    assert leaf_rows(base, model, torch.zeros(1, 1, 8, 8), memo) == rows
    changed = {r["layer"] for r in shape_changes(base, model)}
    assert changed and changed <= {r["layer"] for r in rows}
