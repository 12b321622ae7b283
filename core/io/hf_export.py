"""The ``hf`` export: a folder that transformers loads on its own (no prunescope needed).

``export_model(model, plan, "hf", out, example)`` writes ``out/`` as ``save_pretrained``
would: ``config.json`` updated to the pruned shapes (``hf_shapes.loadable_config``),
``model.safetensors`` (GPT-2's linear layers back in ``Conv1D`` layout, blocks renumbered
after cuts), the tokenizer files and ``generation_config.json`` of the model's own folder,
and the recipe as ``prunescope.plan.json``. Everything is written into a temp folder beside
``out``, loaded by transformers in a fresh Python process that cannot import prunescope
(``AutoModel`` / ``AutoModelForSequenceClassification`` / ``AutoModelForCausalLM``, as the
model's task) and compared with the model on the example batch; only then is the folder
moved to ``out`` (an earlier export there is replaced whole, or kept if anything fails).
With ``pad=True`` shapes the config cannot say are zero-padded first (``hf_pad.py``); the
check then shows the padded folder computes exactly what the pruned model does.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from core.errors import FileError, PrunescopeError, first_line
from core.ground.files import sweep_stale, temp_path
from core.io.hf_pad import kept_positions, pad_model
from core.io.hf_shapes import NotLoadableError, container_path, family_of, loadable_config
from core.plan import Plan

HF_FORMAT = "hf"
HF_DESCRIPTION = "a folder transformers loads alone (config, safetensors, tokenizer); checked in a fresh process"
RECIPE_NAME = "prunescope.plan.json"
COPIED = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
          "special_tokens_map.json", "added_tokens.json", "generation_config.json")
AUTO_CLASS = {"logits": "AutoModelForSequenceClassification", "next-token": "AutoModelForCausalLM",
              "pooled": "AutoModel"}
VERIFY_TIMEOUT_S = 600
TOLERANCE = 1e-4  # max |diff| relative to max(1, max |output|), fp32

# Runs in the fresh process: transformers alone (prunescope's packages are blocked), the same
# reduction to (N, K) as HFModel.forward; writes the outputs and what the load reported.
_CHILD = r"""
import json, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("core", "app", "demo_models"):
            raise ModuleNotFoundError(f"{name}: the check runs without prunescope")
sys.meta_path.insert(0, _Block())
import torch, transformers as tf
from safetensors.torch import load_file, save_file
a = json.loads(sys.argv[1])
cls = getattr(tf, a["auto_class"])
m, info = cls.from_pretrained(a["folder"], local_files_only=True, dtype=torch.float32, attn_implementation="sdpa",
                              output_loading_info=True)
m.eval()
x = load_file(a["inputs"])["input_ids"]
mask = None if a["pad_id"] is None else (x != a["pad_id"]).long()
with torch.no_grad():
    if a["output"] == "logits":
        y = m(input_ids=x, attention_mask=mask).logits
    elif a["output"] == "next-token":
        h = m.base_model(input_ids=x, attention_mask=mask, use_cache=False).last_hidden_state
        h = h[:, -1] if mask is None else h.gather(1, (mask.sum(1) - 1).clamp(min=0)[:, None, None].expand(
            -1, 1, h.shape[-1]))[:, 0]
        y = m.get_output_embeddings()(h)
    else:
        out = m(input_ids=x, attention_mask=mask)
        if a["pooling"] == "cls":
            y = out.pooler_output
        else:
            h = out.last_hidden_state
            mk = torch.ones(h.shape[:2]) if mask is None else mask.to(h.dtype)
            y = (h * mk[..., None]).sum(1) / mk.sum(1, keepdim=True).clamp(min=1)
save_file({"y": y.float().contiguous()}, a["outputs"])
print(json.dumps({"class": type(m).__name__, "transformers": tf.__version__,
                  **{k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs"}}))
"""


def hf_source(model: nn.Module, model_name: str | None) -> Path | None:
    """The folder the model was loaded from: its registered entry's, else its config's path."""
    from core.sources.models import MODELS

    spec = MODELS.find(model_name) if model_name else None
    cands = [spec.extra.get("tokenizer") if spec else None,
             getattr(getattr(spec, "factory", None), "keywords", {}).get("path") if spec else None,
             getattr(getattr(getattr(model, "hf", None), "config", None), "name_or_path", None)]
    for c in cands:
        if isinstance(c, str) and c and (Path(c) / "config.json").is_file():
            return Path(c)
    return None


def check_hf_target(out: str | Path, plan: Plan, model: nn.Module | None = None, model_name: str | None = None
                    ) -> None:
    """The checks made before anything is written.

    Raises:
        PrunescopeError: not a Hugging Face model; the plan is for another model; a quantised plan.
        FileError: ``out`` is a file, or its parent is not a folder.
    """
    if model is not None and type(getattr(model, "hf", None)).__module__.split(".")[0] != "transformers":
        raise PrunescopeError(f"the {HF_FORMAT} export writes a transformers folder; {model_name or 'this model'!r} "
                              f"is a {type(model).__name__}, not a Hugging Face model loaded from a folder. Use "
                              "safetensors, onnx, pt2 or torchscript")
    if model_name is not None and plan.model != model_name:
        raise PrunescopeError(f"the plan is for model {plan.model!r}, the model exported is {model_name!r}")
    if plan.steps and plan.steps[-1].op == "quantize":
        raise PrunescopeError("a quantised model (int8, run by onnxruntime) exports as onnx only, not hf")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileError(f"cannot export to {str(out)!r}: it is a file, and the {HF_FORMAT} export writes a folder")
    if out.parent.exists() and not out.parent.is_dir():
        raise FileError(f"cannot export to {str(out)!r}: {str(out.parent)!r} is a file, not a folder")


def _source_tensors(src: Path | None, names: list[str]) -> dict[str, torch.Tensor]:
    """Tensors of the model's own folder (an encoder's pooler, unused under mean pooling, so not kept in memory)."""
    from safetensors import safe_open

    files = sorted(src.glob("*.safetensors")) if src else []
    out = {}
    for f in files:
        with safe_open(str(f), "pt") as fh:
            out.update({k: fh.get_tensor(k) for k in names if k in fh.keys()})
    return out


def export_state(hf: nn.Module, config, blocks: list[nn.Module], src: Path | None) -> dict[str, torch.Tensor]:
    """The state dict transformers expects for ``config``: blocks renumbered, ``Conv1D`` weights
    transposed back, tied copies left out, a missing pooler taken from the model's folder.

    Raises:
        NotLoadableError: a weight the architecture has no place for, one it misses, or a shape it does not say.
    """
    from transformers.pytorch_utils import Conv1D

    cont = container_path(hf, family_of(hf))
    sd = {k: v for k, v in hf.state_dict().items() if not k.startswith(cont + ".")}
    for i, b in enumerate(blocks):
        sd.update({f"{cont}.{i}.{k}": v for k, v in b.state_dict().items()})
    with torch.device("meta"):
        skel = type(hf)(config)
    want = skel.state_dict()
    unique = {n for n, _ in skel.named_parameters()} | {n for n, _ in skel.named_buffers()}
    tied = [k for k in want if k not in unique]
    conv = {f"{n}.weight" for n, m in skel.named_modules() if isinstance(m, Conv1D)}
    sd = {k: (v.t() if k in conv else v).detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
          .contiguous().clone() for k, v in sd.items()}
    missing = [k for k in want if k not in sd and k not in tied]
    sd.update(_source_tensors(src, [k for k in missing if ".pooler." in f".{k}"]))
    reasons = [f"no weight for {k}" for k in want if k not in sd and k not in tied][:5]
    reasons += [f"{k}: a weight {type(hf).__name__} has no place for (a bridge, an adapter, a pasted block of "
                "another kind?)" for k in sd if k not in want][:5]
    reasons += [f"{k} is {tuple(sd[k].shape)}, the config says {tuple(want[k].shape)}"
                for k in want if k in sd and sd[k].shape != want[k].shape][:5]
    if reasons:
        raise NotLoadableError(reasons)
    return {k: v for k, v in sd.items() if k not in tied}


def write_folder(model: nn.Module, plan: Plan, folder: Path, src: Path | None, pad: bool = False,
                 positions: dict[str, list[int]] | None = None) -> str:
    """Write config, weights, tokenizer files and recipe into ``folder`` (which exists, empty).
    Returns a note naming what was padded (``pad``: :func:`~core.io.hf_pad.pad_model`, units at
    ``positions``) and copied. Files get the mode a plain ``open`` gives (the umask's), as other exports.

    Raises:
        NotLoadableError: the shapes cannot be said by the config (nothing useful is left in ``folder``).
    """
    from safetensors.torch import save_file

    hf, padding = pad_model(model.hf, positions) if pad else (model.hf, None)
    config, blocks = loadable_config(hf)
    sd = export_state(hf, config, blocks, src)
    if getattr(config, "tie_word_embeddings", False) and hf.get_output_embeddings() is not None and not torch.equal(
            hf.get_output_embeddings().weight, hf.get_input_embeddings().weight):
        config.tie_word_embeddings = False  # the two were trained apart: both are written
    config.save_pretrained(str(folder))
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    shutil.copymode(folder / "config.json", folder / "model.safetensors")  # save_file's temp file is 0600
    copied = [f for f in COPIED if src and (src / f).is_file()]
    for f in copied:
        shutil.copyfile(src / f, folder / f)
    (folder / RECIPE_NAME).write_text(plan.to_json() + "\n")
    note = f"copied from {src}: {', '.join(copied)}" if copied else "no tokenizer files found to copy"
    return note if padding is None else f"{padding.note(sum(v.numel() for v in sd.values()))}; {note}"


def verify_folder(model: nn.Module, folder: Path, x: torch.Tensor) -> tuple[float, float | None, bool, str]:
    """Load ``folder`` with transformers in a fresh process without prunescope, run ``x``, compare
    with ``model(x)``: ``(max |diff|, argmax agreement, within tolerance, note)``.

    Raises:
        PrunescopeError: the process failed (its last line), timed out, or gave another shape.
    """
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory(prefix="prunescope-hfcheck-") as d:
        ins, outs = Path(d) / "in.safetensors", Path(d) / "out.safetensors"
        ids = x.detach().cpu().round().long() if x.is_floating_point() else x.detach().cpu().long()
        save_file({"input_ids": ids.contiguous()}, str(ins))
        args = {"auto_class": AUTO_CLASS[model.output], "folder": str(folder), "inputs": str(ins),
                "outputs": str(outs), "output": model.output, "pad_id": model.pad_id, "pooling": model.pooling}
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        try:
            r = subprocess.run([sys.executable, "-I", "-c", _CHILD, json.dumps(args)], cwd=d, env=env,
                               capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise PrunescopeError(f"loading the folder with transformers took over {VERIFY_TIMEOUT_S} s") from exc
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise PrunescopeError(f"transformers could not load or run the folder: {tail[:300]}")
        info = json.loads(r.stdout.strip().splitlines()[-1])
        got = load_file(str(outs))["y"]
    with torch.inference_mode():
        ref = model(x).detach().cpu().float()
    if got.shape != ref.shape:
        raise PrunescopeError(f"transformers gives outputs of shape {tuple(got.shape)}, the model {tuple(ref.shape)}")
    diff = float((got - ref).abs().max()) if ref.numel() else 0.0
    agree = float((got.argmax(1) == ref.argmax(1)).float().mean()) if model.output != "pooled" else None
    off = [f"{k}: {', '.join(v[:3])}" for k, v in info.items() if isinstance(v, list) and v]
    ok = diff <= TOLERANCE * max(1.0, float(ref.abs().max())) and not off
    note = (f"loaded by {args['auto_class']} -> {info['class']} (transformers {info['transformers']}) in a fresh "
            f"process without prunescope; {AUTO_OUTPUT[model.output]} compared")
    return diff, agree, ok, note + (f"; load reported {'; '.join(off)}" if off else "")


AUTO_OUTPUT = {"logits": "classification logits", "next-token": "next-token logits at the last position",
               "pooled": "pooled embeddings"}


def _swap_in(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``; an earlier folder there is moved aside first and
    restored if the move fails."""
    old = temp_path(out, ".old") if out.exists() else None
    if old:
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old:
            os.replace(old, out)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def export_hf(model: nn.Module, plan: Plan, out: str | Path, example: torch.Tensor, *, verify: bool = True,
              model_name: str | None = None, source: str | Path | None = None, pad: bool = False,
              reports: list | None = None) -> dict:
    """Write ``model`` (an :class:`~core.sources.hf.HFModel`) as a transformers folder at ``out``.

    Args:
        pad: write removed heads and MLP neurons back as zeros where the config cannot say the
            pruned shapes (``hf_pad.py``); the outputs stay exactly the pruned model's, the note
            says what was padded and the parameters it costs.
        reports: the plan's step reports (``Workspace.reports``): padded units go back where
            they were; without them, at the end.
        source: the folder the model was loaded from (tokenizer files); default: its
            registered entry's folder, else its config's ``name_or_path``.

    Returns:
        The fields of an ``ExportResult`` (``export_model`` makes it): a shape the config cannot
        say, or a folder that does not load, is its ``error``, and nothing is written.

    Raises:
        PrunescopeError, FileError: see :func:`check_hf_target` (nothing is written).
    """
    from core.sources.models import built_for

    out = Path(out)
    name = model_name or built_for(model)
    check_hf_target(out, plan, model, name)
    t0 = time.perf_counter()
    src = Path(source) if source else hf_source(model, name)
    x = example.detach() if len(example) >= 2 else torch.cat([example.detach()] * 2)
    res = {"format": HF_FORMAT, "path": None, "bytes": None, "max_abs_diff": None, "agreement": None,
           "verified": False, "error": None, "recipe": None, "dynamic_batch": None, "note": None, "files": None}
    was_training = model.training
    model.eval()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileError(f"cannot create the folder of {str(out)!r}: {exc.strerror or exc}") from exc
    sweep_stale(out.parent)  # temp folders of exports whose process is gone
    tmp = temp_path(out, "")
    tmp.mkdir()
    try:
        note = write_folder(model, plan, tmp, src, pad, kept_positions(plan, reports, "hf.") if pad else None)
        if verify:
            diff, agree, ok, vnote = verify_folder(model, tmp, x)
            res.update(max_abs_diff=diff, agreement=agree, verified=ok)
            note = f"{vnote}; {note}"
        _swap_in(tmp, out)
    except (NotLoadableError, PrunescopeError, OSError) as exc:  # shapes, the fresh process, the file system
        return {**res, "seconds": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {first_line(exc)}"}
    finally:
        model.train(was_training)
        shutil.rmtree(tmp, ignore_errors=True)
    files = sorted(p for p in out.iterdir() if p.is_file())
    return {**res, "path": str(out), "bytes": sum(p.stat().st_size for p in files), "note": note,
            "recipe": str(out / RECIPE_NAME), "files": [str(p) for p in files], "seconds": time.perf_counter() - t0,
            "dynamic_batch": None}


__all__ = ["HF_FORMAT", "HF_DESCRIPTION", "RECIPE_NAME", "export_hf", "check_hf_target", "hf_source", "write_folder",
           "verify_folder", "export_state"]
