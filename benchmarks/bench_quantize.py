"""int8 quantisation benchmarks, per demo model: the int8 ONNX file against the float ONNX
file, accuracy on the full test split, agreement with the float model, and latency of the
int8 model against the float model in the same runtime (onnxruntime) and against PyTorch
eager, at batch 1 and 64, timed interleaved in this process."""
from __future__ import annotations

import time

import torch

from benchmarks.common import row

MODELS = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_vit"]


def _median_ms(fns: dict, x: torch.Tensor, rounds: int = 15) -> dict[str, float]:
    """Median time of each callable on ``x``, run interleaved (same load for all)."""
    import statistics

    times = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values():  # warm-up
            f(x)
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def quantize_rows(name: str) -> list[dict]:
    from core.recover import Quantize
    from core.recover.quantize import OrtModule, _onnx_bytes
    from core.workspace import Workspace

    ws = Workspace(name, "cpu")
    base = ws.base_metrics("full", latency=False)
    t0 = time.perf_counter()
    ws.add_step(Quantize())
    seconds = time.perf_counter() - t0
    q = ws.model
    m = ws.metrics("full", latency=False)
    x = ws.evalset.quick()[0]
    float_bytes, _ = _onnx_bytes(q.reference, x[:1])
    float_ort = OrtModule(float_bytes, q.reference)
    size_ratio = q.file_bytes / len(float_bytes)
    drop = 100 * (base.accuracy - m.accuracy)
    lat = {}
    for b in (1, 64):
        xb = x.repeat((b // len(x) + 1,) + (1,) * (x.dim() - 1))[:b]
        lat[b] = _median_ms({"int8": q, "float_ort": float_ort, "torch": q.reference}, xb)
    lat_detail = "; ".join(f"batch {b}: int8 {v['int8']:.2f} ms, float onnxruntime {v['float_ort']:.2f} ms "
                           f"({v['float_ort'] / v['int8']:.2f}x), PyTorch {v['torch']:.2f} ms" for b, v in lat.items())
    return [
        row(f"int8 file / float ONNX file ({name})", round(size_ratio, 3), "x", "<= 0.3", size_ratio <= 0.3,
            f"int8 {q.file_bytes / 1024:.1f} KiB, float {len(float_bytes) / 1024:.1f} KiB; "
            f"quantised in {seconds:.1f} s "
            f"({q.note.split(';')[0]})"),
        row(f"int8 accuracy drop, full split ({name})", round(drop, 2), "points", "<= 1", drop <= 1,
            f"float {100 * base.accuracy:.2f}%, int8 {100 * m.accuracy:.2f}%, agreement with float "
            f"{100 * m.agreement:.2f}% of {m.n}"),
        row(f"int8 speed-up over float onnxruntime, batch 64 ({name})",
            round(lat[64]["float_ort"] / lat[64]["int8"], 2), "x", "report", True, lat_detail),
    ]


def run() -> list[dict]:
    return [r for n in MODELS for r in quantize_rows(n)]


if __name__ == "__main__":
    for r in run():
        print(r)
