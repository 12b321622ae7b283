"""Export a plan's model, verify every file, and load it back.

Formats (registry ``EXPORTERS``): ``safetensors`` (state dict + the recipe in its
metadata, so :func:`load` rebuilds base + plan), ``onnx`` (one file, dynamic batch,
checked with onnxruntime), ``pt2`` (``torch.export``) and ``torchscript``. Masks are
already baked into the built model; a structurally changed model exports at its new
shapes. Every write goes to a temp file that is renamed only on success, and the
recipe is written beside the export as ``<name>.plan.json``.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .apply import ApplyContext, apply
from .fileio import atomic_path, atomic_write_text
from .plan import Plan
from .registry import Registry

EXPORTERS: Registry["Exporter"] = Registry("export format")
TOLERANCE = 1e-4  # max |difference| of outputs for an fp32 export to count as verified


@dataclass(frozen=True)
class Exporter:
    """One export format: how to write a file and how to run it back."""

    name: str  # format name, e.g. "onnx"
    suffix: str  # file suffix, e.g. ".onnx"
    write: Callable[[nn.Module, torch.Tensor, Path, Plan], None]  # (model, example, path, plan)
    run: Callable[[Path, torch.Tensor, Plan], torch.Tensor]  # reload the file and run a batch
    description: str = ""


def register_exporter(e: Exporter) -> Exporter:
    EXPORTERS.register(e.name, e)
    return e


def list_exporters() -> list[str]:
    return EXPORTERS.names()


@dataclass
class ExportResult:
    """What one export produced and how well the file matches the in-memory model."""

    format: str
    path: str | None  # None when the export failed
    bytes: int | None
    seconds: float
    max_abs_diff: float | None  # largest |file output - model output| on the eval batch
    agreement: float | None  # fraction of equal argmax predictions
    verified: bool
    error: str | None = None
    recipe: str | None = None  # path of the plan.json written beside it

    def to_dict(self) -> dict:
        return asdict(self)


def state_dict_hash(model: nn.Module) -> str:
    """sha256 over sorted names, dtypes, shapes and bytes of the state dict."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        out[k] = t.clone() if key in seen else t  # safetensors refuses shared storage
        seen.add(key)
    return out


# --- formats ---------------------------------------------------------------------------

def _write_safetensors(model, example, path, plan):
    from safetensors.torch import save_file

    save_file(_plain_state_dict(model), str(path), metadata={"prunescope.plan": plan.to_json(indent=None)})


def _run_safetensors(path, x, plan):
    return load(path, device=x.device)(x)


def _write_onnx(model, example, path, plan):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the current (torch.export-based) exporter, one file, dynamic batch
            prog = torch.onnx.export(model, (example,), dynamo=True, input_names=["x"], output_names=["y"],
                                     dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=65536)}},
                                     external_data=False, verbose=False)
            prog.save(str(path))
        except Exception:  # fall back to the TorchScript-based exporter
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


def _run_onnx(path, x, plan):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return torch.from_numpy(sess.run(None, {name: x.detach().cpu().numpy()})[0])


def _write_pt2(model, example, path, plan):
    ep = torch.export.export(model, (example,),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=65536)}}
                             if _forward_arg(model) == "x" else None)
    torch.export.save(ep, str(path))


def _forward_arg(model) -> str | None:
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return params[0] if params else None


def _run_pt2(path, x, plan):
    return torch.export.load(str(path)).module()(x)


def _write_torchscript(model, example, path, plan):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(model, example, check_trace=False)
    ts.save(str(path))


def _run_torchscript(path, x, plan):
    return torch.jit.load(str(path), map_location=x.device)(x)


register_exporter(Exporter("safetensors", ".safetensors", _write_safetensors, _run_safetensors,
                           "state dict + recipe; core.load rebuilds the model"))
register_exporter(Exporter("onnx", ".onnx", _write_onnx, _run_onnx, "ONNX, dynamic batch; verified with onnxruntime"))
register_exporter(Exporter("pt2", ".pt2", _write_pt2, _run_pt2, "torch.export program"))
register_exporter(Exporter("torchscript", ".pt", _write_torchscript, _run_torchscript, "TorchScript (traced)"))


# --- export and load -------------------------------------------------------------------

def recipe_path(path: Path) -> Path:
    """Where the recipe of an export lives: ``model.onnx`` -> ``model.plan.json``."""
    return path.with_name(path.name.split(".")[0] + ".plan.json")


def export_model(model: nn.Module, plan: Plan, fmt: str, out: str | Path, example: torch.Tensor, *,
                 verify: bool = True) -> ExportResult:
    """Write ``model`` in format ``fmt`` to ``out`` and check the file against the model.

    Args:
        model: the built model (masks baked in). Not changed.
        plan: its recipe, written beside the file (and into safetensors metadata).
        fmt: a name from :func:`list_exporters`.
        out: target path; its folder is created.
        example: an eval batch (at least 2 examples) used for tracing and verification.

    Returns:
        An :class:`ExportResult`; a failure is reported in ``error`` and leaves no file.

    Raises:
        UnknownNameError: unknown format (lists the valid ones).
    """
    exp = EXPORTERS.get(fmt)
    out = Path(out)
    t0 = time.perf_counter()
    model = model.eval()
    x = example.detach()
    if x.shape[0] < 2:
        x = torch.cat([x, x])
    try:
        with atomic_path(out, suffix=".tmp" + out.suffix) as tmp:
            exp.write(model, x, tmp, plan)
            diff = agree = None
            if verify:
                with torch.inference_mode():
                    ref = model(x).detach().cpu().float()
                got = exp.run(tmp, x, plan).detach().cpu().float()
                if got.shape != ref.shape:
                    raise ValueError(f"the exported file gives shape {tuple(got.shape)}, the model {tuple(ref.shape)}")
                diff = float((got - ref).abs().max())
                agree = float((got.argmax(1) == ref.argmax(1)).float().mean()) if ref.dim() == 2 else None
        rp = recipe_path(out)
        atomic_write_text(rp, plan.to_json() + "\n")
    except Exception as exc:  # any format may fail for a model; report it, keep going
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        return ExportResult(fmt, None, None, time.perf_counter() - t0, None, None, False,
                            f"{exc.__class__.__name__}: {msg[:300]}")
    ok = (not verify) or (diff is not None and diff <= TOLERANCE * max(1.0, float(ref.abs().max())))
    return ExportResult(fmt, str(out), out.stat().st_size, time.perf_counter() - t0, diff, agree, bool(ok),
                        None, str(rp))


def export_all(model: nn.Module, plan: Plan, folder: str | Path, stem: str, formats: list[str],
               example: torch.Tensor, *, verify: bool = True,
               progress: Callable[[int, int, str], None] | None = None) -> list[ExportResult]:
    """Export to several formats; one failing format does not stop the others."""
    folder = Path(folder)
    out = []
    for i, f in enumerate(formats):
        if progress:
            progress(i, len(formats), f)
        exp = EXPORTERS.get(f)
        out.append(export_model(model, plan, f, folder / f"{stem}{exp.suffix}", example, verify=verify))
    if progress:
        progress(len(formats), len(formats), "done")
    return out


def read_recipe(path: str | Path) -> Plan:
    """The plan stored in a safetensors export (or in the recipe beside any export)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "prunescope.plan" in meta:
            return Plan.from_json(meta["prunescope.plan"])
    rp = recipe_path(path)
    if rp.exists():
        return Plan.load(rp)
    raise ValueError(f"{path.name} carries no prunescope recipe and no {rp.name} lies beside it")


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported model: replay its recipe on the registered base, then load
    the saved state dict (safetensors), so structurally changed models fit.

    Raises:
        ValueError: no recipe, or the saved weights do not fit the replayed model.
    """
    from .models import load_state_dict_file

    path = Path(path)
    plan = read_recipe(path)
    model = apply(plan, ctx=ApplyContext(plan.model, torch.device(device)))
    model = _copy_if_base(model, plan, device)
    sd = load_state_dict_file(path)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path.name}: saved weights do not fit the replayed plan: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.eval()


def _copy_if_base(model, plan, device):
    from .models import clone_model, load_base

    return clone_model(model) if model is load_base(plan.model, device) else model
