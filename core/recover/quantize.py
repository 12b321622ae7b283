"""Quantize: int8 post-training quantisation of the current model with onnxruntime.

Why onnxruntime: its int8 kernels (MLAS) run on any CPU, so the quantised model is
measured as it will run (accuracy, latency, file size), not simulated. torch's PT2E flow
gives a graph of quantize / dequantize ops that is only fast after lowering (Inductor or
ExecuTorch), and its eager execution is slower than float. The step exports the model to
ONNX (the app's own exporter), then:

* models whose convolutions hold most weights: static quantisation (QDQ, per-channel int8
  weights, uint8 activations) calibrated on the seeded *training* calibration batch
  (calibrating on the evaluation split would make its accuracy look better than it is);
* the others (MLPs, transformers): dynamic quantisation of the MatMul / Gemm weights
  (activations are quantised per batch at run time; no quantize / dequantize pair per
  activation, so a smaller file and the usual choice for transformers).

The result is an :class:`OrtModule`: an ``nn.Module`` whose forward runs the int8 ONNX
model in onnxruntime. It keeps the float model as ``reference`` for the counts that do
not change (parameters, MACs); its size is the int8 file's bytes. It must be the plan's
last step (nothing can prune an onnxruntime graph).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from core.errors import ModelError
from core.ground.constraints import Options, Seed
from core.plan.report import StepReport
from core.plan.step import Step, register_step
from core.sources.bases import clone_model

SCHEMES = ("int8",)
MODES = ("auto", "static", "dynamic")


class OrtModule(nn.Module):
    """An ONNX model run by onnxruntime behind ``nn.Module``'s call (CPU)."""

    final = True  # no step can follow (apply refuses one)

    def __init__(self, onnx_bytes: bytes, reference: nn.Module, note: str = ""):
        super().__init__()
        self.onnx_bytes = bytes(onnx_bytes)
        self.reference = reference  # the float model: parameter and MAC counts, never run here
        self.note = note
        self._session = None

    @property
    def file_bytes(self) -> int:
        return len(self.onnx_bytes)

    def session(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = torch.get_num_threads()
            self._session = ort.InferenceSession(self.onnx_bytes, opts, providers=["CPUExecutionProvider"])
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sess = self.session()
        name = sess.get_inputs()[0].name
        out = sess.run(None, {name: x.detach().to("cpu", torch.float32).contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    def __getstate__(self):  # the session is rebuilt on demand (not picklable, not copyable)
        d = self.__dict__.copy()
        d["_session"] = None
        return d


def _onnx_bytes(model: nn.Module, example: torch.Tensor) -> tuple[bytes, str]:
    from core.io.exporters import OnnxExporter
    from core.plan import Plan

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "float.onnx"
        path.touch()
        # the exporter's plan argument only labels safetensors files; ONNX ignores it
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        cpu_model = model if on_cpu else clone_model(model).to("cpu")  # never move the caller's model
        note = OnnxExporter().write(cpu_model.eval(), example.to("cpu"), path, Plan("quantize"))
        return path.read_bytes(), note or ""


class _Calibration:
    """onnxruntime's CalibrationDataReader over one batch, fed in slices."""

    def __init__(self, name: str, x: torch.Tensor, batch: int = 32):
        self.items = [{name: x[i:i + batch].contiguous().numpy()} for i in range(0, len(x), batch)]

    def get_next(self):
        return self.items.pop(0) if self.items else None

    def rewind(self):  # pragma: no cover - only some onnxruntime versions call it
        pass


def quantize_int8(model: nn.Module, calib: torch.Tensor, mode: str = "auto") -> OrtModule:
    """An int8 :class:`OrtModule` of ``model`` (see the module's notes)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from core.io.exporters import export_errors, strip_onnx_debug

    if isinstance(model, OrtModule):
        raise ModelError("the model is quantised already")
    reference = model
    x = calib.detach().to("cpu", torch.float32)
    float_bytes, note = _onnx_bytes(model, x[:2])  # two examples: torch.export keeps a batch of 1 fixed
    if mode == "auto":  # static where convolutions hold most weights, else dynamic (transformers, MLPs)
        conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
        mode = "static" if conv > linear else "dynamic"
    with tempfile.TemporaryDirectory() as d:
        src, pre, out = Path(d) / "float.onnx", Path(d) / "pre.onnx", Path(d) / "int8.onnx"
        src.write_bytes(float_bytes)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except export_errors():  # onnxruntime's optional optimisation: quantise the export as it is
            pre = src
        if mode == "static":
            import onnx

            name = onnx.load(str(pre)).graph.input[0].name

            class Reader(_Calibration, CalibrationDataReader):
                pass

            quantize_static(str(pre), str(out), Reader(name, x), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv", "Gemm", "MatMul"])
        else:
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        strip_onnx_debug(out)
        data = out.read_bytes()
    return OrtModule(data, reference, note=f"{mode} int8 (onnxruntime); {note}".strip("; "))


@register_step
@dataclass(frozen=True)
class Quantize(Step):
    """int8 post-training quantisation (onnxruntime); the plan's last step."""

    op: ClassVar[str] = "quantize"
    constraints = {"scheme": Options(SCHEMES), "mode": Options(MODES), "seed": Seed()}
    scheme: str = "int8"  # the only scheme so far
    mode: str = "auto"  # "auto" (static when convolutions hold most weights, else dynamic) | "static" | "dynamic"
    seed: int = 0  # calibration batch seed (training split)

    def build(self, model: nn.Module, ctx) -> tuple[nn.Module, StepReport]:
        x, _ = ctx.calibration(self.seed)
        q = quantize_int8(model, x, self.mode)
        summary = f"{q.note}: int8 ONNX file {q.file_bytes / 1024:.1f} KiB"
        return q, StepReport(self.op, info={"note": q.note, "file_bytes": q.file_bytes}, summary=summary)

    def describe(self) -> str:
        return f"quantize {self.scheme} ({self.mode}, onnxruntime)"


def compare_with_float(ws, subset: str = "full") -> dict:
    """The quantised model of ``ws`` (its plan ends in a quantize step) beside the float
    model it was made from, both as ONNX files run by onnxruntime: file bytes, agreement of
    their predictions on the evaluation split, and latency at the workspace's batch, timed
    interleaved (same batch, threads and device).

    Raises:
        ModelError: the plan does not end in a quantize step.
    """
    from core.metrics.cost import measure_latency_pair

    q = ws.model
    if not isinstance(q, OrtModule):
        raise ModelError("the plan does not end in a quantize step: nothing to compare")
    x, _ = ws.evalset.subset(subset)
    float_bytes, _ = _onnx_bytes(q.reference, x[:1])
    float_ort = OrtModule(float_bytes, q.reference)
    with torch.inference_mode():
        a, b = q(x).argmax(1), float_ort(x).argmax(1)
    lat_f, lat_q = measure_latency_pair(float_ort, q, ws.evalset.quick()[0], ws.evaluator.latency_batch,
                                        ws.evaluator.latency_time)
    return {"subset": subset, "n": len(x), "agreement": float((a == b).float().mean()),
            "int8_bytes": q.file_bytes, "float_bytes": len(float_bytes), "int8_latency": lat_q,
            "float_latency": lat_f}


__all__ = ["compare_with_float", "Quantize", "OrtModule", "quantize_int8", "SCHEMES", "MODES"]
