"""Export a plan's model, verify every file, and load it back.

Formats live in the registry ``EXPORTERS`` (``exporters.py``):

- ``safetensors``: the state dict, with the recipe in the file's metadata, so
  :func:`load` rebuilds base + plan and then loads the saved weights;
- ``onnx``: dynamic batch dimension, checked with onnxruntime; one file, or, when the
  weights pass protobuf's 2 GB limit, ``<name>.onnx`` with its weights in ``<name>.onnx.data``;
- ``pt2``: a ``torch.export`` program (``torch.export.save`` / ``load``);
- ``torchscript``: ``torch.jit.trace`` + ``save``.
- ``hf`` (not in the registry: a folder, ``core/io/hf_export.py``): a transformers folder
  loaded by transformers alone in a fresh process to verify it.

Masks are already baked into the built model (pruned weights are zeros); a
structurally pruned or cut model exports at its new, smaller shapes. Every write goes
to a temp file beside the target that is renamed only once the file has been reloaded
and checked (from a copy in another folder, under the final names, so a file that needs
a companion it does not name correctly fails there), and the recipe is written beside
the export as ``<stem>.plan.json``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from core.errors import FileError, PrunescopeError, first_line
from core.ground.files import replace_together, sweep_stale, temp_path
from core.ground.outputs import SINGLE, align_detections, leaves
from core.io.exporters import EXPORTERS, export_errors, quiet
from core.io.hf_export import HF_FORMAT, check_hf_target, export_hf
from core.io.recipes import recipe_path
from core.plan import Plan

# max |file output - model output|, relative to max(1, max |model output|), to count as verified
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-6, torch.float16: 1e-2, torch.bfloat16: 5e-2}


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
    # every file of the export (the file, then its .onnx.data if any); bytes: their total
    files: list[str] | None = None
    # max |file output - model output| per output leaf (``core.ground.outputs.leaves``: "output" for one tensor)
    leaf_diffs: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def state_dict_hash(model: nn.Module) -> str:
    """sha256 over the state dict: sorted names, dtypes, shapes and raw bytes.

    Identical for identical weights across runs and processes (no pointers, no
    pickling); any dtype, bfloat16 included. A quantised model (int8 ONNX) hashes its
    ONNX bytes too, since its weights live there.
    """
    h = hashlib.sha256()
    if getattr(model, "onnx_bytes", None) is not None:
        h.update(model.onnx_bytes)
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().to("cpu").contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _failure(exc: BaseException) -> str:
    """One line for a failed format: the class name and the first line of the message."""
    return f"{exc.__class__.__name__}: {first_line(exc)[:300]}"


def _compare(got, ref, skipped: list | None = None) -> tuple[float, float | None, dict[str, float], bool]:
    """The file's outputs ``got`` against the model's ``ref``, leaf by leaf (``leaves``: a nest's
    leaves by name, else by position): ``(max |diff| over leaves, argmax agreement of a single
    2-D output, max |diff| per leaf, every leaf within its tolerance)``. A detector's boxes are
    matched box for box first (``align_detections``); ``skipped`` gets the count of boxes tied
    at the cut-off score that were not compared."""
    got, ref = leaves(got), leaves(ref)
    if got.keys() != ref.keys():
        if len(got) != len(ref):
            raise PrunescopeError(f"the exported file gives {len(got)} outputs ({', '.join(got)}), "
                                  f"the model {len(ref)} ({', '.join(ref)})")
        got = dict(zip(ref, got.values()))
    got, tied = align_detections(got, ref, _tolerance)  # a detector's boxes in any order, ties at the cut-off
    if skipped is not None:
        skipped.append(tied)
    per, ok, agree = {}, True, None
    for k, r in ref.items():
        g, r = got[k].detach().cpu().float(), r.detach().cpu().float()
        if g.shape != r.shape:
            raise PrunescopeError(f"the exported file gives outputs {'' if k == SINGLE else repr(k) + ' '}"
                                  f"of shape {tuple(g.shape)}, the model {tuple(r.shape)}")
        per[k] = float((g - r).abs().max()) if r.numel() else 0.0
        ok = ok and per[k] <= _tolerance(r)
        if len(ref) == 1 and r.dim() == 2:
            agree = float((g.argmax(1) == r.argmax(1)).float().mean())
    return max(per.values(), default=0.0), agree, per, ok


def _run(fn: Callable, x: torch.Tensor):
    with quiet(), torch.inference_mode():
        return fn(x)


def _tolerance(ref: torch.Tensor) -> float:
    """Largest |diff| accepted for outputs ``ref`` (one leaf): the dtype's tolerance, scaled by magnitude."""
    return TOLERANCE.get(ref.dtype, 1e-4) * max(1.0, float(ref.abs().max()) if ref.numel() else 1.0)


def _copy_elsewhere(pairs: list[tuple[Path, Path]], folder: Path) -> Path:
    """Hard-link (else copy) each ``(file, final path)`` into ``folder`` under its final name;
    returns the first one's copy."""
    out = []
    for src, final in pairs:
        dst = folder / final.name
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        out.append(dst)
    return out[0]


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no such query here (Windows): the common limit
        return 255


def _check_writable(out: Path) -> None:
    """An export to ``out`` can be written: no file where a folder must be, no folder where
    the file or its recipe go, no name longer than the file system allows (the temp files
    beside the target included).

    Raises:
        FileError: naming the path and what is in the way.
    """
    rp = recipe_path(out)
    existing = out.parent
    while not _exists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FileError(f"cannot export to {str(out)!r}: {str(existing)!r} is a file, not a folder")
    limit = _name_max(existing)
    made = [p.name for p in out.parents if p != existing and existing in p.parents]  # folders to create
    for name in made + [temp_path(out).name, temp_path(rp).name]:
        if len(os.fsencode(name)) > limit:
            raise FileError(f"cannot export to {str(out)!r}: the name {name[:40]!r}... is "
                            f"{len(os.fsencode(name))} bytes, and this file system allows {limit} (the export "
                            "also writes a temporary file named after the target beside it); choose a shorter name")
    for target in (out, rp):
        if target.exists() and not target.is_file():
            raise FileError(f"cannot export to {str(out)!r}: {str(target)!r} is a folder (or not a regular file); "
                            "move it, or choose another name")


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:  # a name too long to look up: not there
        return False


def check_export_target(fmt: str, out: str | Path, plan: Plan, example: torch.Tensor | None = None,
                        model_name: str | None = None) -> None:
    """The checks made before anything is written.

    Raises:
        UnknownNameError: unknown format.
        PrunescopeError: ``out`` does not end in the format's suffix; the plan is for
            another model than ``model_name``, or its model takes other inputs than ``example``.
        FileError: ``out`` cannot be written (a file where its folder goes, a folder where
            it or its recipe goes, a name too long for the file system).
    """
    if fmt == HF_FORMAT:  # a folder, not a file of the registry (core/io/hf_export.py)
        return check_hf_target(out, plan, None, model_name)
    exp = EXPORTERS.get(fmt)
    out = Path(out)
    if out.suffix != exp.suffix:
        raise PrunescopeError(f"a {exp.name} export must end in {exp.suffix!r}, got {out.name!r}; "
                              f"name the file <stem>{exp.suffix} or choose the format that fits it")
    if model_name is not None and plan.model != model_name:
        raise PrunescopeError(f"the plan is for model {plan.model!r}, the model exported is {model_name!r}")
    _check_writable(out)
    if plan.steps and plan.steps[-1].op == "quantize" and exp.name != "onnx":
        raise PrunescopeError(f"a quantised model (int8, run by onnxruntime) exports as onnx only, not {exp.name}; "
                              "export the plan without its quantize step for the other formats")
    if example is not None:
        from core.sources.models import MODELS

        spec = MODELS.find(plan.model)
        if spec is not None and tuple(example.shape[1:]) != tuple(spec.input_shape):
            raise PrunescopeError(f"the plan is for model {plan.model!r}, which takes inputs of shape "
                                  f"{tuple(spec.input_shape)}; the example batch has {tuple(example.shape[1:])}")


class _FormatFailed(Exception):
    """What a format's exporter or runtime raised inside :func:`_verify` (``cause``): the
    export of that format failed, and :func:`export_model` reports it in ``error``."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def _verify(exp, model: nn.Module, x: torch.Tensor, copy: Path, errors: tuple, tied: list) -> tuple:
    """Reload ``copy`` with the format's runtime and compare it with ``model`` on ``x``, every
    output leaf: ``(max |diff|, argmax agreement, max |diff| per leaf, within tolerance, keeps a dynamic batch)``;
    ``tied`` gets the count of a detector's boxes tied at the cut-off score, not compared.

    Raises:
        _FormatFailed: the file does not reload or run, or its outputs have another shape.
    """
    try:
        run = exp.reload(copy, x.device)
        got, ref = _run(run, x), _run(model, x)
    except errors as exc:
        raise _FormatFailed(exc) from exc
    try:
        diff, agree, per, ok = _compare(got, ref, tied)
    except PrunescopeError as exc:  # the file's outputs have another shape
        raise _FormatFailed(exc) from exc
    try:  # a batch of another size: does the file keep a dynamic batch dimension?
        dynamic = _compare(_run(run, x[:-1]), _run(model, x[:-1]))[3]
    except (*errors, PrunescopeError):  # a static-batch file rejects other sizes
        dynamic = False
    del run  # an onnxruntime session maps the data file: let go of it before the folder goes
    return diff, agree, per, ok, dynamic


def _make_folder(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileError(f"cannot create the folder of {str(out)!r}: {exc.strerror or exc}") from exc


def _remove_temps(out: Path, temps: list[Path]) -> None:
    """Remove an export's temp files, and the side files an exporter wrote beside its temp file."""
    if out.parent.is_dir():
        for t in temps:
            t.unlink(missing_ok=True)
        for extra in out.parent.glob(f"{temps[0].name}*"):
            extra.unlink(missing_ok=True)


def export_model(model: nn.Module, plan: Plan, fmt: str, out: str | Path, example: torch.Tensor, *,
                 verify: bool = True, model_name: str | None = None, pad: bool = False,
                 reports: list | None = None) -> ExportResult:
    """Write ``model`` in format ``fmt`` to ``out`` and check the file against the model.

    The file is written to a temp path beside ``out``, reloaded with the format's own
    runtime and compared with ``model`` on ``example`` (``verify``), and only then
    renamed to ``out``; the recipe goes beside it (:func:`recipe_path`).

    Args:
        model: the built model (masks baked in). Its weights are not changed; it is
            run in eval mode (its train/eval mode is restored afterwards).
        plan: its recipe, written beside the file (and into safetensors metadata).
        fmt: a name from :func:`list_exporters`, or "hf" (a folder transformers loads alone: ``hf_export.py``).
        out: target path; its folder is created.
        example: an eval batch on the model's device, used for tracing and verification
            (a single example is repeated to make a batch of 2).
        verify: reload the file and compare outputs.
        model_name: the registry name of ``model``'s base, checked against ``plan.model``
            (default: the name the model was built as, :func:`core.sources.models.built_for`).
        pad, reports: "hf" only (:func:`core.io.hf_export.export_hf`): write removed heads and
            neurons back as zeros where the config cannot say the pruned shapes, placed where
            the plan's step ``reports`` say they were.

    Returns:
        An :class:`ExportResult`. A failing format is reported in ``error`` and leaves
        no new file; an earlier export at ``out`` and its recipe stay as they were until
        the new file and its recipe are both complete, then both are replaced together.
        A format that writes companion files (ONNX weights over 2 GB: ``<out>.data``)
        lists them in ``files``, and ``bytes`` is the total of all of them; the file is
        verified from a copy of them in another folder.

    Raises:
        UnknownNameError: unknown format (the message lists the valid ones).
        PrunescopeError: see :func:`check_export_target` (nothing is written); ``pad`` with
            another format than "hf".
    """
    if fmt == HF_FORMAT:  # a folder transformers loads alone, checked in a fresh process (hf_export.py)
        return ExportResult(**export_hf(model, plan, out, example, verify=verify, model_name=model_name, pad=pad,
                                        reports=reports))
    if pad:
        raise PrunescopeError(f"pad applies to the hf format only (a transformers folder), not {fmt!r}")
    return _export_file(EXPORTERS.get(fmt), model, plan, Path(out), example, verify, model_name)


def _export_file(exp, model: nn.Module, plan: Plan, out: Path, example: torch.Tensor, verify: bool,
                 model_name: str | None) -> ExportResult:
    """:func:`export_model` for a one-file format of the registry."""
    from core.sources.models import built_for

    fmt = exp.name
    check_export_target(fmt, out, plan, example, model_name or built_for(model))
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    x = example.detach() if len(example) >= 2 else torch.cat([example.detach()] * 2)  # a batch of 2 at least
    diff, agree, per, ok, dynamic = None, None, None, False, None  # "verified": reloaded and compared, never assumed
    rp = recipe_path(out)
    tmp, tmp_rp = temp_path(out), temp_path(rp)
    sides: list[tuple[Path, Path]] = []
    errors = export_errors()  # the exporters' and runtimes' failures for this model's reasons

    def failed(exc: BaseException) -> ExportResult:  # nothing moved into place: an earlier pair is unchanged
        return ExportResult(fmt, None, None, time.perf_counter() - t0, None, None, False, _failure(exc))

    try:
        _make_folder(out)
        sweep_stale(out.parent)
        # write, reload and compare the temp file; then the recipe; then all into place together
        try:
            note = exp.write(model, x, tmp, plan)
            sides = exp.side_files(tmp, out)
        except errors as exc:
            return failed(exc)
        if verify:
            with tempfile.TemporaryDirectory(prefix="prunescope-verify-") as d:
                # a copy under the final names, in another folder: the file must find its companions there
                copy = _copy_elsewhere([(tmp, out)] + sides, Path(d))
                diff, agree, per, ok, dynamic = _verify(exp, model, x, copy, errors, tied := [])
                if tied and tied[0]:  # equal scores: either runtime may keep any of them
                    note = f"{note + '; ' if note else ''}{tied[0]} box(es) tied at the cut-off score not compared"
        stale = [] if sides else [p for p in (out.with_name(out.name + ".data"),) if p.exists()]
        try:
            tmp_rp.write_text(plan.to_json() + "\n")
            replace_together([(tmp, out), *sides, (tmp_rp, rp)])  # all or none
        except OSError as exc:
            return failed(exc)
        for p in stale:  # an earlier export's weights file that the new one does not use
            p.unlink(missing_ok=True)
    except _FormatFailed as exc:
        return failed(exc.cause)
    finally:
        model.train(was_training)
        _remove_temps(out, [tmp, tmp_rp, *(s for s, _ in sides)])
    files = [out] + [final for _, final in sides]
    return ExportResult(fmt, str(out), sum(f.stat().st_size for f in files), time.perf_counter() - t0, diff, agree,
                        bool(ok), None, str(rp), dynamic, note, [str(f) for f in files], per)


def export_all(model: nn.Module, plan: Plan, folder: str | Path, stem: str, formats: list[str],
               example: torch.Tensor, *, verify: bool = True, model_name: str | None = None,
               progress: Callable[[int, int, str], None] | None = None, pad: bool = False,
               reports: list | None = None) -> list[ExportResult]:
    """Export to several formats as ``folder/<stem><suffix>``; one failing format does
    not stop the others.

    Args:
        progress: called as ``progress(done, total, format)`` before each format and
            ``progress(total, total, "done")`` at the end.
        pad, reports: for "hf" (see :func:`export_model`).

    Raises:
        UnknownNameError: a format name is unknown (checked before anything is written).
    """
    suffixes = {f: "" if f == HF_FORMAT else EXPORTERS.get(f).suffix for f in formats}  # hf: a folder named stem
    folder = Path(folder)
    for f, suffix in suffixes.items():  # every target checked before anything is written
        check_export_target(f, folder / f"{stem}{suffix}", plan, example, model_name)
    out = []
    for i, (f, suffix) in enumerate(suffixes.items()):
        if progress:
            progress(i, len(suffixes), f)
        out.append(export_model(model, plan, f, folder / f"{stem}{suffix}", example, verify=verify,
                                model_name=model_name, **({"pad": pad, "reports": reports} if f == HF_FORMAT else {})))
    if progress:
        progress(len(suffixes), len(suffixes), "done")
    return out


__all__ = ["ExportResult", "TOLERANCE", "check_export_target", "state_dict_hash", "export_model", "export_all",
           "recipe_path"]
