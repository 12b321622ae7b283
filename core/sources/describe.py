"""Where a person's model and data come from, as plain descriptions (no model is built):
a factory, a torchvision / timm architecture by name, or a local Hugging Face folder;
and the data description of a file or folder by what it is."""
from __future__ import annotations

import json
from pathlib import Path

from core.errors import FOREIGN_ERRORS, PrunescopeError, first_line

HF_FACTORY = "core.sources.hf:hf_model"
DEFAULT_SEQ_LEN = 64


def resolve_source(factory, kwargs, torchvision, timm, hf=None, task=None, seq_len=None):
    """(factory, kwargs, default input shape or None) for a factory or a model by name."""
    given = [k for k, v in (("factory", factory), ("torchvision", torchvision), ("timm", timm), ("hf", hf)) if v]
    if len(given) != 1:
        raise PrunescopeError("give exactly one of factory (package.module:function), torchvision or timm (an "
                              f"architecture name), or hf (a local Hugging Face folder); got {', '.join(given) or 'none'}")
    kwargs = dict(kwargs or {})
    if factory:
        return factory, kwargs, None
    if hf:
        folder = Path(hf).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise PrunescopeError(f"{str(folder)!r} is not a Hugging Face model folder: accepted is a folder that "
                                  "save_pretrained wrote (config.json, model.safetensors, tokenizer files)")
        return HF_FACTORY, {"path": str(folder), **({"task": task} if task else {}), **kwargs}, \
            (int(seq_len or DEFAULT_SEQ_LEN),)
    if torchvision:
        try:
            import torchvision as tv
        except (ImportError, RuntimeError, AttributeError) as exc:  # missing, or built for another torch
            raise PrunescopeError(f"torchvision does not import here ({first_line(exc)}); install it with "
                                  "pip install 'prunescope[vision]'") from exc
        names = tv.models.list_models(module=tv.models)
        if torchvision not in names:
            raise PrunescopeError(f"torchvision has no classification model {torchvision!r}; e.g. "
                                  f"{', '.join(names[:8])} ({len(names)} in all)")
        side = 299 if torchvision == "inception_v3" else 224
        return "torchvision.models:get_model", {"name": torchvision, "weights": None, **kwargs}, (3, side, side)
    try:
        import timm as tm
    except (ImportError, RuntimeError, AttributeError) as exc:  # missing, or built for another torch
        raise PrunescopeError(f"timm does not import here ({first_line(exc)}); install it with "
                              "pip install 'prunescope[vision]'") from exc
    if not tm.list_models(timm):
        raise PrunescopeError(f"timm has no model {timm!r} (timm.list_models lists them)")
    shape = None
    try:
        cfg = tm.get_pretrained_cfg(timm)
        shape = tuple(int(v) for v in cfg.input_size) if cfg is not None else None
    except FOREIGN_ERRORS:  # timm's config lookup: the default shape is a convenience
        shape = None
    return "timm:create_model", {"model_name": timm, "pretrained": False, **kwargs}, shape or (3, 224, 224)


def hf_default_task(folder) -> str | None:
    """A Hugging Face folder's task by its config's architectures: a causal LM ->
    language-model; a sequence-classification head -> classification; an encoder without
    a head -> fidelity (its pooled embedding); unreadable -> None (the loader says why)."""
    try:
        archs = json.loads((Path(folder).expanduser() / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "language-model"
    if any(str(a).endswith("ForSequenceClassification") for a in archs):
        return "classification"
    return "fidelity"


def hf_vocab_size(folder) -> int:
    """The vocabulary size in a Hugging Face folder's config.json (read as data).

    Raises:
        PrunescopeError: no readable config with a whole-number vocab_size."""
    p = Path(folder) / "config.json"
    try:
        vocab = json.loads(p.read_text()).get("vocab_size")
    except (OSError, ValueError, AttributeError) as exc:
        raise PrunescopeError(f"{str(p)!r} could not be read ({first_line(exc)})") from exc
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise PrunescopeError(f"{str(p)!r} has no whole-number vocab_size (got {vocab!r}); random token ids need it")
    return vocab


def data_from_path(path: str, *, label_column: str | None = None, size: tuple[int, int] | None = None,
                   mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                   seq_len: int | None = None) -> dict:
    """The data description of a file or folder, by what it is: ``.npz`` / ``.safetensors``
    -> tensors; ``.csv`` -> csv (``label_column``); ``.txt`` -> text for a Hugging Face model
    (one example a line, ``label<TAB>text`` for classification; ``seq_len`` tokens); a folder
    or ``.zip`` -> images (``size``, ``mean``, ``std``; defaults from the model's input shape
    and ImageNet's statistics).

    Raises:
        PrunescopeError: a path of another kind (what is accepted is listed)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".npz", ".safetensors"):
        return {"kind": "tensors", "path": str(p)}
    if suffix == ".csv":
        return {"kind": "csv", "path": str(p), "label_column": label_column or None}
    if suffix == ".txt":
        return {"kind": "text", "path": str(p), "seq_len": int(seq_len or DEFAULT_SEQ_LEN)}
    if suffix == ".zip" or p.is_dir():
        d: dict = {"kind": "images", "path": str(p)}
        if size:
            if len(size) != 2:
                raise PrunescopeError(f"image size must be two numbers, height and width (e.g. 224,224), got {size}")
            d["size"] = [int(v) for v in size]
        if mean:
            d["mean"] = [float(v) for v in mean]
        if std:
            d["std"] = [float(v) for v in std]
        return d
    raise PrunescopeError(f"data {p.name!r}: accepted are an .npz or .safetensors file (x, y), a .csv table, a .txt "
                          "file (text, for a Hugging Face model), or a folder or .zip with one subfolder of images "
                          "per class")


__all__ = ["HF_FACTORY", "DEFAULT_SEQ_LEN", "resolve_source", "hf_default_task", "hf_vocab_size", "data_from_path"]
