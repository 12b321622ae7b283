"""Export a plan's model, verify every file, and load it back.

Formats live in the registry ``EXPORTERS`` (``@register_exporter`` on an
:class:`Exporter` subclass; :func:`list_exporters`):

- ``safetensors``: the state dict, with the recipe in the file's metadata, so
  :func:`load` rebuilds base + plan and then loads the saved weights;
- ``onnx``: one file (no external data), dynamic batch dimension, checked with onnxruntime;
- ``pt2``: a ``torch.export`` program (``torch.export.save`` / ``load``);
- ``torchscript``: ``torch.jit.trace`` + ``save``.

Masks are already baked into the built model (pruned weights are zeros); a
structurally pruned or cut model exports at its new, smaller shapes. Every write goes
to a temp file beside the target that is renamed only once the file has been reloaded
and checked, and the recipe is written beside the export as ``<stem>.plan.json``.
"""
from __future__ import annotations

import abc
import hashlib
import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from torch import nn

from .apply import ApplyContext, apply
from .fileio import atomic_path, atomic_write_text
from .plan import Plan
from .registry import Registry

EXPORTERS: Registry["Exporter"] = Registry("export format")
METADATA_KEY = "prunescope.plan"  # safetensors metadata entry holding the recipe JSON
# max |file output - model output|, relative to max(1, max |model output|), to count as verified
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-6, torch.float16: 1e-2, torch.bfloat16: 5e-2}


class Exporter(abc.ABC):
    """One export format: how to write a file and how to run it back.

    Subclasses set ``name``, ``suffix`` and ``description`` and implement
    :meth:`write` and :meth:`reload`; ``@register_exporter`` adds them to ``EXPORTERS``.
    """

    name: ClassVar[str]  # format name, e.g. "onnx"
    suffix: ClassVar[str]  # file suffix, e.g. ".onnx"
    description: ClassVar[str] = ""  # one line for the app and the CLI help

    @abc.abstractmethod
    def write(self, model: nn.Module, example: torch.Tensor, path: Path, plan: Plan) -> str | None:
        """Write ``model`` to ``path`` (which exists, empty). Returns a note or None."""

    @abc.abstractmethod
    def reload(self, path: Path, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        """Load the file at ``path`` with the format's own runtime; returns a function
        from an input batch to the output batch."""


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator: register an instance of ``cls`` under ``cls.name``."""
    EXPORTERS.register(cls.name, cls(), overwrite=True)
    return cls


def list_exporters() -> list[str]:
    """Names of the registered export formats."""
    return EXPORTERS.names()


@dataclass
class ExportResult:
    """What one export produced and how well the file matches the in-memory model."""

    format: str  # exporter name
    path: str | None  # the written file; None when the export failed (no file left)
    bytes: int | None  # file size
    seconds: float  # write + reload + compare
    max_abs_diff: float | None  # largest |file output - model output| on the eval batch
    agreement: float | None  # fraction of equal argmax predictions (None for non-2-D outputs)
    verified: bool  # reloaded and within tolerance (False when not verified)
    error: str | None = None  # why the format failed, if it did
    recipe: str | None = None  # the plan.json written beside the file
    dynamic_batch: bool | None = None  # the reloaded file also ran a batch of another size
    note: str | None = None  # e.g. which ONNX exporter was used

    def to_dict(self) -> dict:
        return asdict(self)


def state_dict_hash(model: nn.Module) -> str:
    """sha256 over the state dict: sorted names, dtypes, shapes and raw bytes.

    Identical for identical weights across runs and processes (no pointers, no
    pickling); any dtype, bfloat16 included.
    """
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().to("cpu").contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing storage (safetensors refuses that)."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        out[k] = t.clone() if key in seen else t
        seen.add(key)
    return out


@contextmanager
def _quiet():
    """Silence the exporters' warnings and torch's log lines (they go to stderr of the CLI)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=1 << 20)


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip()
    return f"{exc.__class__.__name__}: {s.splitlines()[0][:300]}" if s else exc.__class__.__name__


# --- formats ---------------------------------------------------------------------------

@register_exporter
class SafetensorsExporter(Exporter):
    name = "safetensors"
    suffix = ".safetensors"
    description = "state dict + recipe; core.load(path) rebuilds the model"

    def write(self, model, example, path, plan):
        from safetensors.torch import save_file

        save_file(_plain_state_dict(model), str(path), metadata={METADATA_KEY: plan.to_json(indent=None)})
        return None

    def reload(self, path, device):
        return load(path, device=device)  # replays the plan: needs autograd (no inference_mode)


@register_exporter
class OnnxExporter(Exporter):
    name = "onnx"
    suffix = ".onnx"
    description = "ONNX, one file, dynamic batch; checked with onnxruntime"

    def write(self, model, example, path, plan):
        with _quiet():
            try:  # the current, torch.export-based exporter
                prog = torch.onnx.export(model, (example,), dynamo=True, input_names=["input"],
                                         output_names=["output"], dynamic_shapes=({0: _batch_dim()},),
                                         external_data=False, verbose=False)
                prog.save(str(path), external_data=False)
                return "torch.export-based ONNX exporter"
            except Exception as exc:  # noqa: BLE001 - fall back to the TorchScript-based exporter
                reason = _first_line(exc)
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        return f"TorchScript-based ONNX exporter (the torch.export-based one failed: {reason})"

    def reload(self, path, device):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: torch.from_numpy(sess.run(None, {name: x.detach().cpu().numpy()})[0])


@register_exporter
class Pt2Exporter(Exporter):
    name = "pt2"
    suffix = ".pt2"
    description = "torch.export program (torch.export.load)"

    def write(self, model, example, path, plan):
        with _quiet():
            try:
                ep = torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},))
                note = None
            except Exception as exc:  # noqa: BLE001 - a model that fixes its batch size
                ep = torch.export.export(model, (example,))
                note = f"static batch of {example.shape[0]} ({_first_line(exc)})"
            torch.export.save(ep, str(path))
        return note

    def reload(self, path, device):
        with _quiet():
            return torch.export.load(str(path)).module()


@register_exporter
class TorchScriptExporter(Exporter):
    name = "torchscript"
    suffix = ".pt"
    description = "TorchScript (traced); torch.jit.load"

    def write(self, model, example, path, plan):
        with _quiet(), torch.no_grad():
            ts = torch.jit.trace(model, example, check_trace=False)
            ts.save(str(path))
        return "traced"

    def reload(self, path, device):
        with _quiet():
            return torch.jit.load(str(path), map_location=device)


# --- export and load -------------------------------------------------------------------

def recipe_path(path: str | Path) -> Path:
    """Where the recipe of an export lives: ``out/model.onnx`` -> ``out/model.plan.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".plan.json")


def _compare(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float | None]:
    got, ref = got.detach().cpu().float(), ref.detach().cpu().float()
    if got.shape != ref.shape:
        raise ValueError(f"the exported file gives outputs of shape {tuple(got.shape)}, "
                         f"the model {tuple(ref.shape)}")
    diff = float((got - ref).abs().max()) if ref.numel() else 0.0
    agree = float((got.argmax(1) == ref.argmax(1)).float().mean()) if ref.dim() == 2 else None
    return diff, agree


def _run(fn: Callable, x: torch.Tensor) -> torch.Tensor:
    with _quiet(), torch.inference_mode():
        return fn(x)


def _tolerance(ref: torch.Tensor) -> float:
    """Largest |diff| accepted for outputs ``ref``: the dtype's tolerance, scaled by magnitude."""
    return TOLERANCE.get(ref.dtype, 1e-4) * max(1.0, float(ref.abs().max()) if ref.numel() else 1.0)


def export_model(model: nn.Module, plan: Plan, fmt: str, out: str | Path, example: torch.Tensor, *,
                 verify: bool = True) -> ExportResult:
    """Write ``model`` in format ``fmt`` to ``out`` and check the file against the model.

    The file is written to a temp path beside ``out``, reloaded with the format's own
    runtime and compared with ``model`` on ``example`` (``verify``), and only then
    renamed to ``out``; the recipe goes beside it (:func:`recipe_path`).

    Args:
        model: the built model (masks baked in). Its weights are not changed; it is
            run in eval mode (its train/eval mode is restored afterwards).
        plan: its recipe, written beside the file (and into safetensors metadata).
        fmt: a name from :func:`list_exporters`.
        out: target path; its folder is created.
        example: an eval batch on the model's device, used for tracing and verification
            (a single example is repeated to make a batch of 2).
        verify: reload the file and compare outputs.

    Returns:
        An :class:`ExportResult`. A failing format is reported in ``error`` and leaves
        no file (neither the export nor its recipe).

    Raises:
        UnknownNameError: unknown format (the message lists the valid ones).
    """
    exp = EXPORTERS.get(fmt)
    out = Path(out)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    x = example.detach()
    if x.shape[0] < 2:
        x = torch.cat([x, x])
    diff = agree = dynamic = None
    ok = False  # "verified" means reloaded and compared, never assumed
    try:
        with atomic_path(out, suffix=".tmp" + out.suffix) as tmp:
            note = exp.write(model, x, tmp, plan)
            if verify:
                run = exp.reload(tmp, x.device)
                ref = _run(model, x)
                diff, agree = _compare(_run(run, x), ref)
                ok = diff <= _tolerance(ref)
                try:  # a batch of another size: does the file keep a dynamic batch dimension?
                    ref1 = _run(model, x[:-1])
                    dynamic = _compare(_run(run, x[:-1]), ref1)[0] <= _tolerance(ref1)
                except Exception:  # noqa: BLE001 - a static-batch file rejects other sizes
                    dynamic = False
        try:
            rp = recipe_path(out)
            atomic_write_text(rp, plan.to_json() + "\n")
        except Exception:
            out.unlink(missing_ok=True)
            raise
    except Exception as exc:  # noqa: BLE001 - any format may fail for a model; report it
        return ExportResult(fmt, None, None, time.perf_counter() - t0, None, None, False, _first_line(exc))
    finally:
        model.train(was_training)
    return ExportResult(fmt, str(out), out.stat().st_size, time.perf_counter() - t0, diff, agree, bool(ok),
                        None, str(rp), dynamic, note)


def export_all(model: nn.Module, plan: Plan, folder: str | Path, stem: str, formats: list[str],
               example: torch.Tensor, *, verify: bool = True,
               progress: Callable[[int, int, str], None] | None = None) -> list[ExportResult]:
    """Export to several formats as ``folder/<stem><suffix>``; one failing format does
    not stop the others.

    Args:
        progress: called as ``progress(done, total, format)`` before each format and
            ``progress(total, total, "done")`` at the end.

    Raises:
        UnknownNameError: a format name is unknown (checked before anything is written).
    """
    exporters = [EXPORTERS.get(f) for f in formats]
    folder = Path(folder)
    out = []
    for i, exp in enumerate(exporters):
        if progress:
            progress(i, len(exporters), exp.name)
        out.append(export_model(model, plan, exp.name, folder / f"{stem}{exp.suffix}", example, verify=verify))
    if progress:
        progress(len(exporters), len(exporters), "done")
    return out


def read_recipe(path: str | Path) -> Plan:
    """The plan stored in a safetensors export, or in the recipe beside any export.

    Raises:
        ValueError: no such file, or no recipe in it or beside it.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if METADATA_KEY in meta:
            return Plan.from_json(meta[METADATA_KEY])
    rp = recipe_path(path)
    if rp.exists():
        return Plan.load(rp)
    raise ValueError(f"{path.name} carries no prunescope recipe and no {rp.name} lies beside it")


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a safetensors export: replay its recipe on the registered base (so a
    structurally pruned or cut model gets its new shapes), then load the saved state
    dict into it, strictly (every name and shape must match).

    Args:
        path: a ``.safetensors`` file written by :func:`export_model`.
        device: where to build the model.

    Returns:
        A new model in eval mode (never the shared base).

    Raises:
        ValueError: no recipe, a plan step that no longer fits (``PlanError``), or saved
            weights that do not fit the replayed model.
    """
    from .models import clone_model, load_base, load_state_dict_file

    path = Path(path)
    plan = read_recipe(path)
    device = torch.device(device)
    model = apply(plan, ctx=ApplyContext(plan.model, device))
    if model is load_base(plan.model, device):  # an empty plan returns the shared base
        model = clone_model(model)
    sd = load_state_dict_file(path)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path.name}: the saved weights do not fit the model its recipe builds: "
                         f"{str(exc).strip().splitlines()[0]}") from None
    return model.eval()


__all__ = ["EXPORTERS", "Exporter", "ExportResult", "register_exporter", "list_exporters", "state_dict_hash",
           "export_model", "export_all", "recipe_path", "read_recipe", "load", "TOLERANCE"]
