"""Sensitivity benchmarks: a full weight-level sweep of digits_resnet (every layer x 9
amounts) against the naive loop that applies and evaluates each point from scratch, in
the same process; and the sweep's throughput on the local executor against Ray on this
machine, with the bytes each task moves."""
from __future__ import annotations

import io
import pickle
import time

import torch

from benchmarks.common import row

AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def sweep_vs_naive(name: str = "digits_resnet") -> dict:
    from core.plan import apply
    from core.prune import LayerOverride, Prune
    from core.workspace import Workspace

    ws = Workspace(name, "cpu")
    ws.base_metrics(latency=False)  # base outputs and cost caches warm for both
    names = ws.layer_names("weight")
    t0 = time.perf_counter()
    for layer in names:
        for a in AMOUNTS:
            step = Prune(criterion="l1", granularity="weight", layers=(LayerOverride(layer, sparsity=a),))
            ws.evaluator.evaluate(apply(ws.plan.then(step), ws.base, ctx=ws.ctx), latency=False)
    naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = ws.sensitivity("l1", "weight", AMOUNTS)
    swept = time.perf_counter() - t0
    ratio = swept / naive
    return row(f"weight sensitivity sweep / naive loop ({name})", round(ratio, 2), "x", "<= 0.5", ratio <= 0.5,
               f"{len(names)} layers x {len(AMOUNTS)} amounts on the quick subset ({s.n} examples): sweep "
               f"{swept:.1f} s, naive apply + evaluate {naive:.1f} s, same process, {torch.get_num_threads()} threads")


def _bytes(obj) -> int:
    buf = io.BytesIO()
    pickle.dump(obj, buf)
    return buf.tell()


def local_vs_ray(name: str = "digits_resnet") -> list[dict]:
    from core.sensitivity import RayExecutor
    from core.sensitivity.runner import Runner, Task
    from core.workspace import Workspace

    ws = Workspace(name, "cpu")
    amounts = (0.2, 0.5, 0.8)
    t0 = time.perf_counter()
    local = ws.sensitivity("l1", "channel", amounts, shards=2)
    t_local = time.perf_counter() - t0
    points = sum(len(p) for p in local.layers.values())
    payload = ws.sweep_payload(ws.sensitivity_spec("l1", "channel", amounts))
    task = Task("layer", "l1", "channel", next(iter(local.layers)), amounts, payload.shards(2)[0])
    result = Runner(payload).run(task)
    moved = (f"model + calibration {_bytes(payload.to('cpu').without_data()) / 1e6:.2f} MB once per worker, a shard "
             f"{_bytes(payload.shard_data(task.shard)) / 1e6:.2f} MB once per node; a task {_bytes(task)} B out and "
             f"{_bytes(result)} B back")
    rows = [row(f"sensitivity throughput, local executor ({name}, channels)", round(points / t_local, 1), "points/s",
                "report", True, f"{points} points (2 shards each) in {t_local:.1f} s; {moved}")]
    try:
        import ray
    except ImportError:
        rows.append(row(f"sensitivity throughput, Ray 2 workers ({name}, channels)", None, "points/s", "report", True,
                        "skipped: Ray is not installed (pip install 'prunescope[ray]')"))
        return rows
    ws.sweeps.clear()
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    t_init = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        remote = ws.sensitivity("l1", "channel", amounts, shards=2, executor=RayExecutor(workers=2))
        t_ray = time.perf_counter() - t0
    finally:
        ray.shutdown()
    same = remote.layers == local.layers and remote.source == local.source
    rows.append(row(f"sensitivity throughput, Ray 2 workers ({name}, channels)", round(points / t_ray, 1), "points/s",
                    "report; identical to local", same,
                    f"{points} points in {t_ray:.1f} s after a {t_init:.1f} s ray.init, 2 actors x 1 CPU on this "
                    f"{torch.get_num_threads()}-thread machine; identical numbers: {same}"))
    return rows


def run() -> list[dict]:
    return [sweep_vs_naive(), *local_vs_ray()]
