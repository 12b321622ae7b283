"""Export formats: a registry of exporter classes, each able to write and reload a file.

Formats live in ``EXPORTERS`` (``@register_exporter`` on an :class:`Exporter` subclass;
:func:`list_exporters`): ``safetensors`` (state dict + recipe in the metadata),
``onnx`` (dynamic batch, checked with onnxruntime; outputs named after the model's output
leaves, ``out`` / ``aux`` for a dict; one file, or ``<name>.onnx`` plus
``<name>.onnx.data`` when the weights pass protobuf's 2 GB limit), ``pt2``
(``torch.export``) and ``torchscript`` (``torch.jit.trace``).
"""
from __future__ import annotations

import abc
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from core.errors import FOREIGN_ERRORS
from core.ground.outputs import leaves
from core.ground.registry import Registry
from core.io.recipes import METADATA_KEY, load  # the recipe a safetensors export carries, and reading it back
from core.plan import Plan

EXPORTERS: Registry[Exporter] = Registry("export format")


def export_errors() -> tuple[type[BaseException], ...]:
    """What the exporters' third-party calls raise for a model's reasons (torch.export,
    torch.onnx, torch.jit, onnx, onnxruntime, the file system): the types an export
    wrapper may catch, around those calls alone."""
    out: list[type[BaseException]] = [OSError, *FOREIGN_ERRORS]
    try:
        from torch._export.verifier import SpecViolationError

        out.append(SpecViolationError)
    except ImportError:  # pragma: no cover - another torch
        pass
    try:
        import onnx
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        out += [onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ort_state.Fail,
                ort_state.InvalidArgument, ort_state.InvalidGraph, ort_state.RuntimeException,
                ort_state.NotImplemented]
    except ImportError:  # pragma: no cover - onnx is an optional extra
        pass
    return tuple(out)
# ONNX weights above this many bytes go to an external data file (a protobuf holds at most 2 GiB)
ONNX_EXTERNAL_DATA_BYTES = (1 << 31) - (64 << 20)


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

    def side_files(self, path: Path, target: Path) -> list[tuple[Path, Path]]:
        """Files the export at ``path`` needs beside it, once it is moved to ``target``:
        ``(where the file is now, where it goes)``. The file at ``path`` may be rewritten
        to name them after ``target``. None by default."""
        return []


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator: register an instance of ``cls`` under ``cls.name``."""
    EXPORTERS.register(cls.name, cls(), overwrite=True)
    return cls


def list_exporters() -> list[str]:
    """Names of the registered export formats."""
    return EXPORTERS.names()


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
def quiet():
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


@register_exporter
class SafetensorsExporter(Exporter):
    name = "safetensors"
    suffix = ".safetensors"
    description = "state dict + recipe; core.load(path) rebuilds the model"

    def write(self, model, example, path, plan):
        from safetensors.torch import save_file

        save_file(_plain_state_dict(model), str(path), metadata={METADATA_KEY: plan.to_json(indent=None)})
        umask = os.umask(0o022)  # safetensors writes mode 600: give the file the mode every other export gets
        os.umask(umask)
        path.chmod(0o666 & ~umask)
        return None

    def reload(self, path, device):
        # our own file: it replays the plan, which needs autograd (no inference_mode)
        return load(path, device=device, train=True)


def strip_onnx_debug(path: Path) -> None:
    """Drop what only helps debugging from an ONNX file: per-node metadata (the exporter's
    stack traces and module paths), node names and doc strings, intermediate value infos,
    and long names of intermediate values (renamed ``v0``, ``v1``, ...). Inputs, outputs and
    weights keep their names; the graph computes exactly what it did. The file gets smaller
    (by a fifth to a third for the demo models)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)  # external weights stay where they are
    g = m.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output} | {t.name for t in g.initializer}
    names: dict[str, str] = {}
    # subgraphs (If, Loop, Scan) may read outer values by name: keep every name then
    nested = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute)

    counter = iter(range(1 << 62))

    def short(name: str) -> str:
        if nested or not name or name in keep:
            return name
        if name not in names:  # a fresh short name: never one a kept value (an initializer "v7") has
            new = f"v{next(counter)}"
            while new in keep:
                new = f"v{next(counter)}"
            names[name] = new
        return names[name]

    for n in g.node:
        del n.metadata_props[:]
        n.doc_string = ""
        n.name = ""
        n.input[:] = [short(x) for x in n.input]
        n.output[:] = [short(x) for x in n.output]
    del g.value_info[:]
    onnx.save(m, str(path))


@register_exporter
class OnnxExporter(Exporter):
    name = "onnx"
    suffix = ".onnx"
    description = "ONNX, dynamic batch; checked with onnxruntime (weights over 2 GB in <name>.onnx.data)"

    def write(self, model, example, path, plan):
        if getattr(model, "onnx_bytes", None) is not None:  # a Quantize step's int8 model is ONNX already
            path.write_bytes(model.onnx_bytes)
            return f"int8 ONNX from the plan's quantize step ({model.note})"
        external = _param_bytes(model) > ONNX_EXTERNAL_DATA_BYTES
        names = output_names(model, example)
        with quiet():
            try:  # the current, torch.export-based exporter
                prog = torch.onnx.export(model, (example,), dynamo=True, input_names=["input"],
                                         output_names=names, dynamic_shapes=({0: _batch_dim()},),
                                         external_data=external, verbose=False)
                prog.save(str(path), external_data=external)
                del prog
                strip_onnx_debug(path)
                return "torch.export-based ONNX exporter"
            except export_errors() as exc:  # torch.export could not take the model: the TorchScript-based one
                reason = _first_line(exc)
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"], output_names=names,
                              dynamic_axes={n: {0: "batch"} for n in ["input", *names]})
            strip_onnx_debug(path)
        return f"TorchScript-based ONNX exporter (the torch.export-based one failed: {reason})"

    def side_files(self, path, target):
        """The weights' external data file, if the export has one: renamed after ``target``
        (``<target>.data``, e.g. ``vit_h_14.onnx.data``) inside the ONNX file, and moved to a
        temp name beside it until the pair is moved into place together."""
        from core.ground.files import temp_path

        locations = onnx_external_data(path)
        if not locations:
            return []
        final = target.with_name(target.name + ".data")
        tmp = temp_path(final)
        relocate_external_data(path, final.name, tmp)
        return [(tmp, final)]

    def reload(self, path, device):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        outs = [o.name for o in sess.get_outputs()]

        def run(x):  # one output: a tensor; several (a nest's leaves): {output name: tensor}
            got = [torch.from_numpy(a) for a in sess.run(None, {name: x.detach().cpu().numpy()})]
            return got[0] if len(got) == 1 else dict(zip(outs, got))

        return run


def output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The names of an ONNX export's outputs: the model's output leaves (``core.ground.outputs.leaves``:
    ``out``, ``aux``, ``0``, ``1``; ``output`` for one tensor), found by one forward on one example."""
    with torch.inference_mode():
        return list(leaves(model(example[:1])))


def _param_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def onnx_tensors(m) -> Iterator:
    """Every ``TensorProto`` of an ONNX ``ModelProto``: the initializers of its graph and of
    every subgraph (``If`` / ``Loop`` bodies), then the tensors held by node attributes of
    the graph, its subgraphs and its functions.

    The same tensors, in the same order, as onnx's private
    ``onnx.external_data_helper._get_all_tensors``, walked here through the public protobuf
    fields so an onnx release that renames it changes nothing (tests/io/test_onnx_compat.py
    compares the two while onnx has it).
    """
    from onnx import AttributeProto

    def subgraphs(attr):
        if attr.type == AttributeProto.GRAPH:
            yield attr.g
        if attr.type == AttributeProto.GRAPHS:
            yield from attr.graphs

    def initializers(graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                for g in subgraphs(attr):
                    yield from initializers(g)

    def attribute_tensors(graph):
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                for g in subgraphs(attr):
                    yield from attribute_tensors(g)

    yield from initializers(m.graph)
    yield from attribute_tensors(m.graph)
    for fn in m.functions:
        yield from attribute_tensors(fn)


def _external_tensors(m):
    """Every tensor of an ONNX model (graph and subgraphs) stored as external data."""
    from onnx.external_data_helper import uses_external_data

    return [t for t in onnx_tensors(m) if uses_external_data(t)]


def _location(t) -> str | None:
    return next((e.value for e in t.external_data if e.key == "location"), None)


def onnx_external_data(path: Path) -> list[str]:
    """The external data files (locations relative to the ONNX file's folder) that the
    ONNX file at ``path`` reads its weights from, in first-use order; [] for one file."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return list(dict.fromkeys(loc for t in _external_tensors(m) if (loc := _location(t))))


def relocate_external_data(path: Path, location: str, move_to: Path) -> None:
    """Make the ONNX file at ``path`` read all its external weights from one file named
    ``location`` (relative to its folder), and put that file's bytes at ``move_to``.

    One data file is renamed (its offsets stay valid); several (the TorchScript-based
    exporter writes one file per tensor) are gathered into one and the old ones removed.
    """
    import onnx

    folder = path.parent
    m = onnx.load(str(path), load_external_data=False)
    old = list(dict.fromkeys(_location(t) for t in _external_tensors(m)))
    if len(old) == 1 and old[0]:
        for t in _external_tensors(m):
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        os.replace(folder / old[0], move_to)
        onnx.save(m, str(path))
        return
    m = onnx.load(str(path), load_external_data=True)  # weights in memory, then one file
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=0)
    os.replace(folder / location, move_to)
    for loc in old:
        if loc and loc != location:
            (folder / loc).unlink(missing_ok=True)


@register_exporter
class Pt2Exporter(Exporter):
    name = "pt2"
    suffix = ".pt2"
    description = "torch.export program (torch.export.load)"

    def write(self, model, example, path, plan):
        with quiet():
            try:
                ep = torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},))
                note = None
            except export_errors() as exc:  # torch.export: a model that fixes its batch size
                ep = torch.export.export(model, (example,))
                note = f"static batch of {example.shape[0]} ({_first_line(exc)})"
            torch.export.save(ep, str(path))
        return note

    def reload(self, path, device):
        with quiet():
            return torch.export.load(str(path)).module()


@register_exporter
class TorchScriptExporter(Exporter):
    name = "torchscript"
    suffix = ".pt"
    description = "TorchScript (traced); torch.jit.load"

    def write(self, model, example, path, plan):
        with quiet(), torch.no_grad():
            ts = torch.jit.trace(model, example, check_trace=False, strict=False)  # strict=False: dict outputs
            ts.save(str(path))
        return "traced"

    def reload(self, path, device):
        with quiet():
            return torch.jit.load(str(path), map_location=device)


__all__ = ["EXPORTERS", "Exporter", "register_exporter", "list_exporters", "METADATA_KEY", "quiet",
           "ONNX_EXTERNAL_DATA_BYTES", "onnx_external_data", "relocate_external_data", "onnx_tensors", "output_names"]
